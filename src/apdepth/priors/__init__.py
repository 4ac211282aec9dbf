"""Prior families: how the pipeline loads, builds, feeds and reads one kind of depth prior.

The prior's class is recorded with the weights (``model_index.json``'s ``"prior"`` entry and the prior folder's
``config.json`` ``"architectures"``), and that class name picks the :class:`PriorAdapter`. Adding a second prior
family is one new module here: a subclass that sets ``class_name`` and implements the methods, registered with
:func:`register_prior_adapter` (and imported here).
"""

from __future__ import annotations

from apdepth.priors import depth_anything  # noqa: F401  (registers the built-in family)
from apdepth.priors.base import (
    DEFAULT_PRIOR_CLASS,
    PriorAdapter,
    adapter_for,
    get_prior_adapter,
    recorded_class,
    register_prior_adapter,
)

__all__ = [
    "DEFAULT_PRIOR_CLASS",
    "PriorAdapter",
    "adapter_for",
    "get_prior_adapter",
    "recorded_class",
    "register_prior_adapter",
]
