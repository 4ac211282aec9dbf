"""Reading and writing video: decoding clips and frame folders, encoding depth videos, float stacks.

Decoding and encoding use PyAV (FFmpeg bindings; ``pip install "apdepth[video]"``). Frames come out as
RGB ``uint8`` (H, W, 3) with their presentation time in seconds:

* **rotation** metadata (phone clips store portrait video as landscape plus a display matrix) is
  applied, so frames are upright, as players show them;
* **variable frame rate** clips keep their timing: every frame carries its own timestamp and
  :class:`VideoWriter` writes the output frames at the same timestamps; the reported ``fps`` is the
  average rate;
* **audio** and subtitle streams are ignored;
* a file that is not a readable video (missing, empty, corrupt, truncated before the first frame, no
  video stream) raises :class:`VideoReadError` with one message naming the file.

A folder of frames (``apdepth predict FOLDER --video``) is read in natural order (``f2`` before
``f10``) at a frame rate given by the caller; all frames must share one size.

Output writers: :class:`VideoWriter` (H.264 ``.mp4``, or any container/codec FFmpeg has),
:class:`StackWriter` (a float32 (T, H, W) ``.npy`` or ``.npz`` written frame by frame in constant
memory). Every file is written under a temporary name and renamed when complete, like all outputs of
this project (:func:`apdepth.image_io.atomic_write`).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

VIDEO_EXTENSIONS = (
    ".mp4",
    ".mov",
    ".m4v",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ts",
    ".mts",
    ".3gp",
)
_TIME_BASE = Fraction(1, 90000)  # MPEG's 90 kHz clock: exact for 24/25/30/60 and NTSC rates


class VideoReadError(ValueError):
    """An input is not a readable video (or frame folder); the message names the file and the reason."""


def is_video_file(path: str | os.PathLike) -> bool:
    """True when the file name has one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _require_av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('video support needs PyAV: pip install "apdepth[video]"') from err
    return av


@dataclass
class VideoInfo:
    """What is known about a clip before decoding it all.

    ``width``/``height`` are the upright (display) size in pixels, after rotation; ``fps`` the average
    frame rate in frames/s; ``num_frames`` the container's frame count (an estimate for some formats,
    ``None`` when unknown); ``rotation`` the display rotation in degrees counter-clockwise (0, 90, 180,
    270) that decoding applies; ``duration_s`` the duration in seconds (``None`` when unknown).
    """

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int | None
    rotation: int = 0
    duration_s: float | None = None


@dataclass
class Frame:
    """One decoded frame: ``rgb`` uint8 (H, W, 3), upright; ``time_s`` its presentation time in seconds
    from the first frame; ``index`` its position in the clip (0-based)."""

    rgb: np.ndarray
    time_s: float
    index: int


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


