"""Depth metrics of the standard (Eigen / Marigold) protocol, computed per image over valid pixels.

All take ``pred`` and ``gt`` in metres (positive on valid pixels) and a boolean ``valid``
of the same (H, W) shape; the dataset score is the mean of the per-image values.

- ``abs_rel``  mean |p - g| / g
- ``sq_rel``   mean (p - g)^2 / g
- ``rmse``     sqrt(mean (p - g)^2)                  (metres)
- ``rmse_log`` sqrt(mean (ln p - ln g)^2)
- ``log10``    mean |log10 p - log10 g|
- ``delta{k}`` fraction with max(p/g, g/p) < 1.25^k, k = 1, 2, 3
- ``i_rmse``   sqrt(mean (1/p - 1/g)^2)              (1 / metres)
- ``silog``    100 * sqrt(mean d^2 - (mean d)^2), d = ln p - ln g
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3", "i_rmse", "silog")


def _valid_values(pred, gt, valid):
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if not pred.shape == gt.shape == valid.shape:
        raise ValueError(f"pred {pred.shape}, gt {gt.shape} and valid {valid.shape} must have the same shape")
    p, g = pred[valid], gt[valid]
    if p.size == 0:
        raise ValueError("no valid pixels to evaluate")
    if (p <= 0).any() or (g <= 0).any():
        raise ValueError("depth metrics need positive prediction and ground truth on valid pixels")
    return p, g


def abs_rel(pred, gt, valid):
    """Mean absolute relative error ``|p - g| / g`` over valid pixels (depths > 0)."""
    p, g = _valid_values(pred, gt, valid)
    return float(np.mean(np.abs(p - g) / g))


def sq_rel(pred, gt, valid):
    """Mean squared relative error ``(p - g)^2 / g`` over valid pixels."""
    p, g = _valid_values(pred, gt, valid)
    return float(np.mean((p - g) ** 2 / g))


def rmse(pred, gt, valid):
    """Root mean squared error, in the unit of the depths."""
    p, g = _valid_values(pred, gt, valid)
    return float(math.sqrt(np.mean((p - g) ** 2)))


def rmse_log(pred, gt, valid):
    """Root mean squared error of the natural logarithms."""
    p, g = _valid_values(pred, gt, valid)
    return float(math.sqrt(np.mean((np.log(p) - np.log(g)) ** 2)))


def log10(pred, gt, valid):
    """Mean absolute error of the base-10 logarithms."""
    p, g = _valid_values(pred, gt, valid)
    return float(np.mean(np.abs(np.log10(p) - np.log10(g))))


def delta(pred, gt, valid, k: int = 1):
    """Fraction of valid pixels with ``max(p/g, g/p) < 1.25**k`` (delta1 for k=1), in [0, 1]."""
    p, g = _valid_values(pred, gt, valid)
    ratio = np.maximum(p / g, g / p)
    return float(np.mean(ratio < 1.25**k))


def i_rmse(pred, gt, valid):
    """Root mean squared error of inverse depth (1/unit)."""
    p, g = _valid_values(pred, gt, valid)
    return float(math.sqrt(np.mean((1.0 / p - 1.0 / g) ** 2)))


def silog(pred, gt, valid):
    """Scale-invariant log error x100: the standard deviation of ``log p - log g``."""
    p, g = _valid_values(pred, gt, valid)
    d = np.log(p) - np.log(g)
    # rounding can make the variance a hair negative for a perfect prediction
    return float(100.0 * math.sqrt(max(np.mean(d**2) - np.mean(d) ** 2, 0.0)))


def compute_metrics(pred, gt, valid) -> dict[str, float]:
    """All metrics of :data:`METRIC_NAMES` for one image."""
    p, g = _valid_values(pred, gt, valid)
    diff = p - g
    ratio = np.maximum(p / g, g / p)
    dlog = np.log(p) - np.log(g)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(math.sqrt(np.mean(diff**2))),
        "rmse_log": float(math.sqrt(np.mean(dlog**2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "i_rmse": float(math.sqrt(np.mean((1.0 / p - 1.0 / g) ** 2))),
        "silog": float(100.0 * math.sqrt(max(np.mean(dlog**2) - np.mean(dlog) ** 2, 0.0))),
    }
