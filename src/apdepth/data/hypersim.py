"""Hypersim, as preprocessed for training (480 x 640 RGB PNG + 16-bit planar depth PNG in mm).

Split line: ``ai_001_001/rgb_cam_00_fr0000.png ai_001_001/depth_plane_cam_00_fr0000.png`` relative to
the split folder (train/val/test). Valid depth (1e-5, 65) m. The GT is dense and rendered, so
boundary F1 is reported when evaluating on it.
"""

from __future__ import annotations

import posixpath

from apdepth.data.base import DepthDataset, decode_png16


class HypersimDataset(DepthDataset):
    """Hypersim (preprocessed): depth = value / 1000 m; valid (1e-5, 65) m."""

    name = "hypersim"
    min_depth = 1e-5
    max_depth = 65.0
    processing_resolution = 0
    boundary_metrics = True

    def enumerate(self):
        def depth_of(rel):
            folder, base = posixpath.split(rel)
            if base.startswith("rgb_") and base.endswith(".png"):
                return posixpath.join(folder, "depth_plane_" + base[len("rgb_") :])
            return None

        return self.pair_members(depth_of)

    def decode_depth(self, data, spec, rgb_shape):
        return decode_png16(data, spec.depth) / 1000.0
