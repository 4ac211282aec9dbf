"""ApDepth: single-step, prior-conditioned diffusion monocular depth estimation."""

import os as _os

__version__ = "0.1.0"

# torch's Inductor writes its chosen cache folder back into this variable the first time it looks it up,
# so what the user set has to be read before torch runs (see ApDepthPipeline.enable_compile).
_USER_INDUCTOR_CACHE = _os.environ.get("TORCHINDUCTOR_CACHE_DIR")

_LAZY = {
    "ApDepthPipeline": "apdepth.pipeline",
    "ApDepthOutput": "apdepth.pipeline",
    "EmptyTextEmbedding": "apdepth.models.text_embedding",
    "colorize_depth": "apdepth.visualize",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):  # lazy so that `import apdepth` stays cheap (no torch import)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'apdepth' has no attribute {name!r}")
