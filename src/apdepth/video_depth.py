"""Depth for video: per-frame predictions, co-aligned into one temporally consistent clip.

Two passes over the clip, in constant memory whatever its length:

1. **depth pass**: frames are decoded and run through the pipeline in windows of ``batch_size`` at the
   processing resolution; each raw prediction is spilled to a temporary file on disk and, for the
   co-alignment, paired with the previous frames (optical flow at processing resolution, see
   :mod:`apdepth.temporal`);
2. **write pass**: one scale and shift per frame from the global co-alignment, then ONE affine map for the
   whole clip into [0, 1]; frames are upsampled back to the input size and written (depth video, side by
   side, float stack, 16-bit PNGs), decoding the input a second time for the side-by-side view.

Python: :func:`predict_video` (also ``ApDepthPipeline.predict_video``) returns the whole clip in memory;
:func:`process_video` streams to files, as ``apdepth predict clip.mp4`` does. With ``consistent=False``
each frame keeps its own [0, 1] normalisation (the naive per-frame output).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from apdepth.temporal import DEFAULT_GAPS, SMOOTHING_MODES, CoAligner, FlowTemporalFilter, normalise_clip, smooth_clip
from apdepth.video import Frame, VideoReadError, VideoSource


@dataclass
class VideoDepthOutput:
    """A clip's depth.

    depth: float32 (T, H, W) in [0, 1], 0 = near, 1 = far; with ``consistent=True`` ONE affine map
        relates the whole clip to true depth (unknown, as for single images), else one per frame.
    times: float64 (T,) presentation time of each frame in seconds from the first.
    scale, shift: float64 (T,) the co-alignment: frame ``t``'s raw prediction ``d_t`` became
        ``(scale[t] * d_t + shift[t] - lo) / (hi - lo)`` with ``(lo, hi) = clip_range`` (before the temporal
        filter, when ``stats["smoothing"]`` is not ``"none"``); ``shift`` includes ``stats["travel"]``.
    clip_range: the clip-wide normalisation ``(lo, hi)``.
    fps: the clip's average frame rate in frames/s.
    stats: ``seconds``, ``frames_per_s``, ``smoothing`` (the temporal filter's mode) and ``travel``: float64 (T,),
        the part of ``shift`` that is the camera's estimated travel along its axis (zeros without the travel
        correction; ``-travel[t] / (hi - lo)`` is the distance travelled since the first frame, in the output's
        units).
    per_frame: with ``output_per_frame=True``, the naive per-frame output (T, H, W) of the same model
        pass (each frame's own [0, 1] normalisation); else ``None``.
    """

    depth: np.ndarray
    times: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    clip_range: tuple[float, float]
    fps: float
    stats: dict = field(default_factory=dict)
    per_frame: np.ndarray | None = None


class _Spill:
    """Raw per-frame predictions (h, w) float32, kept in memory or spilled to a file in ``folder``."""

    def __init__(self, folder: str | os.PathLike | None, name: str = "clip"):
        self._frames: list[np.ndarray] = []
        self._fh = None
        self._path = None
        self._shape = None
        self._map = None
        self.count = 0
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            fd, self._path = tempfile.mkstemp(prefix=f".{name}.", suffix=".spill.raw", dir=folder)
            self._fh = os.fdopen(fd, "w+b")

    def append(self, d: np.ndarray) -> None:
        d = np.ascontiguousarray(d, dtype=np.float32)
        self._shape = d.shape
        if self._fh is None:
            self._frames.append(d)
        else:
            self._fh.write(d.tobytes())
        self.count += 1

    def frames(self) -> Iterator[np.ndarray]:
        if self._fh is None:
            yield from self._frames
            return
        self._fh.flush()
        if self.count:
            mm = np.memmap(self._path, dtype=np.float32, mode="r", shape=(self.count, *self._shape))
            for t in range(self.count):
                yield np.array(mm[t])
            del mm

    def get(self, t: int) -> np.ndarray:
        """The ``t``-th appended array (random access; reading a spill file maps it once)."""
        if self._fh is None:
            return self._frames[t]
        if self._map is None or len(self._map) != self.count:
            self._fh.flush()
            self._map = np.memmap(self._path, dtype=np.float32, mode="r", shape=(self.count, *self._shape))
        return np.array(self._map[t])

    def close(self) -> None:
        self._map = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        self._frames = []


def _gray(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (h, w) grey image at ``size`` = (h, w), for optical flow."""
    import cv2

    small = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


def _upsample(d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (h, w) to ``size``, as the pipeline resizes its outputs."""
    if d.shape == tuple(size):
        return d
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def _batches(frames: Iterable[Frame], n: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for f in frames:
        batch.append(f)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _depth_pass(
    pipe,
    frames: Iterable[Frame],
    spill: _Spill,
    *,
    processing_resolution,
    batch_size,
    consistent,
    flow,
    gaps,
    progress=None,
    flow_spill: _Spill | None = None,
    travel_correction: bool = True,
):
    """Pass 1: raw predictions at processing resolution into ``spill``; correspondences into a CoAligner;
    with ``flow_spill``, the flows between neighbouring frames (for the temporal filter) into it. Returns
    ``(times, a, c, (lo, hi), size, travel)``: ``travel`` (T,) is the part of the shift ``c`` that is the
    camera's estimated travel along its axis (zeros without it), see :func:`_coalign`."""
    aligner = None
    if consistent:
        if flow == "dis":
            try:
                import cv2  # noqa: F401
            except ImportError as err:
                raise ImportError(
                    'consistent video depth with flow="dis" needs OpenCV: pip install "apdepth[video]"'
                ) from err
        aligner = CoAligner(gaps=gaps, flow=flow, keep_flows=flow_spill is not None)
    times: list[float] = []
    size = None
    for batch in _batches(frames, batch_size):
        out = pipe(
            [f.rgb for f in batch],
            processing_resolution=processing_resolution,
            match_input_resolution=False,
            batch_size=batch_size,
        )
        for f, d in zip(batch, out.depth):
            d = np.asarray(d, dtype=np.float32)
            size = f.rgb.shape[:2]
            spill.append(d)
            times.append(f.time_s)
            if aligner is not None:
                aligner.add_frame(d, _gray(f.rgb, d.shape) if flow == "dis" else None)
                if flow_spill is not None and aligner.last_flows is not None:
                    flow_spill.append(np.stack(aligner.last_flows))
        if progress is not None:
            progress(len(batch))
    if not times:
        raise VideoReadError("the clip has no frames")
    n = len(times)
    if aligner is None:
        a, c, lo, hi, travel = np.ones(n), np.zeros(n), 0.0, 1.0, np.zeros(n)
    else:
        a, c, (lo, hi), travel = _coalign(aligner, travel_correction)
    return np.asarray(times), a, c, (lo, hi), size, travel


def _coalign(aligner: CoAligner, travel_correction: bool):
    """Solve the co-alignment; with ``travel_correction`` (and flow pairs) add the camera's travel along its
    axis to the shifts (:meth:`~apdepth.temporal.CoAligner.travel_shift`). Returns ``a, c, (lo, hi), travel``."""
    a, c = aligner.solve()
    travel = aligner.travel_shift(a, c) if travel_correction else np.zeros(len(a))
    c = c + travel
    lo, hi = normalise_clip(np.asarray(aligner.depth_min), np.asarray(aligner.depth_max), a, c)
    return a, c, (lo, hi), travel


def _finish(d: np.ndarray, a: float, c: float, lo: float, hi: float, size) -> np.ndarray:
    out = (a * d.astype(np.float64) + c - lo) / (hi - lo)
    return np.clip(_upsample(out.astype(np.float32), size), 0.0, 1.0)


DEFAULT_SMOOTHING = "bidirectional"
DEFAULT_SMOOTHING_STRENGTH = 0.95

# Names of a clip's outputs: <stem> + suffix (see VideoOutputOptions).
RECORD_SUFFIX = "_video.json"
DEPTH_VIDEO_SUFFIX = "_depth.mp4"
SBS_VIDEO_SUFFIX = "_depth_sbs.mp4"


def check_smoothing(smoothing: str | None, strength: float, consistent: bool = True, gaps=DEFAULT_GAPS) -> str:
    """Validate the temporal-smoothing options of :func:`predict_video`; returns the mode (``None``: the
    default, :data:`DEFAULT_SMOOTHING` for the consistent clip and ``"none"`` with ``consistent=False``).

    Raises:
        ValueError: unknown mode, strength outside [0, 1), smoothing without co-alignment (``consistent=False``),
            or ``gaps`` without 1 (the filter follows neighbouring frames).
    """
    mode = (DEFAULT_SMOOTHING if consistent else "none") if smoothing is None else smoothing
    if mode not in SMOOTHING_MODES:
        raise ValueError(f"temporal smoothing must be one of {', '.join(SMOOTHING_MODES)}, got {smoothing!r}")
    FlowTemporalFilter(strength=strength)  # validates the strength
    if mode != "none" and not consistent:
        raise ValueError(
            "temporal smoothing works on the co-aligned clip; it cannot be combined with the naive per-frame "
            "output (consistent=False, --per-frame)"
        )
    if mode != "none" and 1 not in {int(g) for g in gaps}:
        raise ValueError("temporal smoothing needs neighbouring frames paired: 1 must be in gaps")
    return mode


def _output_frames(
    spill, flow_spill, a, c, lo, hi, size, mode, strength, folder, name, travel=None
) -> Iterator[np.ndarray]:
    """Pass 2's frames in order: co-aligned, one normalisation for the clip, optionally smoothed (at
    processing resolution; the carried history follows ``travel``, the camera's part of the shifts), then
    upsampled to ``size`` and clipped to [0, 1]."""
    if mode == "none":
        for t, d in enumerate(spill.frames()):
            yield _finish(d, a[t], c[t], lo, hi, size)
        return

    def frame(t):
        return ((a[t] * spill.get(t).astype(np.float64) + c[t] - lo) / (hi - lo)).astype(np.float32)

    def flows(t):
        if flow_spill is None or flow_spill.count == 0:
            return None
        f = flow_spill.get(t - 1)
        return f[0], f[1]

    steps = None if travel is None else np.diff(np.asarray(travel, np.float64), prepend=0.0) / (hi - lo)
    back = _Spill(folder, f"{name}.smooth") if mode == "bidirectional" else None
    try:
        for x in smooth_clip(
            spill.count,
            frame,
            flows,
            mode,
            make_store=lambda: back,
            offsets=None if steps is None else steps.__getitem__,
            strength=strength,
        ):
            yield np.clip(_upsample(x, size), 0.0, 1.0)
    finally:
        if back is not None:
            back.close()


def _frames_of(frames) -> tuple[Iterator[Frame] | None, VideoSource | None, float | None]:
    if isinstance(frames, (str, os.PathLike)):
        src = VideoSource(frames)
        return None, src, src.info.fps
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
            raise ValueError(f"a video array must be (T, H, W, 3), got {frames.shape}")
        seq = list(frames)
    else:
        seq = list(frames)
    if not seq:
        raise ValueError("no frames given")
    return (Frame(_as_uint8_rgb(im, k), float("nan"), k) for k, im in enumerate(seq)), None, None


def _as_uint8_rgb(im, k: int) -> np.ndarray:
    from PIL import Image

    if isinstance(im, Image.Image):
        im = np.asarray(im.convert("RGB"))
    a = np.asarray(im)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frame {k}: expected (H, W, 3), got {a.shape}")
    a = np.repeat(a, 3, axis=2) if a.shape[-1] == 1 else a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return (a.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"frame {k}: float frames must be finite, in [0, 1]; this one has NaN or inf values")
    if a.size and (np.nanmin(a) < -1e-3 or np.nanmax(a) > 1 + 1e-3):
        raise ValueError(f"frame {k}: float frames must be in [0, 1]; pass uint8 for 0..255 data")
    return (np.clip(a, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def predict_video(
    pipe,
    frames,
    processing_resolution: int | None = None,
    batch_size: int = 4,
    consistent: bool = True,
    flow: str | None = "dis",
    gaps=DEFAULT_GAPS,
    fps: float | None = None,
    output_per_frame: bool = False,
    smoothing: str | None = None,
    smoothing_strength: float = DEFAULT_SMOOTHING_STRENGTH,
    travel_correction: bool = True,
) -> VideoDepthOutput:
    """Temporally consistent depth for a clip, in memory.

    Args:
        pipe: an :class:`~apdepth.pipeline.ApDepthPipeline` (on the device you chose).
        frames: a video file or frame-folder path, a uint8/float (T, H, W, 3) array, or a list of frames
            (PIL, numpy (H, W[, 3]) uint8 or float in [0, 1]) of one size.
        processing_resolution: longer side the model runs at (``None`` = stored default).
        batch_size: frames per forward pass.
        consistent: co-align the frames (one scale/shift per frame from a global least-squares fit, then one
            normalisation for the clip); ``False`` = naive per-frame output.
        flow: ``"dis"`` (OpenCV optical flow pairs pixels between frames; for moving cameras) or ``None``
            (pixels paired with themselves; for a static camera).
        gaps: frame distances paired in the co-alignment.
        fps: frame rate of an array/list input (frames/s, default 30); files carry their own.
        output_per_frame: also return the naive per-frame output of the same model pass (``per_frame``).
        smoothing: flow-guided temporal filter on the co-aligned clip (:class:`~apdepth.temporal.FlowTemporalFilter`):
            ``"bidirectional"`` (mean of a forward and a backward recursive pass, no lag), ``"forward"``
            (causal) or ``"none"``; ``None`` = ``"bidirectional"`` for the consistent clip, ``"none"`` with
            ``consistent=False`` (an explicit mode needs ``consistent=True``).
        smoothing_strength: weight of the carried history for confidently tracked pixels, in [0, 1)
            (0 = no smoothing). Occluded, disoccluded and badly tracked pixels, and pixels whose depth changed,
            keep the current frame.
        travel_correction: with ``consistent=True`` and ``flow="dis"``, add the camera's travel along its
            optical axis, estimated from the flow (:meth:`~apdepth.temporal.CoAligner.travel_shift`): on a
            dolly or walk forward the depths of static points fall as they should, instead of staying
            constant. No effect on a static or only rotating camera.
    Returns:
        :class:`VideoDepthOutput` with ``depth`` float32 (T, H, W) in [0, 1], 0 = near.
    Raises:
        VideoReadError: unreadable video files; ValueError: bad arguments, frames of different sizes, or float
            frames outside [0, 1] or with NaN/inf values.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    mode = check_smoothing(smoothing, smoothing_strength, consistent, gaps)
    it, src, file_fps = _frames_of(frames)
    fps = file_fps or (30.0 if fps is None else float(fps))
    if it is None:
        it = src.frames()
    if src is None:
        it = _check_sizes(_retime(it, fps))
    spill = _Spill(None)
    flow_spill = _Spill(None) if mode != "none" and flow is not None else None
    try:
        t0 = time.perf_counter()
        times, a, c, (lo, hi), size, travel = _depth_pass(
            pipe,
            it,
            spill,
            processing_resolution=processing_resolution,
            batch_size=batch_size,
            consistent=consistent,
            flow=flow,
            gaps=gaps,
            flow_spill=flow_spill,
            travel_correction=travel_correction,
        )
        depth = np.stack(
            list(
                _output_frames(
                    spill, flow_spill, a, c, lo, hi, size, mode, smoothing_strength, None, "clip", travel=travel
                )
            )
        )
        naive = np.stack([_finish(d, 1.0, 0.0, 0.0, 1.0, size) for d in spill.frames()]) if output_per_frame else None
        elapsed = time.perf_counter() - t0
    finally:
        spill.close()
        if flow_spill is not None:
            flow_spill.close()
    stats = {
        "seconds": elapsed,
        "frames_per_s": len(times) / max(elapsed, 1e-9),
        "smoothing": mode,
        "travel": travel,
    }
    return VideoDepthOutput(depth, times, a, c, (lo, hi), fps, stats, naive)


def coalign_clip(
    raw: np.ndarray,
    frames: np.ndarray,
    flow: str | None = "dis",
    gaps=DEFAULT_GAPS,
    smoothing: str | None = None,
    smoothing_strength: float = DEFAULT_SMOOTHING_STRENGTH,
    output_smoothed: bool = False,
    travel_correction: bool = True,
) -> VideoDepthOutput | tuple[VideoDepthOutput, np.ndarray]:
    """The co-alignment step alone, on per-frame predictions already computed (what :func:`predict_video`
    does after the model): ``raw`` float (T, h, w) the pipeline's per-frame depth at processing resolution
    (``match_input_resolution=False``), ``frames`` uint8 (T, H, W, 3) the clip. Returns the consistent clip
    at the frames' size (``times`` are frame indices; ``fps`` is 0), smoothed as :func:`predict_video` does
    (same ``smoothing`` and ``travel_correction`` options and defaults). With ``output_smoothed=True``, returns
    ``(unsmoothed output, smoothed depth (T, H, W))`` from one co-alignment (for comparisons)."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 3 or len(raw) != len(frames):
        raise ValueError(f"raw must be (T, h, w) with one map per frame; got {raw.shape} for {len(frames)} frames")
    mode = check_smoothing(smoothing, smoothing_strength, True, gaps)
    aligner = CoAligner(gaps=gaps, flow=flow, keep_flows=mode != "none" and flow is not None)
    flow_spill = _Spill(None)
    for rgb, d in zip(frames, raw):
        aligner.add_frame(d, _gray(rgb, d.shape) if flow == "dis" else None)
        if aligner.last_flows is not None:
            flow_spill.append(np.stack(aligner.last_flows))
    a, c, (lo, hi), travel = _coalign(aligner, travel_correction)
    size = frames.shape[1:3]
    spill = _Spill(None)
    for d in raw:
        spill.append(d)
    plain = np.stack([_finish(d, a[t], c[t], lo, hi, size) for t, d in enumerate(raw)])
    stats = {"smoothing": "none", "travel": travel}
    out = VideoDepthOutput(plain, np.arange(len(raw), dtype=np.float64), a, c, (lo, hi), 0.0, stats)
    if mode == "none":
        return (out, plain) if output_smoothed else out
    smoothed = np.stack(
        list(
            _output_frames(spill, flow_spill, a, c, lo, hi, size, mode, smoothing_strength, None, "clip", travel=travel)
        )
    )
    if output_smoothed:
        return out, smoothed
    return VideoDepthOutput(smoothed, out.times, a, c, (lo, hi), 0.0, {"smoothing": mode, "travel": travel})


def _retime(frames: Iterator[Frame], fps: float) -> Iterator[Frame]:
    for f in frames:
        yield Frame(f.rgb, f.index / fps, f.index)


def _check_sizes(frames: Iterator[Frame]) -> Iterator[Frame]:
    size = None
    for f in frames:
        size = size or f.rgb.shape
        if f.rgb.shape != size:
            raise ValueError(
                f"frame {f.index} is {f.rgb.shape[:2]}, the first frame is {size[:2]}; frames must share one size"
            )
        yield f


# ---------------------------------------------------------------------------------------------- to files


@dataclass
class VideoOutputOptions:
    """What :func:`process_video` writes for a clip ``<stem>`` (all under ``out_dir``).

    color_map: colour map of ``<stem>_depth.mp4`` (``None``: no depth video).
    side_by_side: also ``<stem>_depth_sbs.mp4``, input and depth next to each other.
    stack: ``"npy"`` / ``"npz"``: ``<stem>_depth.npy`` / ``.npz`` (key ``depth``), float32 (T, H, W) in
        [0, 1], 0 = near; ``None``: none.
    png_frames: also ``<stem>_depth_frames/000000.png ...``, 16-bit grey PNGs (value = depth × 65535).
    """

    color_map: str | None = "Spectral"
    side_by_side: bool = False
    stack: str | None = "npy"
    png_frames: bool = False


def video_output_paths(out_dir: Path, stem: str, opts: VideoOutputOptions) -> list[Path]:
    """The files :func:`process_video` writes for ``stem`` (the PNG frame folder counts as one path)."""
    paths = [out_dir / f"{stem}{RECORD_SUFFIX}"]
    if opts.color_map:
        paths.append(out_dir / f"{stem}{DEPTH_VIDEO_SUFFIX}")
    if opts.side_by_side:
        paths.append(out_dir / f"{stem}{SBS_VIDEO_SUFFIX}")
    if opts.stack:
        paths.append(out_dir / f"{stem}_depth.{opts.stack}")
    if opts.png_frames:
        paths.append(out_dir / f"{stem}_depth_frames")
    return paths


def process_video(
    pipe,
    source: VideoSource,
    out_dir: str | os.PathLike,
    stem: str,
    opts: VideoOutputOptions | None = None,
    *,
    processing_resolution: int | None = None,
    batch_size: int = 4,
    consistent: bool = True,
    flow: str | None = "dis",
    gaps=DEFAULT_GAPS,
    show_progress: bool = True,
    smoothing: str | None = None,
    smoothing_strength: float = DEFAULT_SMOOTHING_STRENGTH,
    travel_correction: bool = True,
) -> dict:
    """Depth for one clip, streamed to files in constant memory (see :class:`VideoOutputOptions`).

    Raw predictions are spilled to a temporary file in ``out_dir`` (float32 at processing resolution, removed
    at the end; the temporary files of an earlier run that was killed are removed first). With ``smoothing``
    (see :func:`predict_video`) the flows between neighbouring frames are spilled too, and the bidirectional
    filter's backward pass. Writes ``<stem>_video.json`` last: frame count, size, fps, timings, per-frame
    scale/shift (the shift includes the camera's estimated travel, also recorded on its own), smoothing. Options as
    in :func:`predict_video`. Returns that record. Raises :class:`~apdepth.video.VideoReadError` for an
    unreadable clip (no partial output files are left behind then), ValueError for bad options.
    """
    mode = check_smoothing(smoothing, smoothing_strength, consistent, gaps)
    from tqdm import tqdm

    from apdepth.image_io import atomic_write, save_png, to_uint16_png_array
    from apdepth.video import StackWriter, VideoWriter
    from apdepth.visualize import colorize_depth

    opts = opts or VideoOutputOptions()
    out_dir = Path(out_dir)
    info = source.info
    total = info.num_frames
    from apdepth.video import remove_stale_video_temps

    # A killed earlier run (SIGKILL/SIGTERM skip clean-up) may have left its temporary files for these outputs.
    from apdepth.writer import remove_stale_temps, remove_stale_temps_in

    remove_stale_video_temps(
        [out_dir / f"{stem}{part}.spill" for part in ("", ".flow", ".smooth")] + video_output_paths(out_dir, stem, opts)
    )
    remove_stale_temps(video_output_paths(out_dir, stem, opts))
    if opts.png_frames:
        remove_stale_temps_in(out_dir / f"{stem}_depth_frames", ".png")
    spill = _Spill(out_dir, stem)
    flow_spill = _Spill(out_dir, f"{stem}.flow") if mode != "none" and flow is not None else None
    t_start = time.perf_counter()
    try:
        bar = tqdm(total=total, unit="frame", desc=f"{stem}: depth", disable=not show_progress, dynamic_ncols=True)

        def progress(k):
            bar.update(k)
            bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - t_start, 1e-9):.2f} frames/s")

        times, a, c, (lo, hi), size, travel = _depth_pass(
            pipe,
            source.frames(),
            spill,
            processing_resolution=processing_resolution,
            batch_size=batch_size,
            consistent=consistent,
            flow=flow,
            gaps=gaps,
            progress=progress,
            flow_spill=flow_spill,
            travel_correction=travel_correction,
        )
        bar.close()
        t_depth = time.perf_counter() - t_start
        n = len(times)

        with contextlib.ExitStack() as stack:
            depth_video = sbs_video = stack_writer = None
            if opts.color_map:
                depth_video = stack.enter_context(VideoWriter(out_dir / f"{stem}{DEPTH_VIDEO_SUFFIX}", info.fps))
            if opts.side_by_side:
                sbs_video = stack.enter_context(VideoWriter(out_dir / f"{stem}{SBS_VIDEO_SUFFIX}", info.fps))
            if opts.stack:
                stack_writer = stack.enter_context(StackWriter(out_dir / f"{stem}_depth.{opts.stack}"))
            png_dir = out_dir / f"{stem}_depth_frames"
            rgb_frames = source.frames() if sbs_video is not None else None
            wbar = tqdm(total=n, unit="frame", desc=f"{stem}: write", disable=not show_progress, dynamic_ncols=True)
            depths = _output_frames(
                spill, flow_spill, a, c, lo, hi, size, mode, smoothing_strength, out_dir, stem, travel=travel
            )
            for t, depth in enumerate(depths):
                colored = (
                    colorize_depth(depth, cmap=opts.color_map or "Spectral") if (depth_video or sbs_video) else None
                )
                if depth_video is not None:
                    depth_video.write(colored, times[t])
                if sbs_video is not None:
                    sbs_video.write(np.concatenate([next(rgb_frames).rgb, colored], axis=1), times[t])
                if stack_writer is not None:
                    stack_writer.write(depth)
                if opts.png_frames:
                    save_png(png_dir / f"{t:06d}.png", to_uint16_png_array(depth))
                wbar.update(1)
            wbar.close()
        elapsed = time.perf_counter() - t_start
        record = {
            "input": str(info.path),
            "frames": n,
            "width": int(size[1]),
            "height": int(size[0]),
            "fps": info.fps,
            "rotation": info.rotation,
            "duration_s": float(times[-1]) + 1.0 / info.fps,
            "consistent": consistent,
            "flow": flow if consistent else None,
            "temporal_smoothing": mode,
            "smoothing_strength": smoothing_strength if mode != "none" else None,
            "processing_size": list(spill._shape) if spill._shape else None,
            "seconds_depth_pass": round(t_depth, 3),
            "seconds_total": round(elapsed, 3),
            "frames_per_s": round(n / max(elapsed, 1e-9), 3),
            "clip_range": [lo, hi],
            "scale": [float(v) for v in a],
            "shift": [float(v) for v in c],
            "travel_correction": bool(travel_correction and consistent and flow is not None),
            "travel": [float(v) for v in travel],
        }
        with atomic_write(out_dir / f"{stem}{RECORD_SUFFIX}", "w") as fh:
            json.dump(record, fh, indent=1)
        return record
    finally:
        spill.close()
        if flow_spill is not None:
            flow_spill.close()
