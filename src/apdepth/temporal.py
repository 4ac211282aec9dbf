"""Temporal consistency for video: one global co-alignment of per-frame affine-invariant depth.

Each frame's prediction ``d_t`` is affine-invariant on its own: its scale and shift are unknown and jump
from frame to frame, which shows up as flicker. Co-alignment finds one scale ``a_t`` and shift ``c_t`` per
frame so that the aligned maps ``a_t * d_t + c_t`` agree wherever two frames see the same surface, by one
global least-squares problem over overlapping frame pairs ``(i, j)``, ``j - i`` in ``gaps``:

    minimise  sum_pairs sum_k  w_k * (a_i * x_k + c_i - a_j * y_k - c_j)^2

where ``(x_k, y_k)`` are the two frames' depths at corresponding pixels: the same pixel (``flow=None``,
static camera) or pixels paired by dense optical flow (OpenCV's DIS, ``flow="dis"``) with a
forward-backward consistency check, which drops occluded and badly tracked pixels. Pixels whose depth
is saturated (the model clips to [0, 1]) are left out. Moving objects and flow errors do not fit one
affine map per frame; iteratively reweighted least squares (a few Cauchy steps, then Tukey's biweight,
whose weight is exactly 0 beyond 4.685 robust standard deviations) removes their influence.

Pairs at several gaps (default 1, 2, 4, 8, 16 frames) tie distant frames together directly, so
errors do not accumulate along the clip as they would when chaining neighbours. The normal
equations are sparse (each pair touches four unknowns); they are solved directly (or by preconditioned conjugate
gradients for long clips), so a clip of any length costs memory linear in its length.

Note: a camera moving along its optical axis changes every depth by the same amount, which is
indistinguishable from a change of shift; co-alignment keeps such a change only as far as the
predictions themselves show it. The benchmark in ``docs/results.md`` measures what remains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_GAPS = (1, 2, 4, 8, 16)


@dataclass
class _Pairs:
    i: list = field(default_factory=list)
    j: list = field(default_factory=list)
    x: list = field(default_factory=list)
    y: list = field(default_factory=list)


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample (H, W) ``img`` at float pixel coordinates (u = column, v = row), all in bounds."""
    h, w = img.shape
    u0 = np.clip(np.floor(u).astype(np.int64), 0, w - 2)
    v0 = np.clip(np.floor(v).astype(np.int64), 0, h - 2)
    fu, fv = u - u0, v - v0
    a = img[v0, u0] * (1 - fu) + img[v0, u0 + 1] * fu
    b = img[v0 + 1, u0] * (1 - fu) + img[v0 + 1, u0 + 1] * fu
    return a * (1 - fv) + b * fv


