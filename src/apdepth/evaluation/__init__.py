"""Evaluation: per-image scale/shift alignment, depth metrics, boundary F1 and ``evaluate()``."""

from __future__ import annotations

__all__ = ["evaluate", "align", "compute_metrics", "boundary_f1", "boundary_recall"]


def __getattr__(name):  # lazy: the CLI imports this package just to list sub-commands
    import importlib

    where = {
        "evaluate": "apdepth.evaluation.evaluate",
        "align": "apdepth.evaluation.alignment",
        "compute_metrics": "apdepth.evaluation.metrics",
        "boundary_f1": "apdepth.evaluation.boundary",
        "boundary_recall": "apdepth.evaluation.boundary",
    }
    if name in where:
        return getattr(importlib.import_module(where[name]), name)
    raise AttributeError(f"module 'apdepth.evaluation' has no attribute {name!r}")
