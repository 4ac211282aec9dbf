"""Pack a trained model folder into one tar file small enough to move around, and unpack it again.

``python -m apdepth.training.pack MODEL_DIR OUT.tar`` stores every file of ``MODEL_DIR`` (a pipeline,
``vae/`` or ``prior/`` folder written by ``apdepth train``); safetensors files larger than
``--fp16-above`` MiB (default 8) are stored with their float32 tensors cast to float16, which halves the
U-Net of the bundled model. ``python -m apdepth.training.pack --unpack OUT.tar DIR`` restores the folder
with those tensors cast back to float32, so it loads exactly like a folder saved in float32 (up to the
float16 rounding of the weights, relative 2**-11). ``PACKED.json`` inside the tar lists what was cast.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

MANIFEST = "PACKED.json"


def _cast_safetensors(data: bytes, dtype_from, dtype_to) -> bytes:
    from safetensors.torch import load, save

    tensors = load(data)
    out = {k: (v.to(dtype_to) if v.dtype == dtype_from else v) for k, v in tensors.items()}
    return save(out)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def pack(model_dir: str | os.PathLike, out_tar: str | os.PathLike, fp16_above_mib: float = 8.0) -> list[str]:
    """Write ``model_dir`` into ``out_tar`` (atomically: a temporary name, then renamed).

    Returns the relative paths of the safetensors files stored in float16. Raises ``FileNotFoundError`` if
    ``model_dir`` is not a folder.
    """
    import torch

    src = Path(model_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"model folder not found: {src}")
    out = Path(out_tar)
    out.parent.mkdir(parents=True, exist_ok=True)
    cast: list[str] = []
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            for path in sorted(p for p in src.rglob("*") if p.is_file()):
                rel = path.relative_to(src).as_posix()
                data = path.read_bytes()
                if path.suffix == ".safetensors" and len(data) > fp16_above_mib * 2**20:
                    data = _cast_safetensors(data, torch.float32, torch.float16)
                    cast.append(rel)
                _add_bytes(tar, rel, data)
            _add_bytes(tar, MANIFEST, json.dumps({"float16": cast}, indent=1).encode())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return cast


def unpack(tar_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Extract a tar written by :func:`pack` into ``out_dir`` (created; must not exist or be empty) and
    cast the float16-stored tensors back to float32. Raises ``ValueError`` for a tar without the manifest
    or with a member path that leaves ``out_dir``."""
    import torch

    dst = Path(out_dir)
    if dst.exists() and any(dst.iterdir()):
        raise ValueError(f"{dst} exists and is not empty; unpack into a new folder")
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        if MANIFEST not in names:
            raise ValueError(f"{tar_path}: not a packed model (no {MANIFEST})")
        for name in names:
            if name.startswith("/") or ".." in Path(name).parts:
                raise ValueError(f"{tar_path}: unsafe member path {name!r}")
        cast = set(json.loads(tar.extractfile(MANIFEST).read())["float16"])
        for member in tar.getmembers():
            if member.name == MANIFEST or not member.isfile():
                continue
            data = tar.extractfile(member).read()
            if member.name in cast:
                data = _cast_safetensors(data, torch.float16, torch.float32)
            target = dst / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return dst


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv: list[str] | None = None) -> int:
    """The ``python -m apdepth.training.pack`` command: pack or (``--unpack``) unpack; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m apdepth.training.pack", description=__doc__.splitlines()[0])
    p.add_argument("source", help="model folder to pack (or, with --unpack, the tar)")
    p.add_argument("dest", help="tar to write (or, with --unpack, the folder to create)")
    p.add_argument("--unpack", action="store_true", help="unpack a tar written by this command")
    p.add_argument(
        "--fp16-above",
        type=float,
        default=8.0,
        metavar="MIB",
        help="store safetensors files larger than this many MiB in float16 (default 8)",
    )
    args = p.parse_args(argv)
    try:
        if args.unpack:
            print(f"unpacked {args.source} -> {unpack(args.source, args.dest)}")
        else:
            cast = pack(args.source, args.dest, args.fp16_above)
            print(f"packed {args.source} -> {args.dest}" + (f" (float16: {', '.join(cast)})" if cast else ""))
    except (FileNotFoundError, ValueError, tarfile.TarError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
