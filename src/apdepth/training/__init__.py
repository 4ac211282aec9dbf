"""Training: one trainer for every task (``apdepth``, ``vae``, ``prior``), configured by YAML.

``apdepth train --config FILE [key=value ...]`` is the entry point; see docs/training.md.
"""

from __future__ import annotations

__all__ = ["TrainConfig", "load_config", "Trainer", "train"]


def __getattr__(name):  # lazy: `apdepth --help` imports this package only to list sub-commands
    import importlib

    where = {
        "TrainConfig": "apdepth.training.config",
        "load_config": "apdepth.training.config",
        "Trainer": "apdepth.training.trainer",
        "train": "apdepth.training.trainer",
    }
    if name in where:
        return getattr(importlib.import_module(where[name]), name)
    raise AttributeError(f"module 'apdepth.training' has no attribute {name!r}")
