"""Reading images robustly and writing depth outputs atomically.

Every writer goes through :func:`atomic_write`: data lands in a temporary file in the
target folder and is renamed over the final name only once complete, so a killed run
never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


class ImageReadError(ValueError):
    """An input file is not a readable image; the message names the file and the reason."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file next to ``path``; rename it to ``path`` on success, delete it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB float32 in [0, 1], shape (H, W, 3).

    EXIF orientation is applied, alpha is dropped, grey and palette images are expanded to
    three channels and 16-bit images keep their precision. Raises :class:`ImageReadError`
    naming the file for zero-byte, truncated, corrupt or non-image files.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read file ({err.strerror or err})") from err
    if size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()  # force decoding here so truncation is caught now, not later
            im = ImageOps.exif_transpose(im)
            return pil_to_array(im, name=str(path))
    except ImageReadError:
        raise
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not a recognised image format") from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(
            f"{path}: image too large ({err}); downscale it first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: corrupt or truncated image ({err})") from err


def pil_to_array(im, name: str = "image") -> np.ndarray:
    """Convert any PIL image to RGB float32 in [0, 1], shape (H, W, 3)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im, dtype=np.uint16).astype(np.float32) / 65535.0
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "I":
        arr = np.asarray(im, dtype=np.int64).astype(np.float32)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return np.repeat(np.clip(arr / peak, 0, 1)[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA").convert("RGB")
    elif mode != "RGB":
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as err:
            raise ImageReadError(f"{name}: unsupported image mode {mode!r}") from err
    return np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0


def to_uint16_png_array(depth01: np.ndarray) -> np.ndarray:
    """[0,1] depth -> uint16 array (value × 65535, rounded)."""
    return np.round(np.clip(depth01, 0.0, 1.0) * 65535.0).astype(np.uint16)


# tEXt key marking the depth PNGs of ``save_depth_outputs``: a later ``apdepth predict`` over the same folder
# recognises them as its own outputs and never takes them as inputs.
OUTPUT_TEXT_KEY = "apdepth-output"


def save_png(path: str | os.PathLike, array: np.ndarray, text: dict[str, str] | None = None) -> None:
    """Write a uint8 (H,W[,3]) or uint16 (H,W) array as PNG, atomically; ``text`` becomes tEXt chunks."""
    from PIL import Image, PngImagePlugin

    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError("16-bit PNGs must be single-channel (H, W)")
        im = Image.fromarray(array)  # mode I;16
    elif array.dtype == np.uint8:
        im = Image.fromarray(array)
    else:
        raise ValueError(f"save_png expects uint8 or uint16, got {array.dtype}")
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a .npy file atomically."""
    with atomic_write(path) as fh:
        np.save(fh, array)


def read_depth_png16(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit PNG written by :func:`save_depth_png16` back to float32 in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im, dtype=np.uint16).astype(np.float32) / 65535.0


def save_depth_outputs(
    out_dir: str | os.PathLike,
    stem: str,
    depth01: np.ndarray,
    color_map: str | None = "Spectral",
) -> list[Path]:
    """Write ``<stem>_depth.npy`` (float32 [0,1]), ``<stem>_depth.png`` (16-bit, value×65535) and,
    unless ``color_map`` is None, ``<stem>_depth_colored.png``. Returns the written paths."""
    from apdepth.visualize import colorize_depth

    out_dir = Path(out_dir)
    depth01 = np.asarray(depth01, dtype=np.float32)
    paths = [out_dir / f"{stem}_depth.npy", out_dir / f"{stem}_depth.png"]
    save_npy(paths[0], depth01)
    save_png(paths[1], to_uint16_png_array(depth01), text={OUTPUT_TEXT_KEY: "depth"})
    if color_map:
        paths.append(out_dir / f"{stem}_depth_colored.png")
        save_png(paths[2], colorize_depth(depth01, cmap=color_map), text={OUTPUT_TEXT_KEY: "depth_colored"})
    return paths
