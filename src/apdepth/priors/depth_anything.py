"""Depth Anything (V1/V2, transformers' ``DepthAnythingForDepthEstimation``): the built-in prior family."""

from __future__ import annotations

import torch

from apdepth.priors.base import PriorAdapter, register_prior_adapter


class DepthAnythingAdapter(PriorAdapter):
    """DINOv2 backbone (14-pixel patches) with a DPT head; input per :func:`apdepth.prior.prepare_prior_input`."""

    class_name = "DepthAnythingForDepthEstimation"

    def model_class(self):
        """``transformers.DepthAnythingForDepthEstimation``."""
        from transformers import DepthAnythingForDepthEstimation

        return DepthAnythingForDepthEstimation

    def build(self, cfg: dict) -> torch.nn.Module:
        """DepthAnythingConfig kwargs with a ``backbone`` dict of Dinov2Config kwargs -> a random model."""
        from transformers import DepthAnythingConfig, Dinov2Config

        cfg = dict(cfg)
        backbone = Dinov2Config(**cfg.pop("backbone"))
        return self.model_class()(DepthAnythingConfig(backbone_config=backbone, **cfg))

    def prepare_input(self, rgb, normalization, input_size, mean, std):
        """Resized to multiples of 14 (bounded by both sides) and normalised (see :mod:`apdepth.prior`)."""
        from apdepth.prior import prepare_prior_input

        return prepare_prior_input(rgb, normalization, input_size, tuple(mean), tuple(std))

    def run(self, model, pixel_values):
        """``predicted_depth`` of the model (relative disparity), (B,H',W')."""
        from apdepth.prior import run_prior

        return run_prior(model, pixel_values)


register_prior_adapter(DepthAnythingAdapter())
