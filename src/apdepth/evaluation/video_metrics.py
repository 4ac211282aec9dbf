"""Video depth metrics with exact ground truth: accuracy after one alignment, temporal alignment error, flicker.

All take a predicted clip ``pred`` (T, H, W) of affine-invariant depth and the ground truth of a synthetic
sequence (``apdepth synth --video``): ``gt`` (T, H, W) planar z-depth in metres (0 = invalid), ``valid``
(T, H, W), intrinsics ``K`` (3, 3) and camera-to-world ``poses`` (T, 4, 4).

* :func:`align_sequence` fits ONE least-squares scale and shift for the whole sequence (``per_frame=True``:
  one per frame, the image protocol) in depth space and clips to the sequence's GT range ``[min, max]``
  (as the image protocol clips to a dataset's valid range).
* **AbsRel / δ1** of the aligned clip: per frame over valid pixels, averaged over frames.
* **Temporal alignment error (TAE)**: each frame's aligned depth is carried into the next frame with the
  true poses (unproject, move rigidly; the pixel it lands on is the true correspondence) and compared with
  the next frame's aligned depth there:
  ``|z_carried - d_next| / gt_next``, over pixels that land inside the next frame on a surface the next
  frame's ground truth confirms visible (carried GT agrees with GT within 2%, so occluded pixels are
  left out); the mean over pixels of each frame pair, averaged over pairs. Ground truth itself scores
  ~0.002 (nearest-pixel lookup). Dividing by the true depth keeps the measure finite and in the units of
  AbsRel.
* **Flicker**: over *static* pixels (GT valid in both frames and the GT depth at that pixel changes by less
  than 0.5% between consecutive frames), the mean relative change ``|d_{t+1} - d_t| / gt_t`` of the aligned
  prediction; averaged over frame pairs. A perfect clip has 0 (GT scores < 0.005 by construction).
"""

from __future__ import annotations

import numpy as np

DEPTH_FLOOR = 1e-3
OCCLUSION_TOL = 0.02
STATIC_TOL = 0.005


def align_sequence(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, per_frame: bool = False) -> np.ndarray:
    """Least-squares ``scale * pred + shift`` against ``gt`` over ``valid``: one pair for the whole
    sequence, or one per frame with ``per_frame=True``. Returns float64 (T, H, W) metres, clipped to the
    valid GT range of the sequence."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    valid = np.asarray(valid, bool) & (gt > 0)
    if not pred.shape == gt.shape == valid.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape}, gt {gt.shape} and valid {valid.shape} must be equal (T, H, W) shapes")
    lo, hi = (float(gt[valid].min()), float(gt[valid].max())) if valid.any() else (DEPTH_FLOOR, 1.0)

    def fit(p, g, m):
        x, y = p[m], g[m]
        if x.size < 2:
            raise ValueError("need at least 2 valid pixels to align")
        A = np.stack([x, np.ones_like(x)], 1)
        (s, b), *_ = np.linalg.lstsq(A, y, rcond=None)
        return s, b

    if per_frame:
        out = np.empty_like(pred)
        for t in range(pred.shape[0]):
            s, b = fit(pred[t], gt[t], valid[t])
            out[t] = s * pred[t] + b
    else:
        s, b = fit(pred, gt, valid)
        out = s * pred + b
    return np.clip(out, max(lo, DEPTH_FLOOR), max(hi, DEPTH_FLOOR))


def accuracy(aligned: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict:
    """``abs_rel`` and ``delta1`` per frame over valid pixels, averaged over frames."""
    rel, d1 = [], []
    for a, g, m in zip(aligned, gt, valid & (gt > 0)):
        if not m.any():
            continue
        a, g = a[m], g[m]
        rel.append(float(np.mean(np.abs(a - g) / g)))
        d1.append(float(np.mean(np.maximum(a / g, g / a) < 1.25)))
    return {"abs_rel": float(np.mean(rel)), "delta1": float(np.mean(d1))}


def temporal_alignment_error(
    aligned: np.ndarray, gt: np.ndarray, valid: np.ndarray, K: np.ndarray, poses: np.ndarray
) -> float:
    """Mean relative disagreement between each frame's depth carried into the next frame with the true
    poses and the next frame's depth (see the module docstring)."""
    from apdepth.data.synthetic.video import reproject

    T, H, W = aligned.shape
    errs = []
    for t in range(T - 1):
        m0 = valid[t] & (gt[t] > 0)
        if not m0.any():
            continue
        # carry GT and prediction of frame t with the same geometry: GT decides visibility, the prediction is scored
        u, v, z_gt, used = reproject(np.where(m0, gt[t], 0.0), K, poses[t], poses[t + 1])
        pred_t = aligned[t][used]
        ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
        inside = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H) & (z_gt > 0)
        ui, vi, z_gt, pred_t = ui[inside], vi[inside], z_gt[inside], pred_t[inside]
        g1 = gt[t + 1][vi, ui]
        ok = valid[t + 1][vi, ui] & (g1 > 0)
        ok[ok] = np.abs(z_gt[ok] - g1[ok]) / g1[ok] < OCCLUSION_TOL
        if not ok.any():
            continue
        # The predicted point of the same pixel, moved rigidly: its frame-(t+1) depth is pred * (r3 . ray) + t3,
        # with (r3 . ray) = (z_gt - t3) / gt_t from the GT point on the same ray.
        t3 = (np.linalg.inv(poses[t + 1]) @ poses[t])[2, 3]
        gt_t = gt[t][used][inside][ok]
        carried = pred_t[ok] * (z_gt[ok] - t3) / gt_t + t3
        d1 = aligned[t + 1][vi[ok], ui[ok]]
        errs.append(float(np.mean(np.abs(carried - d1) / g1[ok])))
    return float(np.mean(errs)) if errs else float("nan")


def flicker(aligned: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """``(flicker, static fraction)``: mean relative frame-to-frame change of the prediction over static
    pixels (see the module docstring), and the fraction of valid pixels that were static."""
    vals, fracs = [], []
    for t in range(aligned.shape[0] - 1):
        m = valid[t] & valid[t + 1] & (gt[t] > 0) & (gt[t + 1] > 0)
        if not m.any():
            continue
        static = m.copy()
        static[m] = np.abs(gt[t + 1][m] - gt[t][m]) / gt[t][m] < STATIC_TOL
        fracs.append(float(static.sum() / m.sum()))
        if static.any():
            a0, a1 = aligned[t][static], aligned[t + 1][static]
            vals.append(float(np.mean(np.abs(a1 - a0) / gt[t][static])))
    return (float(np.mean(vals)) if vals else float("nan")), (float(np.mean(fracs)) if fracs else 0.0)


def video_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    K: np.ndarray,
    poses: np.ndarray,
    per_frame_alignment: bool = False,
) -> dict:
    """All metrics of one sequence: ``abs_rel``, ``delta1``, ``tae``, ``flicker``, ``static_fraction``."""
    valid = np.asarray(valid, bool)
    aligned = align_sequence(pred, gt, valid, per_frame=per_frame_alignment)
    out = accuracy(aligned, gt, valid)
    out["tae"] = temporal_alignment_error(aligned, gt, valid, K, poses)
    out["flicker"], out["static_fraction"] = flicker(aligned, gt, valid)
    return out