class VideoSource:
    """A clip file or a folder of frames, decodable any number of times (the video pipeline reads it twice).

    Args:
        path: a video file (any container/codec FFmpeg reads) or a folder of images.
        fps: frame rate for a frame folder (frames/s, default 30); ignored for video files, whose own
            timing is used.
        max_frames: read at most this many frames (``None`` = all).
    Raises:
        VideoReadError: the path does not exist, is empty, is not a video, has no video stream, or (for a
            folder) has no images or images of different sizes.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None):
        self.path = Path(path)
        self.max_frames = max_frames
        if max_frames is not None and max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.is_folder = self.path.is_dir()
        if self.is_folder:
            self._files = self._folder_files()
            from apdepth.image_io import ImageReadError, read_image

            try:
                first = read_image(self._files[0])
            except ImageReadError as err:
                raise VideoReadError(str(err)) from err
            n = len(self._files) if max_frames is None else min(len(self._files), max_frames)
            rate = 30.0 if fps is None else float(fps)
            self.info = VideoInfo(self.path, first.shape[1], first.shape[0], rate, n, 0, n / rate)
        else:
            self.info = self._probe()

    # ------------------------------------------------------------------ frame folders

    def _folder_files(self) -> list[Path]:
        from apdepth.image_io import IMAGE_EXTENSIONS

        files = sorted(
            (
                p
                for p in self.path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            ),
            key=_natural_key,
        )
        if not files:
            raise VideoReadError(f"{self.path}: folder contains no image frames ({', '.join(IMAGE_EXTENSIONS)})")
        return files

    def _folder_frames(self) -> Iterator[Frame]:
        from apdepth.image_io import ImageReadError, read_image

        size = (self.info.height, self.info.width)
        for i, f in enumerate(self._files[: self.info.num_frames]):
            try:
                rgb = read_image(f)
            except ImageReadError as err:
                raise VideoReadError(f"{self.path}: frame {i}: {err}") from err
            if rgb.shape[:2] != size:
                raise VideoReadError(
                    f"{self.path}: frame {i} ({f.name}) is {rgb.shape[1]}x{rgb.shape[0]}, the first frame is "
                    f"{size[1]}x{size[0]}; all frames of a video must share one size"
                )
            yield Frame(np.round(rgb * 255.0).astype(np.uint8), i / self.info.fps, i)

    # ------------------------------------------------------------------ video files

    def _open(self):
        av = _require_av()
        try:
            size = self.path.stat().st_size
        except OSError as err:
            raise VideoReadError(f"{self.path}: cannot read file ({err.strerror or err})") from err
        if size == 0:
            raise VideoReadError(f"{self.path}: file is empty (0 bytes)")
        try:
            container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
            raise VideoReadError(f"{self.path}: not a readable video ({_reason(err)})") from err
        if not container.streams.video:
            container.close()
            raise VideoReadError(f"{self.path}: contains no video stream")
        return container

    def _probe(self) -> VideoInfo:
        with contextlib.closing(self._open()) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            n = int(stream.frames) or None
            duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            if duration is None and container.duration:
                duration = container.duration / 1_000_000  # AV_TIME_BASE
            # Decode the first frame: it proves the file decodes and gives the rotation and upright size.
            try:
                first = next(container.decode(stream))
            except StopIteration:
                raise VideoReadError(f"{self.path}: contains no decodable video frames") from None
            except (_require_av().FFmpegError, ValueError) as err:
                raise VideoReadError(
                    f"{self.path}: corrupt video, the first frame does not decode ({_reason(err)})"
                ) from err
            rotation = _rotation(first)
            w, h = first.width, first.height
            if rotation in (90, 270):
                w, h = h, w
            fps = float(rate) if rate else (n / duration if n and duration else 30.0)
        if self.max_frames is not None and n is not None:
            n = min(n, self.max_frames)
        return VideoInfo(self.path, w, h, fps, n, rotation, duration)

    def _video_frames(self) -> Iterator[Frame]:
        av = _require_av()
        with contextlib.closing(self._open()) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t0 = None
            i = 0
            try:
                for frame in container.decode(stream):
                    if self.max_frames is not None and i >= self.max_frames:
                        break
                    t = frame.time if frame.time is not None else i / self.info.fps
                    t0 = t if t0 is None else t0
                    rgb = frame.to_ndarray(format="rgb24")
                    k = _rotation(frame) // 90
                    if k:
                        rgb = np.ascontiguousarray(np.rot90(rgb, k=k))
                    yield Frame(rgb, float(t - t0), i)
                    i += 1
            except (av.FFmpegError, ValueError) as err:
                raise VideoReadError(
                    f"{self.path}: corrupt video, decoding failed after {i} frames ({_reason(err)})"
                ) from err
            if i == 0:
                raise VideoReadError(f"{self.path}: contains no decodable video frames")

    def frames(self) -> Iterator[Frame]:
        """Decode the frames in order, upright, as :class:`Frame` objects (one at a time: constant memory).

        Raises :class:`VideoReadError` if decoding fails part-way (a truncated or corrupt file)."""
        return self._folder_frames() if self.is_folder else self._video_frames()


def _rotation(frame) -> int:
    """Display rotation of a decoded frame in degrees counter-clockwise, one of 0/90/180/270."""
    try:
        r = frame.rotation or 0
    except (AttributeError, ValueError):
        r = 0
    return int(round(r / 90.0)) % 4 * 90


def _reason(err: BaseException) -> str:
    msg = getattr(err, "strerror", None) or str(err)
    return msg.split(": '", 1)[0].strip() or type(err).__name__


def read_video(
    path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None
) -> tuple[np.ndarray, np.ndarray, VideoInfo]:
    """Decode a whole clip (or frame folder) into memory.

    Returns ``(frames, times, info)``: frames uint8 (T, H, W, 3) upright RGB, times float64 (T,) in
    seconds from the first frame, and the :class:`VideoInfo`. For long clips prefer
    :meth:`VideoSource.frames`, which streams. Raises :class:`VideoReadError` for unreadable inputs.
    """
    src = VideoSource(path, fps=fps, max_frames=max_frames)
    frames, times = [], []
    for f in src.frames():
        frames.append(f.rgb)
        times.append(f.time_s)
    return np.stack(frames), np.asarray(times, dtype=np.float64), src.info


# ---------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _atomic_path(path: Path):
    """A temporary path next to ``path`` with the same suffix, renamed to ``path`` on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class VideoWriter:
    """Encode RGB uint8 frames into a video file (default H.264 in MP4, ``crf`` 18: visually lossless).

    Frames are written at the timestamps given (so a variable-frame-rate input keeps its timing) or, without
    timestamps, at ``fps``. Odd widths/heights are padded by one replicated row/column, as 4:2:0 chroma
    needs even sizes. The file appears under its name only after :meth:`close` (use as a context manager).

    Args:
        path: output file; the container follows the suffix (``.mp4``, ``.mkv``, ``.webm`` ...).
        fps: nominal frame rate in frames/s (> 0).
        codec: FFmpeg encoder name (default ``libx264``; ``libvpx-vp9`` for ``.webm``).
    """

    def __init__(self, path: str | os.PathLike, fps: float, codec: str | None = None, crf: int = 18):
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.codec = codec or ("libvpx-vp9" if self.path.suffix.lower() == ".webm" else "libx264")
        self.crf = crf
        self._ctx = None
        self._container = self._stream = None
        self._size = None
        self._last_pts = -1
        self.frames_written = 0

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(abort=exc_type is not None)

    def _start(self, h: int, w: int) -> None:
        av = _require_av()
        self._ctx = _atomic_path(self.path)
        tmp = self._ctx.__enter__()
        fmt = {".mkv": "matroska", ".m4v": "mp4", ".mov": "mov"}.get(
            self.path.suffix.lower(), self.path.suffix.lower().lstrip(".") or "mp4"
        )
        self._container = av.open(str(tmp), mode="w", format=fmt)
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream(self.codec, rate=rate)
        self._stream.width, self._stream.height = w + w % 2, h + h % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = _TIME_BASE
        self._stream.time_base = _TIME_BASE
        self._stream.options = {"crf": str(self.crf)}
        self._size = (h, w)

    def write(self, rgb: np.ndarray, time_s: float | None = None) -> None:
        """Append one frame: uint8 (H, W, 3); ``time_s`` its time in seconds (default ``index / fps``).
        All frames must share the first frame's size; times must increase."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"frames must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        if self._container is None:
            self._start(*rgb.shape[:2])
        if rgb.shape[:2] != self._size:
            raise ValueError(f"frame {self.frames_written} is {rgb.shape[:2]}, the first frame was {self._size}")
        h, w = self._size
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        av = _require_av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        t = self.frames_written / self.fps if time_s is None else float(time_s)
        pts = max(int(round(t / _TIME_BASE)), self._last_pts + 1)
        frame.pts, frame.time_base = pts, _TIME_BASE
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self, abort: bool = False) -> None:
        """Flush the encoder and move the file into place (or delete it with ``abort=True``)."""
        if self._container is None:
            return
        try:
            if not abort:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        except BaseException:
            self._ctx.__exit__(*__import__("sys").exc_info())
            raise
        finally:
            self._container = None
        if abort:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        else:
            self._ctx.__exit__(None, None, None)


class StackWriter:
    """Write a float32 (T, H, W) array frame by frame, in constant memory, as ``.npy`` or ``.npz``.

    ``np.load`` reads the result; in a ``.npz`` the array is named ``depth``. The frame count need not be
    known in advance: frames go to a temporary raw file first and are copied behind the header at
    :meth:`close` (the ``.npz`` is zip-deflated). Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, key: str = "depth"):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".npy", ".npz"):
            raise ValueError(f"stack files are .npy or .npz, got {self.path.name}")
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._raw = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".stack.raw", dir=self.path.parent)
        self._fh = os.fdopen(fd, "wb")
        self._shape = None
        self.frames_written = 0

    def __enter__(self) -> "StackWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(abort=exc_type is not None)

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W) frame (stored as float32)."""
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        if frame.ndim != 2:
            raise ValueError(f"stack frames must be (H, W), got {frame.shape}")
        if self._shape is None:
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise ValueError(f"frame {self.frames_written} is {frame.shape}, the first was {self._shape}")
        self._fh.write(frame.astype("<f4", copy=False).tobytes())
        self.frames_written += 1

    def close(self, abort: bool = False) -> None:
        """Finish the stack file; ``abort=True`` removes it instead."""
        if self._fh is None:
            return
        self._fh.close()
        self._fh = None
        try:
            if not abort and self._shape is not None:
                self._finish()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._raw)

    def _finish(self) -> None:
        from apdepth.image_io import atomic_write

        header = {"descr": "<f4", "fortran_order": False, "shape": (self.frames_written, *self._shape)}

        def copy_into(out) -> None:
            np.lib.format.write_array_header_1_0(out, header) if _header_fits_v1(
                header
            ) else np.lib.format.write_array_header_2_0(out, header)
            with open(self._raw, "rb") as src:
                while chunk := src.read(1 << 22):
                    out.write(chunk)

        with atomic_write(self.path) as fh:
            if self.path.suffix.lower() == ".npy":
                copy_into(fh)
            else:
                with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                    with zf.open(f"{self.key}.npy", "w", force_zip64=True) as member:
                        copy_into(member)


def remove_stale_video_temps(paths) -> list[Path]:
    """Delete temporary files that an interrupted (killed) run left for the output files ``paths``: the
    ``.<stem>.<random>.tmp<suffix>`` of :class:`VideoWriter`, ``.<stem>.<random>.stack.raw`` of
    :class:`StackWriter` and ``.<stem>.<random>.spill.raw`` of the video pipeline's spill. Only those exact
    forms, only in the folders of ``paths``; call it before writing them, never while another process does."""
    import re

    removed = []
    for p in paths:
        p = Path(p)
        pattern = re.compile(
            re.escape(f".{p.stem}.")
            + r"[A-Za-z0-9_]+"
            + r"(\.spill\.raw|\.stack\.raw|"
            + re.escape(f".tmp{p.suffix}")
            + ")$"
        )
        try:
            entries = os.listdir(p.parent)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if pattern.match(entry):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p.parent / entry)
                    removed.append(p.parent / entry)
    return removed


def _header_fits_v1(header: dict) -> bool:
    return len(repr(header)) < 60000
