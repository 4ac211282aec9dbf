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

What co-alignment cannot remove, non-affine frame-to-frame changes, :class:`FlowTemporalFilter` averages
out along the optical flow (recursively, with fall-back to the current frame where the flow or the depth
disagrees); :func:`smooth_clip` runs it over a clip, forward or in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_GAPS = (1, 2, 4, 8, 16)
DEFAULT_TRAVEL_ZERO = 0.0
"""Normalised depth taken as zero distance when the camera's travel is estimated (see :meth:`CoAligner.travel_shift`);
chosen on tuning sequences (0.05 and -0.05 scored within 1% of it, docs/results.md)."""
DEFAULT_HFOV_DEG = 60.0
"""Horizontal field of view assumed for the flow model when none is known (the travel estimate hardly depends on it)."""
DEFAULT_MAX_SAMPLES = 4_000_000
"""Pixel pairs :class:`CoAligner` keeps in all (~16 bytes each; ~90 at the solve): up to ~400 frames at the default
2,000 per frame pair; beyond, every pair keeps half as many, again as often as needed, so memory stays bounded."""
TRAVEL_SAMPLES = 500
"""Pixel pairs per frame pair used for the travel estimate (of the co-alignment's samples; 6 unknowns)."""


def _travel_stride(num_samples: int) -> int:
    """Every how many of a pair's samples the travel estimate uses (about :data:`TRAVEL_SAMPLES` of them)."""
    return max(1, num_samples // TRAVEL_SAMPLES)


DEFAULT_TRAVEL_SMOOTHNESS = 100.0
"""Weight of the second differences of the travel path against one frame pair's estimate (:func:`travel_path`)."""


def _robust_sigma(r: np.ndarray) -> float:
    """Robust standard deviation of residuals ``r``: 1.4826 x their median absolute value."""
    return 1.4826 * float(np.median(np.abs(r)))


def _cauchy_weights(r: np.ndarray, sigma: float) -> np.ndarray:
    """Cauchy weights of residuals ``r`` (scale 2.385 ``sigma``, 95% efficiency): no residual gets weight 0."""
    return 1.0 / (1.0 + (r / (2.385 * sigma)) ** 2)


def _tukey_weights(r: np.ndarray, sigma: float) -> np.ndarray:
    """Tukey's biweight of residuals ``r``: exactly 0 beyond 4.685 ``sigma`` (outliers drop out)."""
    z = r / (4.685 * sigma)
    return np.where(np.abs(z) < 1, (1 - z**2) ** 2, 0.0)


@dataclass
class _Pairs:
    i: list = field(default_factory=list)
    j: list = field(default_factory=list)
    x: list = field(default_factory=list)
    y: list = field(default_factory=list)
    # flow pairs only, for every _travel_stride-th sample (what travel_shift uses): its pixel (column, row) in
    # frame i and its flow to frame j, in pixels
    pixel: list = field(default_factory=list)
    flow: list = field(default_factory=list)
    motion_x: list = field(default_factory=list)  # the depth in frame i at those samples


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample (H, W) ``img`` at float pixel coordinates (u = column, v = row), all in bounds."""
    h, w = img.shape
    u0 = np.clip(np.floor(u).astype(np.int64), 0, w - 2)
    v0 = np.clip(np.floor(v).astype(np.int64), 0, h - 2)
    fu, fv = u - u0, v - v0
    a = img[v0, u0] * (1 - fu) + img[v0, u0 + 1] * fu
    b = img[v0 + 1, u0] * (1 - fu) + img[v0 + 1, u0 + 1] * fu
    return a * (1 - fv) + b * fv


CUT_GREY_LEVELS = 8.0
"""Median grey-level difference (0..255) of flow-tracked pixels between neighbouring frames above which they
are taken as a cut (measured at 48x64: under 1.5 on a walk, a pan and a dolly shot, about 17 at a cut between two
similar textures)."""


NEIGHBOUR_FLOW_ITERATIONS = 15
NEIGHBOUR_FLOW_SMOOTHNESS = 80.0
"""Variational refinement of the DIS flow between neighbouring frames (OpenCV's medium preset has 5 iterations and
smoothness weight alpha 20): a smoother flow, along which the temporal filter carries its history with less
misregistration (chosen on tuning sequences, docs/results.md); the other pairs keep the medium preset."""


MIN_TRACKED = 0.05
"""Fraction of a flow pair's pixels that must pass the forward-backward check for the pair to be used
(at cuts between the rendered tuning scenes 0-9% passed, between neighbouring frames of one shot over 90%)."""


class CoAligner:
    """Collect correspondences frame by frame, then :meth:`solve` for one scale and shift per frame.

    Frames are added in order with :meth:`add_frame`; only the last ``max(gaps)`` frames are kept, plus
    at most ``samples_per_pair`` pixel pairs per frame pair, so memory does not grow with the frame size;
    past ``max_samples`` pixel pairs in all, every pair keeps every other one (and new pairs half as many),
    so it stays bounded for clips of any length (at least 8 per pair).

    Args:
        gaps: frame distances that are paired (each frame with the frames ``g`` before it).
        samples_per_pair: random pixel pairs kept per frame pair.
        max_samples: pixel pairs kept in all before every pair is thinned (see above; >= 1000).
        flow: ``"dis"`` to pair pixels by OpenCV's DIS optical flow (needs ``opencv-python-headless``,
            ``pip install "apdepth[video]"``), or ``None`` to pair each pixel with itself.
        valid_range: depths outside this open interval (saturated by the model's clipping) are not used.
        seed: seed for the pixel subsampling (results are deterministic for a seed).
        keep_flows: keep the flows between each new frame and the one before it in ``last_flows``
            (``(f_t-1->t, f_t->t-1)``, float32 (h, w, 2) each; ``None`` without flow or for the first frame),
            for :class:`FlowTemporalFilter`. Needs 1 in ``gaps``. At a cut (the flow-tracked pixels'
            grey levels differ by a median of more than :data:`CUT_GREY_LEVELS`) both flows are NaN, which
            the filter reads as "nothing tracked": it passes that frame through and restarts.

    A flow pair gives no correspondences (it is listed in ``dropped_pairs``) when under :data:`MIN_TRACKED`
    of its pixels pass the forward-backward check, or the tracked pixels' grey levels differ by a median of
    more than :data:`CUT_GREY_LEVELS`: a cut between the two frames, or a flow that tracked nothing real.
    When that happens to neighbouring frames ``t - 1, t``, ``t`` is recorded in ``cuts`` and no pair across
    the cut is used, so the shots on either side are co-aligned separately (each keeps its own level and
    spread, see :func:`solve_coalignment`) and the camera's travel is not carried across it.
    """

    def __init__(
        self,
        gaps=DEFAULT_GAPS,
        samples_per_pair: int = 2000,
        flow: str | None = "dis",
        valid_range: tuple[float, float] = (0.002, 0.998),
        seed: int = 0,
        keep_flows: bool = False,
        max_samples: int = DEFAULT_MAX_SAMPLES,
    ):
        gaps = tuple(sorted({int(g) for g in gaps}))
        if not gaps or gaps[0] < 1:
            raise ValueError(f"gaps must be positive frame distances, got {gaps}")
        if keep_flows and gaps[0] != 1:
            raise ValueError("keep_flows needs neighbouring frames paired (1 in gaps)")
        self.keep_flows = bool(keep_flows)
        self.last_flows: tuple[np.ndarray, np.ndarray] | None = None
        if flow not in (None, "dis"):
            raise ValueError(f"flow must be 'dis' or None, got {flow!r}")
        if samples_per_pair < 2:
            raise ValueError("samples_per_pair must be >= 2")
        if max_samples < 1000:
            raise ValueError(f"max_samples must be >= 1000, got {max_samples}")
        self.gaps = gaps
        self.samples_per_pair = int(samples_per_pair)
        self.max_samples = int(max_samples)
        self._cap = self.samples_per_pair  # samples kept per new pair; halves when the budget is reached
        self._stored = 0
        self.flow = flow
        self.valid_range = valid_range
        self._rng = np.random.default_rng(seed)
        self._buffer: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._pairs = _Pairs()
        self._dis = None
        self.num_frames = 0
        self.size: tuple[int, int] | None = None
        self.dropped_pairs: list[tuple[int, int]] = []  # flow pairs not used (see the class docstring)
        self.cuts: list[int] = []  # frames t that do not match frame t - 1 (a cut before t)
        self._cut_set: set[int] = set()
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
            # neighbouring frames (the temporal filter carries its history along their flow): a smoother flow
            self._dis_neighbour = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            self._dis_neighbour.setVariationalRefinementIterations(NEIGHBOUR_FLOW_ITERATIONS)
            self._dis_neighbour.setVariationalRefinementAlpha(NEIGHBOUR_FLOW_SMOOTHNESS)

    def add_frame(self, depth: np.ndarray, gray: np.ndarray | None = None) -> None:
        """Add the next frame: ``depth`` (h, w) float affine-invariant depth (the model's [0, 1] output);
        ``gray`` (h, w) uint8 image of the same size, needed with ``flow="dis"``.

        Raises:
            ValueError: shapes that do not match, or (``flow="dis"``) frames too small for the optical flow
                (OpenCV's DIS needs about 12 pixels on a side; the error comes with the second frame).
        """
        depth = np.asarray(depth, dtype=np.float32)
        if depth.ndim != 2:
            raise ValueError(f"depth must be (H, W), got {depth.shape}")
        if self.flow == "dis":
            if gray is None or gray.shape != depth.shape:
                raise ValueError("flow='dis' needs a uint8 grey image of the depth's size for every frame")
            gray = np.ascontiguousarray(gray, dtype=np.uint8)
        t = self.num_frames
        self.last_flows = None
        if self._buffer and next(iter(self._buffer.values()))[0].shape != depth.shape:
            raise ValueError("all frames must share one size")
        self.size = depth.shape
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
            if any(c in self._cut_set for c in range(i + 1, j + 1)):  # the pair spans a cut: different shots
                self.dropped_pairs.append((i, j))
                return
            dis = self._dis_neighbour if j - i == 1 else self._dis
            try:
                fwd = dis.calc(gi, gj, None)
                bwd = dis.calc(gj, gi, None)
            except self._cv2.error as err:  # e.g. frames too small for its image pyramid
                raise ValueError(
                    f"optical flow (OpenCV DIS) cannot pair {w}x{h} frames; use larger frames (e.g. a higher "
                    f"processing resolution) or flow=None ({str(err).strip().splitlines()[-1].split('error: ')[-1]})"
                ) from None
            vv, uu = np.mgrid[0:h, 0:w].astype(np.float32)
            u, v = uu + fwd[..., 0], vv + fwd[..., 1]
            inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
            back = self._cv2.remap(bwd, u, v, self._cv2.INTER_LINEAR, borderMode=self._cv2.BORDER_REPLICATE)
            err = np.hypot(fwd[..., 0] + back[..., 0], fwd[..., 1] + back[..., 1])
            ok = inside & (err < 0.5 + 0.05 * np.hypot(fwd[..., 0], fwd[..., 1]))
            unrelated = ok.mean() < MIN_TRACKED
            if not unrelated:
                seen = self._cv2.remap(gj.astype(np.float32), u, v, self._cv2.INTER_LINEAR)
                unrelated = bool(np.median(np.abs(seen - gi)[ok]) > CUT_GREY_LEVELS)
            if j - i == 1 and unrelated:
                # neighbouring frames that do not match: a cut. No pair across it is used (a later pair that
                # spans it can still find a few matching pixels, and would tie the two shots together).
                self.cuts.append(j)
                self._cut_set.add(j)
            if self.keep_flows and j - i == 1:
                self.last_flows = (fwd, bwd)
                if unrelated:  # a cut: the filter restarts there
                    self.last_flows = (np.full_like(fwd, np.nan), np.full_like(bwd, np.nan))
            if unrelated:
                # A cut between the two frames, or a flow that tracked nothing real (e.g. a pan that moved the
                # whole view out between distant frames): its "correspondences" are noise, and across a cut
                # they would tie unrelated scenes together. The pair is dropped; solve_coalignment keeps the
                # frames on each side of a cut at their own level and spread.
                self.dropped_pairs.append((i, j))
                return
            idx = np.flatnonzero(ok & (di > lo) & (di < hi))
            if idx.size > self._cap * 2:
                idx = self._rng.choice(idx, self._cap * 2, replace=False)
            x = di.ravel()[idx]
            y = _bilinear(dj, u.ravel()[idx], v.ravel()[idx])
            motion = np.stack([uu.ravel()[idx], vv.ravel()[idx], fwd[..., 0].ravel()[idx], fwd[..., 1].ravel()[idx]], 1)
        else:
            idx = np.flatnonzero((di > lo) & (di < hi) & (dj > lo) & (dj < hi))
            if idx.size > self._cap:
                idx = self._rng.choice(idx, self._cap, replace=False)
            x, y = di.ravel()[idx], dj.ravel()[idx]
            motion = None
        keep = (y > lo) & (y < hi)
        x, y = x[keep][: self._cap], y[keep][: self._cap]
        if x.size < 8:
            return
        self._pairs.i.append(np.full(x.size, i, np.int32))
        self._pairs.j.append(np.full(x.size, j, np.int32))
        self._pairs.x.append(x.astype(np.float32))
        self._pairs.y.append(y.astype(np.float32))
        if motion is not None:  # kept only for the samples that travel_shift uses: memory
            stride = _travel_stride(x.size)
            motion = motion[keep][: self._cap][::stride].astype(np.float32)
            self._pairs.pixel.append(motion[:, :2])
            self._pairs.flow.append(motion[:, 2:])
            self._pairs.motion_x.append(self._pairs.x[-1][::stride].copy())
        self._stored += x.size
        while self._stored > self.max_samples and self._cap > 8:
            self._thin()

    def _thin(self) -> None:
        """Keep every other stored sample of every pair (at least 8 each; the travel estimate's at least 32) and
        half as many for new pairs: the memory of a long clip stays within ``max_samples`` samples."""
        p = self._pairs
        for k in range(len(p.x)):
            if p.x[k].size >= 16:
                p.i[k], p.j[k], p.x[k], p.y[k] = p.i[k][::2], p.j[k][::2], p.x[k][::2], p.y[k][::2]
        for k in range(len(p.pixel)):
            if len(p.pixel[k]) >= 64:
                p.pixel[k], p.flow[k], p.motion_x[k] = p.pixel[k][::2], p.flow[k][::2], p.motion_x[k][::2]
        self._stored = sum(x.size for x in p.x)
        self._cap = max(8, self._cap // 2)

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

    def travel_shift(
        self,
        a: np.ndarray,
        c: np.ndarray,
        zero: float = DEFAULT_TRAVEL_ZERO,
        hfov_deg: float = DEFAULT_HFOV_DEG,
        smoothness: float = DEFAULT_TRAVEL_SMOOTHNESS,
    ) -> np.ndarray:
        """The per-frame shift, float64 (T,), to add to ``c`` so that the co-aligned clip also shows the
        camera's travel along its optical axis (a dolly or walk forward lowers every depth by the distance
        travelled), estimated from the optical flow by :func:`axial_travel`; zeros without flow pairs.

        Co-alignment alone makes a static point keep its depth from frame to frame; the per-frame
        predictions of an affine-invariant model cannot show the travel (it is a change of shift), but the
        flow's expansion can: at a pixel the flow grows with ``t_z / Z``. With ``a, c`` from :meth:`solve`:
        the travel is measured in the clip's normalised units, ``(a d + c - lo) / (hi - lo)`` (see
        :func:`normalise_clip`), under the assumption that normalised depth ``zero`` is at zero distance
        (the clip's nearest point is near the camera compared with the depth range). A clip with cuts
        (``cuts``) is measured shot by shot: each shot normalised on its own, its travel 0 on its first frame; ``hfov_deg`` is the
        assumed horizontal field of view, which only shapes the rotational part of the flow model.

        Raises:
            ValueError: ``a`` or ``c`` not (T,), ``hfov_deg`` outside (0, 180), and what :func:`axial_travel`
                and :func:`travel_path` refuse (a non-finite ``zero``, a negative ``smoothness``).
        """
        hfov_deg = _number(hfov_deg, "hfov_deg must be a field of view in degrees, in (0, 180)")
        if not 0.0 < hfov_deg < 180.0:
            raise ValueError(f"hfov_deg must be a field of view in degrees, in (0, 180), got {hfov_deg}")
        p = self._pairs
        n = self.num_frames
        a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
        if a.shape != (n,) or c.shape != (n,):
            raise ValueError(f"a and c must have one value per frame ({n}), got {a.shape} and {c.shape}")
        if not p.pixel or self.size is None:
            return np.zeros(n)
        # Each shot (frames tied together by pairs; the two sides of a cut are two shots) is normalised on its
        # own: "zero" is its own nearest depth, and its travel starts at 0 on its first frame.
        shot = _components(n, np.array([int(k[0]) for k in p.i]), np.array([int(k[0]) for k in p.j]))
        ranges = {}
        for s in np.unique(shot):
            member = shot == s
            ranges[s] = normalise_clip(
                np.asarray(self.depth_min)[member], np.asarray(self.depth_max)[member], a[member], c[member]
            )
        h, w = self.size
        focal = (w / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
        pairs_i, pairs_j, tz = [], [], []
        for i_k, j_k, x_k, px_k, fl_k in zip(p.i, p.j, p.motion_x, p.pixel, p.flow):
            i = int(i_k[0])
            lo, hi = ranges[shot[i]]
            depth = (a[i] * x_k.astype(np.float64) + c[i] - lo) / (hi - lo)
            est = axial_travel(px_k, fl_k, depth, (h, w), focal, zero=zero)
            if est is not None:
                pairs_i.append(i)
                pairs_j.append(int(j_k[0]))
                tz.append(est)
        phi = travel_path(n, np.asarray(pairs_i, np.int64), np.asarray(pairs_j, np.int64), np.asarray(tz), smoothness)
        span = np.array([ranges[s][1] - ranges[s][0] for s in shot])
        return -(phi - phi[shot]) * span + 0.0  # + 0.0: no "-0.0" in the records


def axial_travel(
    pixel: np.ndarray,
    flow: np.ndarray,
    depth: np.ndarray,
    size: tuple[int, int],
    focal: float,
    zero: float = DEFAULT_TRAVEL_ZERO,
    iterations: int = 5,
) -> float | None:
    """The camera's translation along its optical axis between two frames, in the units of ``depth``, from
    the optical flow of a rigid scene; ``None`` when fewer than 16 samples can be used.

    The rigid-motion flow model: a camera rotation ``w`` (rotation vector) turns the ray of a point at
    distance ``Z`` to image position ``(x_r, y_r)`` and distance ``Z_r`` (exactly, by Rodrigues' formula),
    and the translation ``t`` then moves it by ``((x_r t_z - t_x) / (Z_r - t_z), (y_r t_z - t_y) / (Z_r -
    t_z))`` (exact as well). Around the current estimate the model is linear in ``t`` and a small change of
    ``w`` (the instantaneous-motion basis of Longuet-Higgins and Prazdny, 1980, "The interpretation of a
    moving retinal image", Proc. R. Soc. Lond. B 208); each step solves that linear problem by least squares
    with Cauchy reweighting (moving objects and flow errors lose their weight) and is repeated until ``t_z``
    and ``w`` stop changing. Each equation is multiplied by the point's distance ``Z_r - t_z`` first: the
    translation's columns then hold no depth, so errors of ``depth`` (largest in ``1/Z`` for near points) do not
    bias ``t_z`` towards 0 as errors in the regressors would. ``Z = depth - zero``. Returns ``t_z``: positive = the camera moved forward, so
    the depths of static points fell by ``t_z``.

    Args:
        pixel: float (N, 2) sample positions (column, row) in the first frame, pixels.
        flow: float (N, 2) their flow to the second frame, pixels.
        depth: float (N,) their depth in the first frame (affine-invariant units; only ``depth > zero``
            is used).
        size: (H, W) of the frames the pixels refer to; the principal point is taken at the centre.
        focal: focal length in pixels (> 0).
        zero: the depth value taken as zero distance.
        iterations: reweighting steps.
    Samples with a NaN or infinite position, flow or depth are left out.

    Raises:
        ValueError: arrays of the wrong shapes, a focal length that is not a positive number, a non-finite
            ``zero``.
    """
    pixel = np.asarray(pixel, np.float64)
    flow = np.asarray(flow, np.float64)
    depth = np.asarray(depth, np.float64)
    if pixel.ndim != 2 or pixel.shape[1] != 2 or flow.shape != pixel.shape or depth.shape != pixel.shape[:1]:
        raise ValueError(
            f"pixel and flow must be (N, 2) and depth (N,), got {pixel.shape}, {flow.shape} and {depth.shape}"
        )
    focal = _number(focal, "focal must be a positive number of pixels")
    zero = _number(zero, "zero must be a finite number")
    if not (np.isfinite(focal) and focal > 0.0):
        raise ValueError(f"focal must be a positive number of pixels, got {focal}")
    if not np.isfinite(zero):
        raise ValueError(f"zero must be a finite number, got {zero}")
    with np.errstate(invalid="ignore"):  # NaN/inf samples are left out, not propagated
        use = (depth - zero > 1e-3) & np.isfinite(depth) & np.isfinite(flow).all(1) & np.isfinite(pixel).all(1)
    if use.sum() < 16:
        return None
    h, w = size
    rays = np.stack(
        [(pixel[use, 0] - (w - 1) / 2.0) / focal, (pixel[use, 1] - (h - 1) / 2.0) / focal, np.ones(int(use.sum()))], 1
    )
    dist = depth[use] - zero
    b0 = np.concatenate([flow[use, 0], flow[use, 1]]) / focal
    zero_col = np.zeros(len(dist))
    omega, tz = np.zeros(3), 0.0
    for _ in range(10):  # Gauss-Newton in the rotation, fixed point in t_z
        turned = rays @ _rotation(-omega).T  # the rays of the points after the rotation alone
        ok = turned[:, 2] > 1e-6
        if ok.sum() < 16:
            return None
        xr = turned[:, 0] / np.where(ok, turned[:, 2], 1.0)
        yr = turned[:, 1] / np.where(ok, turned[:, 2], 1.0)
        z_turned = dist * turned[:, 2]
        reach = np.maximum(z_turned - tz, 1e-3 * dist)  # the point's distance after the move, Z_r - t_z
        q = np.where(ok, 1.0 / reach, 0.0)
        A = np.vstack(
            [
                np.column_stack([-q, zero_col, xr * q, xr * yr, -(1 + xr * xr), yr]),
                np.column_stack([zero_col, -q, yr * q, 1 + yr * yr, -xr * yr, -xr]),
            ]
        )
        b = b0 - np.concatenate([xr - rays[:, 0], yr - rays[:, 1]])
        # Each equation times the point's distance Z_r - t_z (1 / q): the translation's columns no longer hold the
        # depth, whose errors would bias t_z towards 0 (errors in the regressors); they go to the right-hand side.
        scale = np.concatenate([reach, reach])
        A, b = A * scale[:, None], b * scale
        keep = np.concatenate([ok, ok])
        A, b = A[keep], b[keep]
        wt = np.ones(b.size)
        theta = np.zeros(6)
        for _ in range(max(1, iterations)):
            sw = np.sqrt(wt)
            theta = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)[0]
            r = A @ theta - b
            sigma = _robust_sigma(r)
            if not sigma > 1e-15:
                break
            wt = _cauchy_weights(r, sigma)
        omega = omega + theta[3:]
        tz, previous = float(theta[2]), tz
        if not (np.isfinite(tz) and np.isfinite(omega).all()):
            return None
        if abs(tz - previous) <= 1e-8 * abs(tz) + 1e-15 and np.abs(theta[3:]).max() < 1e-10:
            break
    return tz


def _rotation(v: np.ndarray) -> np.ndarray:
    """The rotation matrix of rotation vector ``v`` (axis times angle in radians; Rodrigues' formula)."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-15:
        return np.eye(3)
    k = v / angle
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def travel_path(
    num_frames: int,
    i: np.ndarray,
    j: np.ndarray,
    travel: np.ndarray,
    smoothness: float = DEFAULT_TRAVEL_SMOOTHNESS,
    window: int = 1024,
) -> np.ndarray:
    """The camera's cumulative travel per frame, float64 (T,) with ``phi[0] = 0``, from pairwise estimates
    ``phi[j[k]] - phi[i[k]] ~ travel[k]`` and a smooth-path prior (``smoothness`` times the second
    differences), by robust least squares (Cauchy, then Tukey reweighting: pairs whose estimate disagrees
    with the path drop out). Frames without pairs follow the smooth path. Where no pair spans two
    neighbouring frames (a cut: no pair across it was measured) the path neither bends smoothly nor jumps
    there: the prior is not applied across it and the travel simply stays the same over it. Long clips are
    solved in overlapping windows of ``window`` frames, blended linearly over each overlap (the later window
    shifted by the mean difference there), so cost stays linear in ``T`` and the path stays continuous.

    Raises:
        ValueError: arrays of different lengths, frame indices out of range, a pair of one frame with
            itself, non-finite estimates, a negative or non-finite ``smoothness``, ``num_frames < 0`` or
            ``window < 2``.
    """
    i = np.asarray(i)
    j = np.asarray(j)
    travel = np.asarray(travel, np.float64)
    if not i.shape == j.shape == travel.shape or i.ndim != 1:
        raise ValueError("i, j and travel must be 1-D arrays of one length")
    if i.size and not (np.issubdtype(i.dtype, np.integer) and np.issubdtype(j.dtype, np.integer)):
        raise ValueError(f"frame indices must be integers, got {i.dtype} and {j.dtype}")
    i, j = i.astype(np.int64), j.astype(np.int64)
    num_frames = int(num_frames)
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    smoothness = _number(smoothness, "smoothness must be a non-negative number")
    if not (np.isfinite(smoothness) and smoothness >= 0.0):
        raise ValueError(f"smoothness must be a non-negative number, got {smoothness}")
    if int(window) < 2:
        raise ValueError(f"window must be >= 2 frames, got {window}")
    window = int(window)
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= num_frames):
        raise ValueError("frame indices out of range")
    if np.any(i == j):
        raise ValueError("a pair must join two different frames (i == j)")
    if not np.isfinite(travel).all():
        raise ValueError("travel estimates must be finite (leave out pairs without an estimate)")
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    phi = np.zeros(num_frames)
    if num_frames < 2 or i.size == 0:
        return phi
    if num_frames <= window:
        return _travel_window(num_frames, i, j, travel, smoothness)
    step = window // 2
    start, last_stop = 0, 0
    while True:
        stop = min(start + window, num_frames)
        sel = (lo >= start) & (hi < stop)
        part = _travel_window(stop - start, i[sel] - start, j[sel] - start, travel[sel], smoothness)
        if start == 0:
            phi[:stop] = part
        else:  # join: shifted by the overlap's mean difference, then blended linearly across the overlap
            overlap = np.arange(start, last_stop)
            offset = float(np.mean(phi[overlap] - part[overlap - start]))
            ramp = (np.arange(overlap.size) + 0.5) / overlap.size  # new window's weight: 0 -> 1
            phi[overlap] = (1.0 - ramp) * phi[overlap] + ramp * (part[overlap - start] + offset)
            phi[last_stop:stop] = part[last_stop - start :] + offset
        if stop == num_frames:
            break
        start, last_stop = start + step, stop
    return phi


def _travel_window(n: int, i: np.ndarray, j: np.ndarray, travel: np.ndarray, smoothness: float) -> np.ndarray:
    """Robust least squares of :func:`travel_path` for one window of ``n`` frames (normal equations)."""
    # spanned[k]: some pair joins a frame <= k to a frame > k; where none does, the two sides are unrelated
    starts = np.bincount(np.minimum(i, j), minlength=n)
    ends = np.bincount(np.maximum(i, j), minlength=n)
    spanned = np.cumsum(starts - ends)[: n - 1] > 0
    smooth = np.zeros((n, n))
    if n > 2:
        k = np.flatnonzero(spanned[:-1] & spanned[1:])  # second differences (k, k+1, k+2) within one shot
        coef = (1.0, -2.0, 1.0)
        for p in range(3):
            for q in range(3):
                np.add.at(smooth, (k + p, k + q), smoothness**2 * coef[p] * coef[q])
    gap = np.flatnonzero(~spanned)  # no travel across a cut: phi[k + 1] = phi[k]
    np.add.at(smooth, (gap, gap), 1.0)
    np.add.at(smooth, (gap + 1, gap + 1), 1.0)
    np.add.at(smooth, (gap, gap + 1), -1.0)
    np.add.at(smooth, (gap + 1, gap), -1.0)
    smooth[0, 0] += 1.0  # phi[0] = 0
    wt = np.ones(i.size)
    phi = np.zeros(n)
    steps, last = 8, False
    for step in range(steps):
        H = smooth.copy()
        g = np.zeros(n)
        np.add.at(H, (j, j), wt)
        np.add.at(H, (i, i), wt)
        np.add.at(H, (i, j), -wt)
        np.add.at(H, (j, i), -wt)
        np.add.at(g, j, wt * travel)
        np.add.at(g, i, -wt * travel)
        H[np.diag_indices(n)] += 1e-12 * max(2.0 * wt.sum() / n, 1e-300)  # frames whose pairs all dropped out
        phi = np.linalg.solve(H, g)
        r = phi[j] - phi[i] - travel
        if step == steps - 1 or last:
            break
        floor = 1e-6 * max(np.abs(travel).max(), 1e-300)
        sigma = _robust_sigma(r)
        if step < 5 and sigma > floor:
            wt = _cauchy_weights(r, sigma)  # a smooth start
        else:
            last = not sigma > floor  # the rest fit to rounding: one more solve without the outliers
            wt = _tukey_weights(r, max(sigma, floor))  # outliers get exactly 0
    return phi - phi[0]


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
    ``sum a*level + c = sum level``, over each group of frames that the pairs connect (the two sides of a
    cut, with no pair between them, are pinned separately). Frames without any correspondence get ``a = 1,
    c = 0``.

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
    keys, starts = np.unique(i * num_frames + j, return_index=True)
    pi, pj = keys // num_frames, keys % num_frames
    cols = np.stack([2 * pi, 2 * pi + 1, 2 * pj, 2 * pj + 1], axis=1)  # (P, 4)
    seen = np.zeros(num_frames, bool)
    seen[pi] = seen[pj] = True
    # The two conditions, as rows of C theta = e, for each group of frames tied together by correspondences:
    # frames with no pair to the rest (e.g. the two sides of a cut) keep their own level and spread. With one
    # condition for the whole clip, one side could shrink to a constant (a = 0, a flat depth map) and the other
    # grow, which lowers the objective.
    comp = _components(num_frames, pi, pj)
    labels = np.unique(comp[seen])
    C = np.zeros((2 * labels.size, n))
    for k, lab in enumerate(labels):
        member = seen & (comp == lab)
        C[2 * k, 0::2] = np.where(member, spread, 0.0)
        C[2 * k + 1, 0::2] = np.where(member, level, 0.0)
        C[2 * k + 1, 1::2] = member
    e = C @ theta
    norms = np.linalg.norm(C, axis=1, keepdims=True)
    C, e = C / norms, e / norms[:, 0]
    w = np.ones_like(x)
    for it in range(max(1, iterations)):
        # blocks[p] = sum over the pair's samples of w * rows rows^T, rows = (x, 1, -y, -1): (P, 4, 4)
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
        a, c = theta[0::2], theta[1::2]
        r = a[i] * x + c[i] - a[j] * y - c[j]  # per sample, without (N, 4) temporaries: memory
        sigma = _robust_sigma(r)
        if not sigma > 1e-12:
            break
        if it < (2 * iterations) // 3:
            w = _cauchy_weights(r, sigma)  # a smooth start
        else:
            w = _tukey_weights(r, sigma)  # outliers get exactly 0
    return theta[0::2].copy(), theta[1::2].copy()


def _components(num_frames: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the graph of frames linked by pairs ``(i[k], j[k])``: (T,) int64 labels, each
    the smallest frame index of its component (union-find with path halving)."""
    parent = list(range(num_frames))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(x) for x in range(num_frames)], np.int64)


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


# ----------------------------------------------------------------------------------- temporal smoothing

SMOOTHING_MODES = ("none", "forward", "bidirectional")


def _number(value, message: str) -> float:
    """``float(value)``, or ValueError(``message, got value``) for what is not a number (None, 'abc')."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{message}, got {value!r}") from None


def _identity_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float32)
    return uu, vv


def _remap(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of (H, W[, C]) ``img`` at float pixel coordinates (OpenCV's remap, edges replicated)."""
    import cv2

    return cv2.remap(img, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class FlowTemporalFilter:
    """Recursive, flow-guided temporal filter for a co-aligned clip: constant memory, one frame at a time.

    Frame ``t``'s output is ``F_t = (1 - k) * D_t + k * W_t`` per pixel, where ``D_t`` is the current
    (co-aligned) depth and ``W_t`` the previous output ``F_{t-1}`` carried into frame ``t`` along the
    optical flow (bilinear lookup with :func:`cv2.remap`). The weight ``k = strength * c_flow * c_depth``
    falls to 0, so that the output is the current frame, where the history cannot be trusted:

    * ``c_flow`` is 0 where the forward-backward flow check fails (``|f_t->t-1 + f_t-1->t|`` at least
      ``flow_tolerance + 0.05 |f|`` pixels) or the flow leaves the image: occlusions, disocclusions, new
      content at the border and badly tracked pixels;
    * ``c_depth = exp(-(r / depth_tolerance)^2 / 2)`` with ``r = W_t - D_t`` (after the affine correction
      below): moving objects whose depth changes and any remaining tracking error keep the current frame.

    **Affine correction** (``affine=True``): the carried history is first mapped by one least-squares
    scale and shift onto the current frame over the flow-confident pixels (three robust steps), so a
    change of the whole frame's level (a dolly shot: every depth changes with the camera's travel) is
    followed at once; only the non-affine frame-to-frame changes are averaged out. Off by default: on
    co-aligned clips it also passes the remaining per-frame level jitter through, and measured worse on
    every trajectory type (docs/results.md).

    For independent noise of standard deviation ``s`` on a static scene (``c = 1``), the steady-state output
    has noise ``s * sqrt((1 - k) / (1 + k))`` and frame-to-frame changes ``(1 - k) / sqrt(1 + k)`` times
    those of the input (``k = 0.5``: 0.41).

    Args:
        strength: ``k`` for fully confident pixels, in [0, 1): 0 = no smoothing; larger = smoother; a
            forward pass lags changes by about ``k / (1 - k)`` frames (the bidirectional mode cancels that
            for steady changes, see :func:`smooth_clip`).
        depth_tolerance: scale of ``c_depth`` in the units of the depth maps (> 0); the clip is filtered in
            its normalised [0, 1] form, so 0.2 means 20% of the clip's depth range.
        affine: correct the carried history by one scale and shift per frame (see above).
        min_confident: fraction of flow-confident pixels below which a frame is not smoothed at all
            (a cut, or a flow failure), in [0, 1].
        flow_tolerance: base of the forward-backward flow check in pixels (> 0).
    Raises:
        ValueError: a parameter out of range or not a number (None, a string).
    """

    def __init__(
        self,
        strength: float = 0.95,
        depth_tolerance: float = 0.2,
        affine: bool = False,
        min_confident: float = 0.05,
        flow_tolerance: float = 1.5,
    ):
        strength = _number(strength, "smoothing strength must be a number in [0, 1)")
        flow_tolerance = _number(flow_tolerance, "flow_tolerance must be a positive number of pixels")
        if not flow_tolerance > 0.0 or not np.isfinite(flow_tolerance):
            raise ValueError(f"flow_tolerance must be a positive number of pixels, got {flow_tolerance}")
        depth_tolerance = _number(depth_tolerance, "depth_tolerance must be a positive number")
        min_confident = _number(min_confident, "min_confident must be a number in [0, 1]")
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"smoothing strength must be in [0, 1), got {strength}")
        if not depth_tolerance > 0.0 or not np.isfinite(depth_tolerance):
            raise ValueError(f"depth_tolerance must be a positive number, got {depth_tolerance}")
        if not 0.0 <= min_confident <= 1.0:
            raise ValueError(f"min_confident must be in [0, 1], got {min_confident}")
        self.strength = strength
        self.depth_tolerance = depth_tolerance
        self.affine = bool(affine)
        self.min_confident = min_confident
        self.flow_tolerance = flow_tolerance
        self.reset()

    def reset(self) -> None:
        """Forget the history (the next frame is passed through unchanged)."""
        self._prev: np.ndarray | None = None
        self.last_weight: np.ndarray | None = None

    def step(
        self,
        depth: np.ndarray,
        flow_to_prev: np.ndarray | None = None,
        flow_from_prev: np.ndarray | None = None,
        offset: float = 0.0,
    ) -> np.ndarray:
        """Filter the next frame.

        Args:
            depth: (H, W) float depth of this frame (co-aligned with the previous ones).
            flow_to_prev: (H, W, 2) float flow from this frame to the previous one, in pixels (x, y):
                pixel ``p`` of this frame shows what pixel ``p + flow_to_prev[p]`` of the previous frame showed.
            flow_from_prev: (H, W, 2) flow from the previous frame to this one (for the consistency check).
                Both ``None``: a static camera (each pixel is paired with itself, no flow check). NaN flow
                (what :class:`CoAligner` keeps at a cut) tracks nothing: the frame is passed through.
            offset: depth change of a static point from the previous frame to this one, added to the carried
                history (the camera's travel along its axis, see :meth:`CoAligner.travel_shift`); 0 = none.
        Returns:
            float32 (H, W) filtered depth; ``last_weight`` holds the per-pixel weight ``k`` of the history.
        Raises:
            ValueError: shapes that do not match, or only one of the two flows.
        """
        d = np.asarray(depth, dtype=np.float32)
        if d.ndim != 2:
            raise ValueError(f"depth must be (H, W), got {d.shape}")
        if (flow_to_prev is None) != (flow_from_prev is None):
            raise ValueError("give both flows (to and from the previous frame) or neither")
        if self._prev is None or self.strength == 0.0:
            self._prev = d.copy()
            self.last_weight = np.zeros_like(d)
            return self._prev.copy()
        if self._prev.shape != d.shape:
            raise ValueError(f"frame size changed from {self._prev.shape} to {d.shape}")
        h, w = d.shape
        if flow_to_prev is None:
            warped, ok = self._prev, np.ones((h, w), bool)
        else:
            back = np.asarray(flow_to_prev, dtype=np.float32)
            fwd = np.asarray(flow_from_prev, dtype=np.float32)
            if back.shape != (h, w, 2) or fwd.shape != (h, w, 2):
                raise ValueError(f"flows must be (H, W, 2) = {(h, w, 2)}, got {back.shape} and {fwd.shape}")
            uu, vv = _identity_grid(h, w)
            u, v = uu + back[..., 0], vv + back[..., 1]
            inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
            there = _remap(fwd, u, v)
            err = np.hypot(back[..., 0] + there[..., 0], back[..., 1] + there[..., 1])
            ok = inside & (err < self.flow_tolerance + 0.05 * np.hypot(back[..., 0], back[..., 1]))
            warped = _remap(self._prev, u, v)
        if offset:
            warped = warped + np.float32(offset)
        ok &= np.isfinite(warped) & np.isfinite(d)
        weight = np.zeros((h, w), np.float32)
        if ok.mean() >= max(self.min_confident, 1e-9):
            if self.affine:
                warped = self._match(warped, d, ok)
            r = warped - d
            weight = np.where(ok, self.strength * np.exp(-0.5 * (r / self.depth_tolerance) ** 2), 0.0)
            weight = weight.astype(np.float32)
        out = np.where(weight > 0, (1.0 - weight) * d + weight * np.where(ok, warped, 0.0), d).astype(np.float32)
        self._prev = out
        self.last_weight = weight
        return out.copy()

    def _match(self, warped: np.ndarray, d: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """``s * warped + b`` fitted to ``d`` over ``ok`` by weighted least squares (two robust steps);
        scales outside [0.5, 2] (a degenerate fit) leave ``warped`` as it is."""
        x = warped[ok].astype(np.float64)
        y = d[ok].astype(np.float64)
        if x.size < 16 or np.ptp(x) <= 1e-9:
            return warped
        wt = np.ones_like(x)
        s, b = 1.0, 0.0
        for _ in range(3):
            sw = wt.sum()
            mx, my = (wt * x).sum() / sw, (wt * y).sum() / sw
            vx = (wt * (x - mx) ** 2).sum()
            if vx <= 1e-12:
                return warped
            s = float((wt * (x - mx) * (y - my)).sum() / vx)
            b = float(my - s * mx)
            r = s * x + b - y
            wt = np.exp(-0.5 * (r / self.depth_tolerance) ** 2)
            if wt.sum() < 16:
                return warped
        if not 0.5 <= s <= 2.0:
            return warped
        return (s * warped + b).astype(np.float32)


def smooth_clip(
    num_frames: int,
    frame,
    flows,
    mode: str = "bidirectional",
    make_store=None,
    offsets=None,
    **filter_args,
):
    """Run :class:`FlowTemporalFilter` over a clip; yields the smoothed frames in order (float32 (H, W)).

    Args:
        num_frames: T.
        frame: ``frame(t)`` -> (H, W) co-aligned depth of frame ``t`` (random access; the backward pass reads
            the clip from its end).
        flows: ``flows(t)`` -> ``(f_t-1->t, f_t->t-1)``, the two (H, W, 2) flows between frames ``t - 1`` and
            ``t`` (t >= 1), or ``None`` for a static camera.
        mode: ``"forward"`` (causal: each frame sees only the past; lags by about k / (1 - k) frames) or
            ``"bidirectional"`` (the mean of a forward and a backward pass: no lag, smoother); ``"none"``.
        make_store: for ``"bidirectional"``, a factory returning a store with ``append(frame)`` and
            ``get(k)`` (the k-th appended frame) for the backward pass's T frames (in memory by default; a
            disk spill keeps memory constant).
        offsets: ``offsets(t)`` -> depth change of a static point from frame ``t - 1`` to frame ``t`` (t >= 1),
            e.g. the camera's travel (:meth:`CoAligner.travel_shift`); ``None`` = 0. The backward pass uses
            its negative.
        filter_args: :class:`FlowTemporalFilter` arguments.
    Raises:
        ValueError: unknown ``mode`` or bad filter arguments.
    """
    if mode not in SMOOTHING_MODES:
        raise ValueError(f"temporal smoothing must be one of {SMOOTHING_MODES}, got {mode!r}")
    filt = FlowTemporalFilter(**filter_args)  # validates before any frame is read
    return _smooth(num_frames, frame, flows, mode, make_store, filt, filter_args, offsets)


def _smooth(num_frames, frame, flows, mode, make_store, filt, filter_args, offsets=None):
    def off(t):
        return 0.0 if offsets is None else float(offsets(t))

    if mode == "none":
        for t in range(num_frames):
            yield np.asarray(frame(t), np.float32)
        return
    backward = None
    if mode == "bidirectional":
        backward = make_store() if make_store is not None else _ListStore()
        bfilt = FlowTemporalFilter(**filter_args)
        for t in range(num_frames - 1, -1, -1):  # stored in this order: frame t is entry T - 1 - t
            f = flows(t + 1) if t + 1 < num_frames else None
            # backward in time the "previous" frame is t + 1: the flow to it is f_t->t+1, from it f_t+1->t
            back_off = -off(t + 1) if t + 1 < num_frames else 0.0
            backward.append(bfilt.step(frame(t), *(f if f is not None else (None, None)), offset=back_off))
    for t in range(num_frames):
        f = flows(t) if t > 0 else None
        fwd = filt.step(frame(t), *((f[1], f[0]) if f is not None else (None, None)), offset=off(t) if t > 0 else 0.0)
        yield fwd if backward is None else 0.5 * (fwd + np.asarray(backward.get(num_frames - 1 - t), np.float32))


class _ListStore:
    def __init__(self):
        self._items = []

    def append(self, x):
        self._items.append(x)

    def get(self, t):
        return self._items[t]
