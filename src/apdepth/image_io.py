"""Reading images robustly (the one reader). Writing lives in :mod:`apdepth.writer` (the one writer); its
functions are re-exported here for existing imports.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from apdepth.writer import (  # noqa: F401  (re-exported: the one writer)
    OUTPUT_TEXT_KEY,
    NonFiniteDepthError,
    atomic_write,
    save_depth_outputs,
    save_npy,
    save_png,
    to_uint16_png_array,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


class ImageReadError(ValueError):
    """An input file is not a readable image; the message names the file and the reason."""


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """None if files can be created in ``folder`` (created if missing), else the reason ("Permission denied",
    "Not a directory", ...). Commands call it on their output folder before any long work starts."""
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


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


def read_depth_png16(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit PNG written by :func:`save_depth_png16` back to float32 in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im, dtype=np.uint16).astype(np.float32) / 65535.0
