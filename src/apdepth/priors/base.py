"""The prior adapter interface and its registry (see :mod:`apdepth.priors`)."""

from __future__ import annotations

import abc
import json
from pathlib import Path

import torch


class PriorAdapter(abc.ABC):
    """One family of relative-depth priors, as the pipeline and the training tasks use it.

    The model is a ``torch.nn.Module`` with ``dtype`` and ``device`` attributes (as transformers and diffusers models have), so
    the pipeline can move, cast, save and offload it like its other components.
    """

    #: The model class name recorded with the weights (e.g. ``"DepthAnythingForDepthEstimation"``).
    class_name: str = ""

    @abc.abstractmethod
    def model_class(self):
        """The model class (with ``from_pretrained``/``save_pretrained``) for this family."""

    @abc.abstractmethod
    def build(self, cfg: dict) -> torch.nn.Module:
        """A randomly initialised model from a preset's ``prior`` kwargs."""

    @abc.abstractmethod
    def prepare_input(self, rgb: torch.Tensor, normalization: str, input_size: int, mean, std) -> torch.Tensor:
        """rgb (B,3,H,W) in [0,1] at processing size -> the model's input under ``normalization``."""

    @abc.abstractmethod
    def run(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model's relative disparity (B,H',W'), larger = nearer, at its input resolution."""


_ADAPTERS: dict[str, PriorAdapter] = {}


def register_prior_adapter(adapter: PriorAdapter) -> PriorAdapter:
    """Make ``adapter`` the one used for weights recorded as ``adapter.class_name``; returns it."""
    if not adapter.class_name:
        raise ValueError(f"{type(adapter).__name__} has no class_name")
    _ADAPTERS[adapter.class_name] = adapter
    return adapter


def get_prior_adapter(class_name: str) -> PriorAdapter:
    """The adapter for prior class ``class_name``; ValueError naming the known classes otherwise."""
    try:
        return _ADAPTERS[class_name]
    except KeyError:
        raise ValueError(
            f"no prior adapter for {class_name!r}; known prior classes: {', '.join(sorted(_ADAPTERS))}"
        ) from None


def adapter_for(model: torch.nn.Module) -> PriorAdapter:
    """The adapter for a loaded prior module (by its class name)."""
    return get_prior_adapter(type(model).__name__)


def recorded_class(folder: str | Path) -> str | None:
    """The class recorded in a prior folder's ``config.json`` (``architectures[0]``), or None if there is none."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    archs = json.loads(config.read_text()).get("architectures") or []
    return archs[0] if archs else None


DEFAULT_PRIOR_CLASS = "DepthAnythingForDepthEstimation"
