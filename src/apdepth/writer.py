"""The one writer: every file ApDepth writes goes through this module.

* :func:`atomic_write` puts data in a hidden temporary file next to the target (``.<name>.<random>.tmp``) and
  renames it over the final name only once it is complete and flushed, so a killed run never leaves a
  half-written output under a visible name. The final file gets the mode an ordinary ``open()`` would give
  it (``0o666`` minus the process umask), not ``mkstemp``'s private ``0o600``.
* :func:`remove_stale_temps` deletes the hidden temporary files a killed run (``kill -9``, power loss) left
  behind; ``--skip-existing`` runs call it, and their "already done?" test only ever looks at final names.
* :func:`encode_png` is a small PNG encoder tuned for speed: the PNG "Up" filter on every row and zlib
  level 1. Measured on 1024×768 depth maps it writes 16-bit PNGs ~8× faster than Pillow's default and
  smaller (Up suits smooth depth); it is lossless, and any PNG reader reads the files (docs/benchmarks.md).
* :func:`save_depth_outputs` writes predict's three files and refuses non-finite depth
  (:class:`NonFiniteDepthError`) before anything is written.
* :class:`WriterPool` runs such writes in a bounded pool of threads, so encoding overlaps inference and
  memory stays flat however many images a run has.

``predict``, ``synth``, ``eval``'s prediction cache, training checkpoints and the demo all write through it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
# tEXt key marking the depth PNGs of ``save_depth_outputs``: a later ``apdepth predict`` over the same folder
# recognises them as its own outputs and never takes them as inputs.
OUTPUT_TEXT_KEY = "apdepth-output"
PNG_ZLIB_LEVEL = 1  # level 1 + the Up filter: 16-bit depth PNGs smaller than Pillow's level 6, ~8x faster
_PNG_FILTER_UP = 2


class NonFiniteDepthError(ValueError):
    """A depth map holds NaN or infinite values (e.g. NaN weights or fp16 overflow); nothing was written."""


def _proc_umask() -> int | None:
    """The umask as Linux reports it (no side effect); None where /proc does not say."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """Mode for new files: ``0o666`` minus the current umask, as a plain ``open()`` would create them."""
    mask = _proc_umask()
    if mask is None:  # elsewhere: set and restore (under a lock; the one way POSIX offers)
        with _UMASK_LOCK:
            mask = os.umask(0o077)
            os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a hidden temporary file next to ``path`` for writing (``mode`` "wb" or "w"); on success flush it,
    ``fsync`` it, give it the umask's mode and rename it to ``path``; on any error delete it and re-raise.
    Parent folders are created. Readers see either the old file or the complete new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), file_mode())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as fh:
        fh.write(data)


def temp_pattern(name: str) -> re.Pattern:
    """Regex matching the temporary files :func:`atomic_write` creates for a final file called ``name``."""
    return re.compile(re.escape(f"{TEMP_PREFIX}{name}.") + r"[A-Za-z0-9_]+" + re.escape(TEMP_SUFFIX) + "$")


def remove_stale_temps(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete temporary files left by an interrupted :func:`atomic_write` of any of ``paths`` (final file
    names); returns what was removed. Only names of the exact form ``.<name>.<random>.tmp`` are touched, and
    only in the folders of ``paths``: call it before writing those paths, never while another process does."""
    wanted: dict[Path, set[str]] = {}
    for p in paths:
        p = Path(p)
        wanted.setdefault(p.parent, set()).add(p.name)
    removed = []
    for folder, names in wanted.items():
        try:
            entries = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            m = _TEMP_NAME.match(entry)
            if m and m.group(1) in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(folder / entry)
                    removed.append(folder / entry)
    return removed