class CoAligner:
    """Collect correspondences frame by frame, then :meth:`solve` for one scale and shift per frame.

    Frames are added in order with :meth:`add_frame`; only the last ``max(gaps)`` frames are kept, plus
    at most ``samples_per_pair`` pixel pairs per frame pair, so memory does not grow with the frame size
    and only linearly with the clip length.

    Args:
        gaps: frame distances that are paired (each frame with the frames ``g`` before it).
        samples_per_pair: random pixel pairs kept per frame pair.
        flow: ``"dis"`` to pair pixels by OpenCV's DIS optical flow (needs ``opencv-python-headless``,
            ``pip install "apdepth[video]"``), or ``None`` to pair each pixel with itself.
        valid_range: depths outside this open interval (saturated by the model's clipping) are not used.
        seed: seed for the pixel subsampling (results are deterministic for a seed).
    """

    def __init__(
        self,
        gaps=DEFAULT_GAPS,
        samples_per_pair: int = 2000,
        flow: str | None = "dis",
        valid_range: tuple[float, float] = (0.002, 0.998),
        seed: int = 0,
    ):
        gaps = tuple(sorted({int(g) for g in gaps}))
        if not gaps or gaps[0] < 1:
            raise ValueError(f"gaps must be positive frame distances, got {gaps}")
        if flow not in (None, "dis"):
            raise ValueError(f"flow must be 'dis' or None, got {flow!r}")
        if samples_per_pair < 2:
            raise ValueError("samples_per_pair must be >= 2")
        self.gaps = gaps
        self.samples_per_pair = int(samples_per_pair)
        self.flow = flow
        self.valid_range = valid_range
        self._rng = np.random.default_rng(seed)
        self._buffer: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._pairs = _Pairs()
        self._dis = None
        self.num_frames = 0
        # Per-frame statistics of the raw predictions: mean, standard deviation, min, max.
        self.level: list[float] = []
        self.spread: list[float] = []
        self.depth_min: list[float] = []
        self.depth_max: list[float] = []
        if flow == "dis":
            try:
                import cv2
            except ImportError as err:
                raise ImportError('flow="dis" needs OpenCV: pip install "apdepth[video]" (or use flow=None)') from err
            self._cv2 = cv2
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def add_frame(self, depth: np.ndarray, gray: np.ndarray | None = None) -> None:
        """Add the next frame: ``depth`` (h, w) float affine-invariant depth (the model's [0, 1] output);
        ``gray`` (h, w) uint8 image of the same size, needed with ``flow="dis"``."""
        depth = np.asarray(depth, dtype=np.float32)
        if depth.ndim != 2:
            raise ValueError(f"depth must be (H, W), got {depth.shape}")
        if self.flow == "dis":
            if gray is None or gray.shape != depth.shape:
                raise ValueError("flow='dis' needs a uint8 grey image of the depth's size for every frame")
            gray = np.ascontiguousarray(gray, dtype=np.uint8)
        t = self.num_frames
        if self._buffer and next(iter(self._buffer.values()))[0].shape != depth.shape:
            raise ValueError("all frames must share one size")
        self._buffer[t] = (depth, gray if self.flow == "dis" else None)
        self.level.append(float(depth.mean()))
        self.spread.append(max(float(depth.std()), 1e-6))
        self.depth_min.append(float(depth.min()))
        self.depth_max.append(float(depth.max()))
        for g in self.gaps:
            if t - g in self._buffer:
                self._add_pair(t - g, t)
        self._buffer.pop(t - self.gaps[-1], None)
        self.num_frames += 1

    def _add_pair(self, i: int, j: int) -> None:
        di, gi = self._buffer[i]
        dj, gj = self._buffer[j]
        h, w = di.shape
        lo, hi = self.valid_range
        if self.flow == "dis":
            fwd = self._dis.calc(gi, gj, None)
            bwd = self._dis.calc(gj, gi, None)
            vv, uu = np.mgrid[0:h, 0:w].astype(np.float32)
            u, v = uu + fwd[..., 0], vv + fwd[..., 1]
            inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
            back = self._cv2.remap(bwd, u, v, self._cv2.INTER_LINEAR, borderMode=self._cv2.BORDER_REPLICATE)
            err = np.hypot(fwd[..., 0] + back[..., 0], fwd[..., 1] + back[..., 1])
            ok = inside & (err < 0.5 + 0.05 * np.hypot(fwd[..., 0], fwd[..., 1]))
            idx = np.flatnonzero(ok & (di > lo) & (di < hi))
            if idx.size > self.samples_per_pair * 2:
                idx = self._rng.choice(idx, self.samples_per_pair * 2, replace=False)
            x = di.ravel()[idx]
            y = _bilinear(dj, u.ravel()[idx], v.ravel()[idx])
        else:
            idx = np.flatnonzero((di > lo) & (di < hi) & (dj > lo) & (dj < hi))
            if idx.size > self.samples_per_pair:
                idx = self._rng.choice(idx, self.samples_per_pair, replace=False)
            x, y = di.ravel()[idx], dj.ravel()[idx]
        keep = (y > lo) & (y < hi)
        x, y = x[keep][: self.samples_per_pair], y[keep][: self.samples_per_pair]
        if x.size < 8:
            return
        self._pairs.i.append(np.full(x.size, i, np.int32))
        self._pairs.j.append(np.full(x.size, j, np.int32))
        self._pairs.x.append(x.astype(np.float32))
        self._pairs.y.append(y.astype(np.float32))

    def solve(self, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Scale ``a`` and shift ``c`` per frame, float64 (T,): ``a_t * d_t + c_t`` is the co-aligned clip.
        The frames' mean level and spread are preserved on average (see :func:`solve_coalignment`)."""
        if self.num_frames == 0:
            raise ValueError("no frames were added")
        p = self._pairs
        if not p.i:
            return np.ones(self.num_frames), np.zeros(self.num_frames)
        return solve_coalignment(
            self.num_frames,
            np.concatenate(p.i),
            np.concatenate(p.j),
            np.concatenate(p.x),
            np.concatenate(p.y),
            level=np.asarray(self.level),
            spread=np.asarray(self.spread),
            iterations=iterations,
        )


def solve_coalignment(
    num_frames: int,
    i: np.ndarray,
    j: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    level: np.ndarray | None = None,
    spread: np.ndarray | None = None,
    iterations: int = 10,
    dense_limit: int = 4000,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust global least squares for per-frame scale and shift from pixel correspondences.

    Sample ``k`` says that depth ``x[k]`` in frame ``i[k]`` and depth ``y[k]`` in frame ``j[k]`` show the
    same surface. Returns float64 ``(a, c)`` of shape (num_frames,) minimising the robustly weighted
    ``sum_k (a[i]x + c[i] - a[j]y - c[j])^2``. The objective does not change under one affine map of the
    whole clip, and shrinking every frame towards a constant lowers it, so the solution is pinned by two
    conditions: the frames' mean ``level`` (T,) and ``spread`` (T,) (e.g. each frame's mean and standard
    deviation; default 0.5 and 1) are preserved on average, ``sum a*spread = sum spread`` and
    ``sum a*level + c = sum level``. Frames without any correspondence get ``a = 1, c = 0``.

    ``iterations`` reweighting steps: plain least squares, then Cauchy weights, the last third Tukey's
    biweight (weight exactly 0 beyond 4.685 robust standard deviations: moving objects and flow errors drop
    out). Up to ``dense_limit`` unknowns (2 per frame) the normal equations are solved directly, beyond by
    conjugate gradients.
    """
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if not (i.shape == j.shape == x.shape == y.shape) or i.ndim != 1:
        raise ValueError("i, j, x and y must be 1-D arrays of one length")
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= num_frames):
        raise ValueError("frame indices out of range")
    level = np.full(num_frames, 0.5) if level is None else np.asarray(level, np.float64)
    spread = np.ones(num_frames) if spread is None else np.asarray(spread, np.float64)
    if level.shape != (num_frames,) or spread.shape != (num_frames,):
        raise ValueError("level and spread must have one value per frame")
    n = 2 * num_frames
    theta = np.zeros(n)
    theta[0::2] = 1.0
    if i.size == 0:
        return theta[0::2].copy(), theta[1::2].copy()
    # Samples are grouped by frame pair: each pair contributes one 4x4 block over (a_i, c_i, a_j, c_j).
    order = np.argsort(i * num_frames + j, kind="stable")  # samples of one pair become contiguous
    i, j, x, y = i[order], j[order], x[order], y[order]
    keys, starts, group = np.unique(i * num_frames + j, return_index=True, return_inverse=True)
    pi, pj = keys // num_frames, keys % num_frames
    cols = np.stack([2 * pi, 2 * pi + 1, 2 * pj, 2 * pj + 1], axis=1)  # (P, 4)
    rows = np.stack([x, np.ones_like(x), -y, -np.ones_like(y)], axis=1)  # residual_k = rows_k . theta[cols]
    seen = np.zeros(num_frames, bool)
    seen[pi] = seen[pj] = True
    # The two conditions, as rows of C theta = e over the frames that have correspondences.
    C = np.zeros((2, n))
    C[0, 0::2] = np.where(seen, spread, 0.0)
    C[1, 0::2] = np.where(seen, level, 0.0)
    C[1, 1::2] = seen
    e = C @ theta
    norms = np.linalg.norm(C, axis=1, keepdims=True)
    C, e = C / norms, e / norms[:, 0]
    w = np.ones_like(x)
    for it in range(max(1, iterations)):
        # blocks[p] = sum over the pair's samples of w * rows rows^T: (P, 4, 4)
        sxx, sx, s1, syy, sy, sxy = (
            np.add.reduceat(v, starts) for v in (w * x * x, w * x, w, w * y * y, w * y, w * x * y)
        )
        blocks = np.stack(
            [
                np.stack([sxx, sx, -sxy, -sx], 1),
                np.stack([sx, s1, -sy, -s1], 1),
                np.stack([-sxy, -sy, syy, sy], 1),
                np.stack([-sx, -s1, sy, s1], 1),
            ],
            1,
        )
        theta = _solve_blocks(theta, cols, blocks, C, e, seen, dense_limit)
        r = np.einsum("kc,kc->k", rows, theta[cols[group]])
        sigma = 1.4826 * np.median(np.abs(r))
        if not sigma > 1e-12:
            break
        if it < (2 * iterations) // 3:
            w = 1.0 / (1.0 + (r / (2.385 * sigma)) ** 2)  # Cauchy: a smooth start
        else:
            z = r / (4.685 * sigma)
            w = np.where(np.abs(z) < 1, (1 - z**2) ** 2, 0.0)  # Tukey: outliers get exactly 0
    return theta[0::2].copy(), theta[1::2].copy()


def _solve_blocks(theta0, cols, blocks, C, e, seen, dense_limit):
    """Minimise theta^T H theta + mu |C theta - e|^2, H = sum_p scatter(blocks[p] at cols[p]), over the
    frames in ``seen`` (the others keep theta0). Data that fit exactly make both terms 0, so the penalty
    form finds the exact solution; mu only sets the balance for data that do not."""
    n = theta0.size
    free = np.repeat(seen, 2)
    diag = np.bincount(cols.ravel(), weights=np.einsum("pqq->pq", blocks).ravel(), minlength=n)
    mu = max(diag[free].mean(), 1e-12)
    ridge = 1e-12 * mu
    theta = theta0.copy()
    if n <= dense_limit:
        H = np.zeros((n, n))
        np.add.at(H, (cols[:, :, None], cols[:, None, :]), blocks)
        A = H + mu * C.T @ C + ridge * np.eye(n)
        b = mu * C.T @ e
        f = np.flatnonzero(free)
        theta[f] = np.linalg.solve(A[np.ix_(f, f)], b[f])
        return theta

    def apply(v):  # (H + mu C^T C + ridge) v on the free entries
        hv = np.bincount(cols.ravel(), weights=np.einsum("pab,pb->pa", blocks, v[cols]).ravel(), minlength=n)
        return np.where(free, hv + mu * C.T @ (C @ v) + ridge * v, 0.0)

    b = np.where(free, mu * C.T @ e, 0.0)
    precond = np.where(free, 1.0 / (diag + mu * (C**2).sum(0) + ridge), 0.0)
    v = np.where(free, theta0, 0.0)  # warm start from the previous reweighting step
    r = b - apply(v)
    z = precond * r
    p = z.copy()
    rz = r @ z
    bnorm = max(np.linalg.norm(b), 1e-300)
    for _ in range(20 * n):
        if np.linalg.norm(r) <= 1e-13 * bnorm:
            break
        hp = apply(p)
        alpha = rz / (p @ hp)
        v += alpha * p
        r -= alpha * hp
        z = precond * r
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
    theta[free] = v[free]
    return theta


def normalise_clip(depth_min: np.ndarray, depth_max: np.ndarray, a: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """The clip-wide range ``(lo, hi)`` of the aligned depths ``a_t * d_t + c_t``, from each frame's raw
    min/max; mapping ``(a_t d_t + c_t - lo) / (hi - lo)`` puts the whole clip in [0, 1] with ONE affine map."""
    ends = np.stack([a * depth_min + c, a * depth_max + c])
    lo, hi = float(ends.min()), float(ends.max())
    return lo, (hi if hi > lo else lo + 1.0)
