"""Virtual KITTI 2: RGB JPG + 16-bit depth PNG in centimetres, cropped like KITTI to 352 x 1216.

Split line: ``Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg Scene01/clone/frames/depth/Camera_0/depth_00000.png``.
Sky is stored as 65535 cm (655 m) and so falls outside the valid range (1e-5, 80) m.
"""

from __future__ import annotations

import re

from apdepth.data.base import DepthDataset, decode_png16, kitti_benchmark_crop

_RGB_RE = re.compile(r"^(?P<head>.*)/frames/rgb/(?P<cam>Camera_\d+)/rgb_(?P<frame>\d+)\.jpg$")


class VKITTIDataset(DepthDataset):
    """Virtual KITTI 2: depth = value / 100 m; valid (1e-5, 80) m; KITTI benchmark crop."""

    name = "vkitti"
    min_depth = 1e-5
    max_depth = 80.0
    processing_resolution = 0
    boundary_metrics = True

    def enumerate(self):
        def depth_of(rel):
            m = _RGB_RE.match(rel)
            return m and f"{m['head']}/frames/depth/{m['cam']}/depth_{m['frame']}.png"

        return self.pair_members(depth_of)

    def decode_depth(self, data, spec, rgb_shape):
        return decode_png16(data, spec.depth) / 100.0

    def crop(self, arr):
        return kitti_benchmark_crop(arr)

    def prepare_prediction(self, pred):
        if pred.shape[-2:] != (352, 1216) and pred.shape[-2] >= 352 and pred.shape[-1] >= 1216:
            return kitti_benchmark_crop(pred)
        return pred