def remove_stale_temps_in(folder: str | os.PathLike, suffix: str) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` left in ``folder`` for any final name
    ending in ``suffix`` (e.g. the frames ``000123.png`` of a PNG frame folder, whose count is only known once
    the clip is decoded); returns what was removed. Same rules as :func:`remove_stale_temps`."""
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = [m.group(1) for m in map(_TEMP_NAME.match, entries) if m and m.group(1).endswith(suffix)]
    return remove_stale_temps(Path(folder) / n for n in names)


_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(.+)\.[A-Za-z0-9_]+" + re.escape(TEMP_SUFFIX) + "$")


# ---------------------------------------------------------------------------------------------------- PNG


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(
    array: np.ndarray, level: int = PNG_ZLIB_LEVEL, text: dict[str, str] | None = None, rle: bool = False
) -> bytes:
    """Encode a uint8 (H,W) grey, uint8 (H,W,3) RGB or uint16 (H,W) grey array as a lossless PNG.

    Every row uses the PNG "Up" filter (difference to the row above: small numbers on smooth images) and the
    data is deflated at zlib ``level`` (0-9; default 1, chosen for speed). ``rle=True`` restricts deflate to
    run lengths (zlib's ``Z_RLE`` strategy): on noisy photographs such as rendered RGB it is faster *and*
    smaller (256² synthetic scenes: 3.1 ms and 108 KB against 4.4 ms and 118 KB), on smooth depth it is worse.
    zlib runs without Python's GIL, so several writer threads encode in parallel. ``text`` becomes tEXt chunks
    (Latin-1 keys of 1-79 characters). Raises ValueError for other dtypes or shapes."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.dtype == np.uint16 and a.ndim == 2:
        raw = a.astype(">u2", copy=False).view(np.uint8).reshape(a.shape[0], -1)
        bit_depth, colour_type = 16, 0
    elif a.dtype == np.uint8 and a.ndim == 2:
        raw, bit_depth, colour_type = a, 8, 0
    elif a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3:
        raw, bit_depth, colour_type = a.reshape(a.shape[0], -1), 8, 2
    else:
        raise ValueError(f"PNG needs uint8 (H,W) or (H,W,3), or uint16 (H,W); got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"cannot write an empty image ({h}x{w}) as PNG")
    if not 0 <= level <= 9:
        raise ValueError(f"zlib level must be in 0..9, got {level}")
    rows = np.empty((h, raw.shape[1] + 1), np.uint8)
    rows[:, 0] = _PNG_FILTER_UP
    rows[0, 1:] = raw[0]  # the row above the first is zeros
    np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])  # byte-wise, modulo 256, as the PNG spec defines Up
    header = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    for key, value in (text or {}).items():
        if not 1 <= len(key) <= 79:
            raise ValueError(f"PNG text keys must have 1-79 characters, got {key!r}")
        chunks.append(_chunk(b"tEXt", key.encode("latin-1") + b"\0" + str(value).encode("latin-1")))
    if rle:
        deflate = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 8, zlib.Z_RLE)
        data = deflate.compress(rows.data) + deflate.flush()
    else:
        data = zlib.compress(rows.data, level)
    chunks += [_chunk(b"IDAT", data), _chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def save_png(path: str | os.PathLike, array: np.ndarray, text: dict[str, str] | None = None, rle: bool = False) -> None:
    """Write a uint8 (H,W[,3]) or uint16 (H,W) array as PNG (see :func:`encode_png`, also for ``rle``),
    atomically; ``text`` becomes tEXt chunks."""
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"save_png expects uint8 or uint16, got {array.dtype}")
    if array.dtype == np.uint16 and array.ndim != 2:
        raise ValueError("16-bit PNGs must be single-channel (H, W)")
    write_bytes(path, encode_png(array, text=text, rle=rle))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a .npy file atomically."""
    with atomic_write(path) as fh:
        np.save(fh, array)


# ---------------------------------------------------------------------------------------------------- depth


def to_uint16_png_array(depth01: np.ndarray) -> np.ndarray:
    """[0,1] depth -> uint16 array (value × 65535, rounded; values outside [0,1] clipped)."""
    scaled = np.clip(np.asarray(depth01, dtype=np.float32), 0.0, 1.0) * np.float32(65535.0)
    return np.rint(scaled, out=scaled).astype(np.uint16)


@functools.lru_cache(maxsize=16)
def _colour_lut(cmap: str) -> tuple[np.ndarray, int]:
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError as err:
        raise ValueError(f"unknown colour map {cmap!r}; any matplotlib colour map name works") from err
    lut = (cm(np.arange(cm.N))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    return lut, cm.N


def colour_depth01(depth01: np.ndarray, cmap: str = "Spectral") -> np.ndarray:
    """(H,W) depth in [0,1] -> (H,W,3) uint8 through a lookup table of the matplotlib colour map ``cmap``.

    Equal, value for value, to ``apdepth.visualize.colorize_depth(depth01, cmap)`` for finite depth (same
    quantisation into the colour map's N entries), about 20× faster. Non-finite pixels are black."""
    lut, n = _colour_lut(cmap)
    d = np.asarray(depth01, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"colour_depth01 expects a (H, W) array, got shape {d.shape}")
    finite = np.isfinite(d)
    all_finite = bool(finite.all())
    if not all_finite:
        d = np.where(finite, d, np.float32(0.0))
    # matplotlib's own quantisation: index = int(x * N), x = 1 mapped to N - 1 (float32, as matplotlib computes)
    x = np.clip(d, 0.0, 1.0) * np.float32(n)
    idx = np.minimum(x.astype(np.int16 if n < 32767 else np.intp), n - 1)  # int16: a quarter of intp's traffic
    rgb = np.take(lut, idx, axis=0)  # (H,W,3); several times faster than lut[idx]
    if not all_finite:
        rgb[~finite] = 0
    return rgb


def check_finite_depth(depth01: np.ndarray, name: str | None = None) -> None:
    """Raise :class:`NonFiniteDepthError` (a ValueError; its message starts with ``name: `` when given) if
    ``depth01`` holds NaN or infinite values."""
    finite = np.isfinite(depth01)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise NonFiniteDepthError(
            ("" if name is None else f"{name}: ")
            + f"the model produced non-finite depth ({bad} of {finite.size} pixels NaN or infinite: "
            "broken weights, or fp16 overflow: try --dtype fp32 or bf16); nothing written"
        )


def _encode_npy(depth01: np.ndarray, color_map: str | None) -> bytes:
    buf = io.BytesIO()
    np.save(buf, depth01.astype(np.float32, copy=False))
    return buf.getvalue()


def _encode_png16(depth01: np.ndarray, color_map: str | None) -> bytes:
    return encode_png(to_uint16_png_array(depth01), text={OUTPUT_TEXT_KEY: "depth"})


def _encode_colored(depth01: np.ndarray, color_map: str | None) -> bytes:
    return encode_png(colour_depth01(depth01, color_map), text={OUTPUT_TEXT_KEY: "depth_colored"})


@dataclass(frozen=True)
class DepthOutputFormat:
    """One file written per image: ``<stem><suffix>``, the bytes made by ``encode(depth01, color_map)``.

    ``depth01`` is the (H, W) float32 affine-invariant depth in [0, 1] (0 = near); ``needs_color_map`` formats
    are left out when the colour map is None (``--color-map none``).
    """

    name: str
    suffix: str
    description: str
    encode: Callable[[np.ndarray, "str | None"], bytes]
    needs_color_map: bool = False


# The one table of per-image depth outputs (predict, the demo): a new format is one entry here. Order is the
# order of the paths returned by depth_output_paths / save_depth_outputs.
DEPTH_OUTPUT_FORMATS: tuple[DepthOutputFormat, ...] = (
    DepthOutputFormat("npy", "_depth.npy", "float32 (H, W), affine-invariant depth in [0, 1], 0 = near", _encode_npy),
    DepthOutputFormat("png16", "_depth.png", "16-bit grey PNG, value = depth x 65535", _encode_png16),
    DepthOutputFormat(
        "colored", "_depth_colored.png", "8-bit RGB visualisation (colour map)", _encode_colored, needs_color_map=True
    ),
)


def depth_output_formats(color_map: str | None = "Spectral") -> list[DepthOutputFormat]:
    """The entries of :data:`DEPTH_OUTPUT_FORMATS` written with this colour map (None leaves out coloured ones)."""
    return [f for f in DEPTH_OUTPUT_FORMATS if color_map or not f.needs_color_map]


def depth_output_paths(out_dir: str | os.PathLike, stem: str, color_map: str | None = "Spectral") -> list[Path]:
    """The files :func:`save_depth_outputs` writes for ``stem``, in order (one per output format)."""
    out_dir = Path(out_dir)
    return [out_dir / f"{stem}{f.suffix}" for f in depth_output_formats(color_map)]


def save_depth_outputs(
    out_dir: str | os.PathLike,
    stem: str,
    depth01: np.ndarray,
    color_map: str | None = "Spectral",
) -> list[Path]:
    """Write every format of :data:`DEPTH_OUTPUT_FORMATS` for ``stem``: ``<stem>_depth.npy`` (float32 [0,1]),
    ``<stem>_depth.png`` (16-bit, value×65535) and, unless ``color_map`` is None, ``<stem>_depth_colored.png``,
    each atomically. Returns the written paths.

    Raises :class:`NonFiniteDepthError` before writing anything if the depth holds NaN or infinite values."""
    depth01 = np.asarray(depth01, dtype=np.float32)
    check_finite_depth(depth01, stem)
    formats = depth_output_formats(color_map)
    paths = depth_output_paths(out_dir, stem, color_map)
    for fmt, path in zip(formats, paths):
        write_bytes(path, fmt.encode(depth01, color_map))
    return paths


# ---------------------------------------------------------------------------------------------------- pool


def default_writer_threads() -> int:
    """Writer threads for :class:`WriterPool`: one per CPU core, at least 2, at most 8."""
    return max(2, min(8, os.cpu_count() or 2))


class WriterPool:
    """A bounded pool of writer threads.

    :meth:`submit` blocks while ``max_pending`` jobs are queued or running, so a fast producer cannot pile up
    depth maps in memory; each job's result or exception goes to ``on_done(tag, result, error)``, called in
    the writer thread (keep it short and thread-safe). Errors of the kinds in ``expected`` (by default
    ``OSError`` and ``ValueError``: a full disk, non-finite depth) are handed to ``on_done``; any other
    exception is a bug and is re-raised by :meth:`close`. Use as a context manager: leaving it waits for every
    job, or, on an exception (Ctrl-C included), cancels the jobs not yet started (each file is atomic: a
    cancelled or interrupted job leaves no partial file).
    """

    def __init__(
        self,
        threads: int | None = None,
        max_pending: int | None = None,
        on_done: Callable[[object, object, BaseException | None], None] | None = None,
        expected: tuple[type[BaseException], ...] = (OSError, ValueError),
    ):
        self.threads = threads or default_writer_threads()
        if self.threads < 1:
            raise ValueError(f"writer threads must be >= 1, got {self.threads}")
        self.max_pending = max_pending or 2 * self.threads
        self._slots = threading.BoundedSemaphore(self.max_pending)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="apdepth-writer")
        self._on_done = on_done
        self._expected = expected
        self._bugs: list[BaseException] = []
        self._lock = threading.Lock()

    def submit(self, tag, fn: Callable, *args, **kwargs) -> Future:
        """Queue ``fn(*args, **kwargs)``; blocks while the pool is full."""
        self._slots.acquire()
        try:
            fut = self._pool.submit(self._run, tag, fn, args, kwargs)
        except BaseException:
            self._slots.release()
            raise
        return fut

    def _run(self, tag, fn, args, kwargs):
        try:
            try:
                result = fn(*args, **kwargs)
            except self._expected as err:
                if self._on_done is not None:
                    self._on_done(tag, None, err)
                return None
            if self._on_done is not None:
                self._on_done(tag, result, None)
            return result
        except BaseException as err:  # a bug in fn or on_done: surfaced by close()
            with self._lock:
                self._bugs.append(err)
            raise
        finally:
            self._slots.release()

    def close(self, cancel: bool = False) -> None:
        """Wait for the queued jobs (or, with ``cancel``, only for those already running); re-raise a job's
        unexpected exception."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        if self._bugs and not cancel:
            raise self._bugs[0]

    def __enter__(self) -> "WriterPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)
