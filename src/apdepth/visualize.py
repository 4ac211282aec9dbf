"""The one visualiser: depth -> colour image, used by the CLI, the demo and the docs figures."""

from __future__ import annotations

import numpy as np


def colorize_depth(
    depth: np.ndarray,
    cmap: str = "Spectral",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    valid: np.ndarray | None = None,
    invalid_color: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Map a depth map to an RGB uint8 image of shape (H, W, 3).

    ``depth`` is (H, W) float; by default it is taken as affine-invariant depth in [0, 1]
    (0 = near), the pipeline's output. Pass ``vmin=None``/``vmax=None`` to stretch to the
    2%/98% quantiles of the valid values instead (useful for metric depth). Pixels where
    ``valid`` is False are painted ``invalid_color``.
    """
    import matplotlib

    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"colorize_depth expects a (H, W) array, got shape {depth.shape}")
    mask = np.isfinite(depth) if valid is None else (np.asarray(valid, bool) & np.isfinite(depth))
    if vmin is None or vmax is None:
        vals = depth[mask]
        lo, hi = np.quantile(vals, [0.02, 0.98]) if vals.size else (0.0, 1.0)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    scale = max(float(vmax) - float(vmin), 1e-12)
    norm = np.clip((np.nan_to_num(depth) - float(vmin)) / scale, 0.0, 1.0)
    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError as err:
        raise ValueError(f"unknown colour map {cmap!r}; any matplotlib colour map name works") from err
    rgb = (cm(norm)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    rgb[~mask] = np.asarray(invalid_color, dtype=np.uint8)
    return rgb
