"""ScanNet validation, Marigold's 800 sampled frames (``scannet/scannet_val_sampled_800_1.tar``).

Split line: ``<scene>/color/<n>.jpg <scene>/depth/<n>.png``; depth is a 16-bit PNG in
millimetres. Valid depth (1e-3, 10) m; no crop.
"""

from __future__ import annotations

import re

from apdepth.data.base import DepthDataset, decode_png16

_RGB_RE = re.compile(r"^(?P<scene>.+)/color/(?P<stem>[^/]+)\.jpg$")


class ScanNetDataset(DepthDataset):
    """ScanNet val: JPG + 16-bit depth PNG in mm; valid (1e-3, 10) m."""

    name = "scannet"
    min_depth = 1e-3
    max_depth = 10.0
    processing_resolution = 0
    boundary_metrics = False
    archive_name = "scannet/scannet_val_sampled_800_1.tar"
    split_names = ("scannet/scannet_val_sampled_list_800_1.txt", "scannet_depth/scannet_val_sampled_list_800_1.txt")

    def enumerate(self):
        def depth_of(rel):
            m = _RGB_RE.match(rel)
            return m and f"{m['scene']}/depth/{m['stem']}.png"

        return self.pair_members(depth_of)

    def decode_depth(self, data, spec, rgb_shape):
        return decode_png16(data, spec.depth) / 1000.0
