"""Per-image least-squares scale and shift between an affine-invariant prediction and metric GT.

``depth`` alignment (the default, Marigold's ``least_square``): find ``s, b`` minimising
``sum_valid (s * pred + b - gt)^2`` and return ``s * pred + b``.

``disparity`` alignment (Marigold's ``least_square_disparity``): the same fit against the GT
*disparity* ``1 / gt`` over pixels where both GT and prediction are positive; the fitted
disparity is floored at 1e-3 and inverted back to depth. Because the fit is affine, it does not
matter whether the prediction is depth-like or disparity-like in polarity (a negative scale
absorbs the sign), but the protocol only suits predictors that are affine in disparity.

In both cases the result is clipped to the dataset's valid range and to at least 1e-6 m, so that
log and ratio metrics stay finite. With ``max_resolution`` the fit runs on a nearest-neighbour
downsampled copy whose longer side is at most that many pixels (ETH3D: 1024), while the returned
map keeps full resolution.
"""

from __future__ import annotations

import numpy as np

ALIGNMENTS = ("depth", "disparity")
DISPARITY_FLOOR = 1e-3
DEPTH_FLOOR = 1e-6


def _downsample(arrays: list[np.ndarray], max_resolution: int | None) -> list[np.ndarray]:
    if max_resolution is None:
        return arrays
    h, w = arrays[0].shape
    factor = min(max_resolution / h, max_resolution / w)
    if factor >= 1:
        return arrays
    import torch
    import torch.nn.functional as F

    out = []
    for a in arrays:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64 if a.dtype != bool else np.float32))[None, None]
        r = F.interpolate(t, scale_factor=factor, mode="nearest")[0, 0].numpy()
        out.append(r > 0.5 if a.dtype == bool else r)
    return out


def fit_scale_shift(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, max_resolution: int | None = None
) -> tuple[float, float]:
    """Least-squares ``(scale, shift)`` with ``scale * pred + shift ≈ target`` over ``mask``."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if not pred.shape == target.shape == mask.shape or pred.ndim != 2:
        raise ValueError(
            f"prediction {pred.shape}, target {target.shape} and mask {mask.shape} must be equal (H, W) shapes"
        )
    p, t, m = _downsample([pred, target, mask], max_resolution)
    x, y = p[m], t[m]
    if x.size < 2:
        raise ValueError(f"need at least 2 valid pixels to fit scale and shift, got {x.size}")
    design = np.stack([x, np.ones_like(x)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(scale), float(shift)


def align(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    *,
    alignment: str = "depth",
    min_depth: float = 0.0,
    max_depth: float = float("inf"),
    max_resolution: int | None = None,
) -> tuple[np.ndarray, float, float]:
    """Align ``pred`` (affine-invariant, (H, W)) to ``gt`` (metres) over ``valid``.

    Returns ``(aligned depth in metres, float64 (H, W), scale, shift)``; scale and shift are in the
    space of the fit (depth or disparity). The aligned depth is clipped to
    ``[max(min_depth, 1e-6), max_depth]``.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if alignment == "depth":
        scale, shift = fit_scale_shift(pred, gt, valid, max_resolution)
        aligned = pred * scale + shift
    else:
        gt_pos = gt > 0
        gt_disp = np.zeros_like(gt)
        gt_disp[gt_pos] = 1.0 / gt[gt_pos]
        scale, shift = fit_scale_shift(pred, gt_disp, valid & gt_pos & (pred > 0), max_resolution)
        disp = np.maximum(pred * scale + shift, DISPARITY_FLOOR)
        aligned = 1.0 / disp
    aligned = np.clip(aligned, min_depth, max_depth)
    aligned = np.maximum(aligned, DEPTH_FLOOR)
    return aligned, scale, shift
