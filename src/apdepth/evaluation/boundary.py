"""Scale-invariant boundary accuracy (the boundary metrics introduced with Depth Pro, 2024).

An *occlusion edge* sits between two 4-neighbours whose inverse depths differ by a ratio above a
threshold ``t``: the nearer pixel is the foreground. Edges are kept per direction (foreground on
the left, top, right or bottom of the pair), so a prediction must also get the occlusion order
right. For each ``t`` in ``linspace(1.05, 1.25, 10)`` precision and recall of the predicted edges
against the GT edges are averaged over the four directions and combined into F1; the final score
is the average of these F1 values weighted by ``t`` (larger, more salient jumps count more).
Ratios make the score invariant to the scale of the depth, not to its shift, so evaluate it on
the aligned prediction.

:func:`boundary_recall` is the variant for ground truth given as a binary (or matting) mask of the
foreground object: predicted edges are thinned to one pixel per run along each scan direction
(non-maximum suppression) and only recall against the mask's edges is measured.

``valid`` (our extension for GT with holes): a neighbour pair counts only if both of its pixels
are valid; with everything valid the scores equal the original definition. Like the original,
an image whose GT has no edge in a direction contributes 0 recall for it.
"""

from __future__ import annotations

import numpy as np

T_MIN, T_MAX, N_THRESHOLDS = 1.05, 1.25, 10


def thresholds_and_weights(t_min: float = T_MIN, t_max: float = T_MAX, n: int = N_THRESHOLDS):
    """The ratio thresholds and their weights (proportional to the threshold, summing to 1)."""
    if n < 1 or not 1.0 < t_min <= t_max:
        raise ValueError(f"need n >= 1 and 1 < t_min <= t_max, got n={n}, t_min={t_min}, t_max={t_max}")
    ts = np.linspace(t_min, t_max, n)
    return ts, ts / ts.sum()


def _inverse(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"expected a (H, W) depth map, got shape {depth.shape}")
    return 1.0 / np.maximum(np.nan_to_num(depth, nan=0.0, posinf=0.0), 1e-6)


def _pair_valid(valid: np.ndarray | None, shape):
    if valid is None:
        return None
    v = np.asarray(valid, dtype=bool)
    if v.shape != shape:
        raise ValueError(f"valid mask {v.shape} does not match depth {shape}")
    horiz = v[:, 1:] & v[:, :-1]
    vert = v[1:, :] & v[:-1, :]
    return horiz, vert, horiz, vert  # same order as _ratios: left, top, right, bottom


def _ratios(inv: np.ndarray):
    """Ratio maps in the order (foreground left, top, right, bottom)."""
    return (
        inv[:, :-1] / inv[:, 1:],
        inv[:-1, :] / inv[1:, :],
        inv[:, 1:] / inv[:, :-1],
        inv[1:, :] / inv[:-1, :],
    )


def occlusion_edges(depth: np.ndarray, t: float, valid: np.ndarray | None = None):
    """Four boolean edge maps (fg left, top, right, bottom) of a depth map (metres or affine)."""
    inv = _inverse(depth)
    edges = [r > t for r in _ratios(inv)]
    pv = _pair_valid(valid, inv.shape)
    if pv is not None:
        edges = [e & m for e, m in zip(edges, pv)]
    return edges


def _f1_at(pred_edges, gt_edges) -> float:
    recall = np.mean([np.count_nonzero(p & g) / max(np.count_nonzero(g), 1) for p, g in zip(pred_edges, gt_edges)])
    precision = np.mean([np.count_nonzero(p & g) / max(np.count_nonzero(p), 1) for p, g in zip(pred_edges, gt_edges)])
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def boundary_f1(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    t_min: float = T_MIN,
    t_max: float = T_MAX,
    n: int = N_THRESHOLDS,
) -> float:
    """Scale-invariant boundary F1 in [0, 1] between predicted and GT depth maps (both (H, W), > 0)."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must have the same shape")
    ts, ws = thresholds_and_weights(t_min, t_max, n)
    inv_p, inv_g = _inverse(pred), _inverse(gt)
    rp, rg = _ratios(inv_p), _ratios(inv_g)
    pv = _pair_valid(valid, inv_p.shape)
    scores = []
    for t in ts:
        pe = [r > t for r in rp]
        ge = [r > t for r in rg]
        if pv is not None:
            pe = [e & m for e, m in zip(pe, pv)]
            ge = [e & m for e, m in zip(ge, pv)]
        scores.append(_f1_at(pe, ge))
    return float(np.sum(np.asarray(scores) * ws))


def _thin_rows(ratio: np.ndarray, t: float) -> np.ndarray:
    """Keep, in every horizontal run of ``ratio > t``, only the first position of the maximum."""
    above = ratio > t
    keep = np.zeros_like(above)
    if not above.any():
        return keep
    start = above.copy()
    start[:, 1:] &= ~above[:, :-1]
    run_id = np.cumsum(start.ravel()).reshape(above.shape)
    rows, cols = np.nonzero(above)
    ids = run_id[rows, cols]
    vals = ratio[rows, cols]
    order = np.lexsort((-vals, ids))  # by run, then largest value first (stable for ties)
    first = np.ones(order.size, dtype=bool)
    first[1:] = ids[order][1:] != ids[order][:-1]
    chosen = order[first]
    keep[rows[chosen], cols[chosen]] = True
    return keep


def thinned_occlusion_edges(depth: np.ndarray, t: float):
    """Occlusion edges thinned along their scan direction (rows for left/right, columns for top/bottom)."""
    left, top, right, bottom = _ratios(_inverse(depth))
    return (
        _thin_rows(left, t),
        _thin_rows(top.T, t).T,
        _thin_rows(right, t),
        _thin_rows(bottom.T, t).T,
    )


def mask_edges(mask: np.ndarray):
    """Edges of a binary foreground mask, in the order (fg left, top, right, bottom)."""
    m = np.asarray(mask, dtype=bool)
    return (
        m[:, :-1] & ~m[:, 1:],
        m[:-1, :] & ~m[1:, :],
        m[:, 1:] & ~m[:, :-1],
        m[1:, :] & ~m[:-1, :],
    )


def boundary_recall(
    pred: np.ndarray,
    gt_mask: np.ndarray,
    *,
    t_min: float = T_MIN,
    t_max: float = T_MAX,
    n: int = N_THRESHOLDS,
    mask_threshold: float = 0.1,
) -> float:
    """Scale-invariant boundary recall in [0, 1] of a depth map against a foreground mask.

    ``gt_mask`` is boolean or a matte in [0, 1] (binarised at ``mask_threshold``).
    """
    pred = np.asarray(pred)
    gt_mask = np.asarray(gt_mask)
    if pred.shape != gt_mask.shape:
        raise ValueError(f"prediction {pred.shape} and mask {gt_mask.shape} must have the same shape")
    binary = gt_mask if gt_mask.dtype == bool else gt_mask > mask_threshold
    ge = mask_edges(binary)
    ts, ws = thresholds_and_weights(t_min, t_max, n)
    scores = []
    for t in ts:
        pe = thinned_occlusion_edges(pred, float(t))
        scores.append(np.mean([np.count_nonzero(p & g) / max(np.count_nonzero(g), 1) for p, g in zip(pe, ge)]))
    return float(np.sum(np.asarray(scores) * ws))
