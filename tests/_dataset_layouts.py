"""Tiny datasets in the exact on-disk layouts of the public benchmarks, as tar and as folder."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def png16(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def png8(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def jpg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def rgb_pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes], dot_prefix: bool = True) -> Path:
    """An uncompressed tar whose members are named ``./<rel>`` (as the distributed archives are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(("./" if dot_prefix else "") + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def both(tmp_path: Path, name: str, files: dict[str, bytes]) -> dict[str, Path]:
    return {
        "tar": write_tar(tmp_path / f"{name}.tar", files),
        "folder": write_tree(tmp_path / name, files),
    }
