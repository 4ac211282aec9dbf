"""DIODE validation, indoor and outdoor (``diode/diode_val.tar``).

Split line: ``<x>.png <x>_depth.npy <x>_depth_mask.npy``. Depth is a float32 ``.npy`` of shape
(H, W, 1) or (H, W) in metres; the mask ``.npy`` marks the pixels DIODE's scanner measured.
Valid = mask & depth in (0.6, 350) m; processed at 640 px.
"""

from __future__ import annotations

import numpy as np

from apdepth.data.archive import normalize_relpath
from apdepth.data.base import DepthDataset, SampleSpec, decode_npy


class DIODEDataset(DepthDataset):
    """DIODE val: .npy depth + .npy mask; valid (0.6, 350) m & DIODE's mask."""

    name = "diode"
    min_depth = 0.6
    max_depth = 350.0
    processing_resolution = 640
    boundary_metrics = False
    archive_name = "diode/diode_val.tar"
    split_names = ("diode/diode_val_all_filename_list.txt", "diode_depth/diode_val_all_filename_list.txt")

    def parse_row(self, row):
        spec = super().parse_row(row)
        if spec is None:
            return None
        if len(row) >= 3:
            mask = normalize_relpath(row[2])
        else:
            mask = spec.depth[: -len(".npy")] + "_mask.npy"
        return SampleSpec(rgb=spec.rgb, depth=spec.depth, mask=mask)

    def enumerate(self):
        specs = []
        for rel in self.archive.list():
            if not rel.endswith(".png"):
                continue
            stem = rel[: -len(".png")]
            depth, mask = stem + "_depth.npy", stem + "_depth_mask.npy"
            if self.archive.exists(depth) and self.archive.exists(mask):
                specs.append(SampleSpec(rgb=rel, depth=depth, mask=mask))
        return specs

    def decode_depth(self, data, spec, rgb_shape):
        arr = decode_npy(data, spec.depth).astype(np.float32)
        return arr.reshape(arr.shape[0], arr.shape[1]) if arr.ndim == 3 and arr.shape[-1] == 1 else arr

    def dataset_mask(self, spec, depth):
        mask = decode_npy(self.archive.open(spec.mask), spec.mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != depth.shape:
            raise ValueError(f"diode: mask {spec.mask} has shape {mask.shape}, depth has {depth.shape}")
        return mask > 0
