"""NYU Depth v2, the 654-image Eigen test split (as distributed in ``nyuv2/nyu_labeled_extracted.tar``).

Layout: ``test/<scene>/rgb_XXXX.png``, ``depth_XXXX.png`` (16-bit, millimetres) and
``filled_XXXX.png`` (inpainted depth, not used for evaluation). Valid depth 1e-3..10 m; the
evaluation region is the Eigen crop, rows 45:471 and columns 41:601 of the 480 x 640 image.
"""

from __future__ import annotations

import posixpath

import numpy as np

from apdepth.data.base import DepthDataset, SampleSpec, decode_png16, prefer_subfolder

EIGEN_CROP = (45, 471, 41, 601)  # top, bottom, left, right (exclusive ends)


class NYUDataset(DepthDataset):
    """NYUv2 test: RGB PNG + 16-bit depth PNG in mm; valid (1e-3, 10) m inside the Eigen crop."""

    name = "nyu"
    min_depth = 1e-3
    max_depth = 10.0
    processing_resolution = 0
    boundary_metrics = False
    archive_name = "nyuv2/nyu_labeled_extracted.tar"
    split_names = ("nyu/labeled/filename_list_test.txt", "nyu_depth/labeled/filename_list_test.txt")

    def enumerate(self) -> list[SampleSpec]:
        rgbs = [p for p in self.archive.list() if posixpath.basename(p).startswith("rgb_") and p.endswith(".png")]

        def depth_of(rel):
            folder, base = posixpath.split(rel)
            return posixpath.join(folder, "depth_" + base[len("rgb_") :])

        return self.pair_members(depth_of, prefer_subfolder(rgbs, "test"))

    def decode_depth(self, data, spec, rgb_shape):
        return decode_png16(data, spec.depth) / 1000.0

    def eval_mask(self, height, width):
        top, bottom, left, right = EIGEN_CROP
        mask = np.zeros((height, width), dtype=bool)
        mask[top:bottom, left:right] = True
        return mask
