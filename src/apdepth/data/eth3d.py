"""ETH3D high-resolution multi-view benchmark, DSLR images with laser-scan depth (``eth3d/eth3d.tar``).

Split line: ``rgb/<scene>/images/dslr_images/<name>.JPG depth/<scene>_dslr_depth/<scene>/ground_truth_depth/dslr_images/<name>.JPG``.
The depth "JPG" is not an image: it is raw little-endian float32, 4032 rows x 6048 columns, with
``inf`` where the scan has no data. Valid depth (1e-5, inf) m; processed at 756 px, and scale/shift
are fitted on a copy no larger than 1024 px (the images have 24 megapixels).
"""

from __future__ import annotations

import re

import numpy as np

from apdepth.data.base import DepthDataset

ETH3D_HEIGHT = 4032
ETH3D_WIDTH = 6048

_RGB_RE = re.compile(r"^rgb/(?P<scene>[^/]+)/images/dslr_images/(?P<name>[^/]+)$")


class ETH3DDataset(DepthDataset):
    """ETH3D: raw float32 depth (inf = no data); valid (1e-5, inf) m; no crop."""

    name = "eth3d"
    min_depth = 1e-5
    max_depth = float("inf")
    processing_resolution = 756
    alignment_max_res = 1024
    boundary_metrics = False
    archive_name = "eth3d/eth3d.tar"
    split_names = ("eth3d/eth3d_filename_list.txt", "eth3d_depth/eth3d_filename_list.txt")

    def enumerate(self):
        def depth_of(rel):
            m = _RGB_RE.match(rel)
            return m and f"depth/{m['scene']}_dslr_depth/{m['scene']}/ground_truth_depth/dslr_images/{m['name']}"

        return self.pair_members(depth_of)

    def decode_depth(self, data, spec, rgb_shape):
        arr = np.frombuffer(data, dtype="<f4")
        # the files carry no header; the RGB's size is authoritative, the DSLR size the fallback
        for h, w in (tuple(rgb_shape), (ETH3D_HEIGHT, ETH3D_WIDTH)):
            if arr.size == h * w:
                depth = arr.reshape(h, w).astype(np.float32)
                return np.where(np.isinf(depth), 0.0, depth).astype(np.float32)
        raise ValueError(
            f"eth3d: {spec.depth} holds {arr.size} float32 values, expected {rgb_shape[0]}x{rgb_shape[1]} "
            f"or {ETH3D_HEIGHT}x{ETH3D_WIDTH}"
        )
