"""KITTI, Eigen test split with projected-LiDAR ground truth (``kitti/kitti_eigen_split_test.tar``).

A split line is ``<rgb path> <depth path or None> <focal length>``; lines without ground truth
(``None``) are skipped. Depth is a 16-bit PNG holding metres x 256, with 0 where no LiDAR point
landed. RGB and depth are cropped to the KITTI benchmark size 352 x 1216 (bottom rows, centred
columns) and evaluation is further restricted to the Eigen crop region (or Garg's, selectable).
"""

from __future__ import annotations

import re

import numpy as np

from apdepth.data.archive import normalize_relpath
from apdepth.data.base import DepthDataset, SampleSpec, decode_png16, kitti_benchmark_crop

# Fractions of the (cropped) image height/width bounding the evaluation region.
EVAL_CROPS = {
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
}

_RGB_RE = re.compile(r"^(?:[^/]+/)?(?P<drive>[^/]+_sync)/(?P<cam>image_0[23])/data/(?P<frame>[^/]+\.png)$")


class KITTIDataset(DepthDataset):
    """KITTI Eigen test: depth = value / 256 m, 0 = no LiDAR; valid (1e-5, 80) m in the Eigen crop."""

    name = "kitti"
    min_depth = 1e-5
    max_depth = 80.0
    processing_resolution = 0
    boundary_metrics = False  # sparse LiDAR cannot delimit object edges
    archive_name = "kitti/kitti_eigen_split_test.tar"
    split_names = ("kitti/eigen_test_files_with_gt.txt", "kitti_depth/eigen_test_files_with_gt.txt")

    def __init__(
        self, data_dir, split_file=None, transform=None, eval_crop: str | None = "eigen", benchmark_crop: bool = True
    ):
        if eval_crop is not None and eval_crop not in EVAL_CROPS:
            raise ValueError(f"eval_crop must be one of {sorted(EVAL_CROPS)} or None, got {eval_crop!r}")
        self.eval_crop = eval_crop
        self.benchmark_crop = benchmark_crop
        super().__init__(data_dir, split_file, transform)

    def parse_row(self, row):
        spec = super().parse_row(row)
        if spec is None:
            return None
        focal = None
        if len(row) >= 3:
            try:
                focal = float(row[2])
            except ValueError as err:
                raise ValueError(f"kitti: bad focal length in split line {' '.join(row)!r}") from err
        return SampleSpec(rgb=spec.rgb, depth=spec.depth, focal=focal)

    def enumerate(self):
        def depth_of(rel):
            m = _RGB_RE.match(rel)
            return m and normalize_relpath(f"{m['drive']}/proj_depth/groundtruth/{m['cam']}/{m['frame']}")

        return self.pair_members(depth_of)

    def decode_depth(self, data, spec, rgb_shape):
        return decode_png16(data, spec.depth) / 256.0

    def crop(self, arr):
        return kitti_benchmark_crop(arr) if self.benchmark_crop else arr

    def prepare_prediction(self, pred):
        if self.benchmark_crop and pred.shape[-2:] != (352, 1216) and pred.shape[-2] >= 352 and pred.shape[-1] >= 1216:
            return kitti_benchmark_crop(pred)
        return pred

    def eval_mask(self, height, width):
        if self.eval_crop is None:
            return None
        t, b, l, r = EVAL_CROPS[self.eval_crop]
        mask = np.zeros((height, width), dtype=bool)
        mask[int(t * height) : int(b * height), int(l * width) : int(r * width)] = True
        return mask
