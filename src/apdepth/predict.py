"""``apdepth predict``: depth maps for files, folders (recursive) and globs.

For each input image ``<stem>`` it writes, under ``--output`` (keeping the sub-folder structure of folder
and glob inputs): ``<stem>_depth.npy`` (float32, [0,1], 0 = near), ``<stem>_depth.png`` (16-bit,
value × 65535) and ``<stem>_depth_colored.png`` (unless ``--color-map none``). Unreadable inputs are
reported by name and skipped; the exit code is 1 when any input failed.

Scale-out: run under ``accelerate launch --num_processes N -m apdepth predict ...`` (or torchrun): inputs
are sharded across processes, each is processed exactly once, and rank 0 prints the merged summary.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from apdepth.image_io import IMAGE_EXTENSIONS

SUMMARY_NAME = "predict_summary.json"


@dataclass
class InputItem:
    path: Path
    rel: Path  # relative output path without suffix (sub-folders kept), e.g. "scene1/img001"


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    done_per_rank: dict[int, int] = field(default_factory=dict)

    def merge(self, other: "Summary") -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failed.update(other.failed)  # input errors are seen identically by every rank: counted once
        self.done_per_rank.update(other.done_per_rank)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def collect_inputs(inputs: list[str]) -> tuple[list[InputItem], list[str]]:
    """Expand files, folders (recursively) and glob patterns; returns items and error messages for inputs
    that match nothing. Files named explicitly are kept even with unusual extensions (so that a bad file
    is reported, not silently ignored); folder and glob expansion keep image extensions only."""
    items: list[InputItem] = []
    errors: list[str] = []
    for spec in inputs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and _is_image(q) and not q.name.startswith("."))
            if not found:
                errors.append(f"{spec}: folder contains no images ({', '.join(IMAGE_EXTENSIONS)})")
            items += [InputItem(q, q.relative_to(p).with_suffix("")) for q in found]
        elif p.is_file():
            items.append(InputItem(p, Path(p.stem)))
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if m.is_file() and _is_image(m)]
            if not files:
                errors.append(f"{spec}: pattern matches no image files")
            base = Path(_glob_base(spec))
            for m in files:
                try:
                    rel = m.relative_to(base).with_suffix("")
                except ValueError:
                    rel = Path(m.stem)
                items.append(InputItem(m, rel))
        else:
            errors.append(f"{spec}: no such file or folder")
    return items, errors


def _glob_base(pattern: str) -> str:
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        base.append(part)
    return str(Path(*base)) if base else "."


def output_paths(out_dir: Path, rel: Path, color_map: str | None, save_ply: bool = False) -> list[Path]:
    stem = out_dir / rel.parent / rel.name
    paths = [Path(f"{stem}_depth.npy"), Path(f"{stem}_depth.png")]
    if color_map:
        paths.append(Path(f"{stem}_depth_colored.png"))
    if save_ply:
        paths.append(Path(f"{stem}.ply"))
    return paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--output", "-o", required=True, help="output folder")
    p.add_argument("--checkpoint", default=None, help="pipeline folder or Hugging Face Hub id (default: the bundled small model)")
    p.add_argument(
        "--prior",
        default=None,
        help="depth prior for checkpoints that do not include one, e.g. depth-anything/Depth-Anything-V2-Small-hf "
        "(Apache-2.0; the Base/Large/Giant priors are non-commercial)",
    )
    p.add_argument("--processing-res", type=int, default=None, help="longer side the model runs at (0 = native; default: stored with the model)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--ensemble-size", type=int, default=1,
                   help="test-time ensemble of N members (mirror image, 0.75x/1.25x/0.5x resolution; 1 = off, max 8)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="compute precision (default fp32)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default auto: cuda, then mps, then cpu)")
    p.add_argument("--color-map", default="Spectral", help="matplotlib colour map for *_depth_colored.png, 'none' to skip")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose outputs all exist already")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading pickled (.bin) weights; only for checkpoints you trust")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow first batch, faster afterwards; cached on disk)")
    p.add_argument("--compile-mode", default="default", choices=["default", "max-autotune"],
                   help="with --compile: Inductor's tuning level; max-autotune compiles much longer, usually runs faster (default: default)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="with --compile on CUDA: also capture CUDA graphs (best for many same-size images)")
    p.add_argument("--vae-tiling", action="store_true", help="encode/decode in 512 px tiles: bounded memory for very large inputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("point cloud (--save-ply)")
    g.add_argument("--save-ply", action="store_true", help="also write <stem>.ply, a coloured point cloud (binary PLY)")
    g.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees for the cloud (default 60)")
    g.add_argument("--focal", type=float, default=None, help="focal length in pixels of the input image (overrides --fov)")
    g.add_argument(
        "--near-far", type=float, nargs=2, default=(1.0, 10.0), metavar=("NEAR", "FAR"),
        help="place relative depth 0 at NEAR and 1 at FAR (default 1 10); only FAR/NEAR changes the shape",
    )


def _distributed():
    """(rank, world_size, state) under accelerate/torchrun; (0, 1, None) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch
    from accelerate import PartialState

    # Without cpu=True, PartialState silently falls back to one process per copy on machines without CUDA.
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes != world:
        raise RuntimeError(f"WORLD_SIZE={world} but the process group has {state.num_processes} processes")
    return state.process_index, state.num_processes, state


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from apdepth.cli import pick_device, pick_dtype
    from apdepth.image_io import ImageReadError, read_image

    color_map = None if str(args.color_map).lower() == "none" else args.color_map
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    if not 1 <= args.ensemble_size <= 8:
        print("error: --ensemble-size must be between 1 and 8", file=sys.stderr)
        return 2
    if args.processing_res is not None and args.processing_res < 0:
        print("error: --processing-res must be >= 0 (0 = native size)", file=sys.stderr)
        return 2
    if args.cuda_graphs and not args.compile:
        print("error: --cuda-graphs needs --compile", file=sys.stderr)
        return 2
    if color_map:
        import matplotlib

        if color_map not in matplotlib.colormaps:
            print(f"error: unknown --color-map {color_map!r} (any matplotlib colour map, or 'none')", file=sys.stderr)
            return 2
    save_ply = bool(getattr(args, "save_ply", False))
    if save_ply:
        near, far = getattr(args, "near_far", (1.0, 10.0))
        fov, focal = getattr(args, "fov", 60.0), getattr(args, "focal", None)
        if not 0 < near < far:
            print("error: --near-far needs 0 < NEAR < FAR", file=sys.stderr)
            return 2
        if not 0 < fov < 180 or (focal is not None and not focal > 0):
            print("error: --fov must be in (0, 180) degrees and --focal > 0 pixels", file=sys.stderr)
            return 2
    out_dir = Path(args.output)

    rank, world, state = _distributed()
    items, input_errors = collect_inputs(args.inputs)
    seen: dict[Path, Path] = {}
    for it in items:
        if it.rel in seen and seen[it.rel] != it.path:
            print(f"error: {seen[it.rel]} and {it.path} would write the same outputs ({it.rel}_depth.*); "
                  "rename one or run them separately", file=sys.stderr)
            return 2
        seen[it.rel] = it.path
    summary = Summary()
    for msg in input_errors:
        summary.failed[msg.split(":")[0]] = msg.split(": ", 1)[1]
    mine = items[rank::world]

    todo: list[InputItem] = []
    for it in mine:
        if args.skip_existing and all(p.is_file() for p in output_paths(out_dir, it.rel, color_map, save_ply)):
            summary.skipped.append(str(it.path))
        else:
            todo.append(it)

    if todo:
        from apdepth.pipeline import ApDepthPipeline

        device = state.device if (state is not None and args.device == "auto") else pick_device(args.device)
        dtype = pick_dtype(args.dtype)
        if args.quiet or (rank != 0 and world > 1):
            _quiet_loading()
        try:
            pipe = ApDepthPipeline.from_pretrained(args.checkpoint, prior=args.prior, torch_dtype=dtype, allow_pickle=args.allow_pickle)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if args.cuda_graphs and device.type != "cuda":
            print(f"error: --cuda-graphs needs a CUDA device (running on {device})", file=sys.stderr)
            return 2
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        configure_fast_path(pipe, device, compile=args.compile, vae_tiling=args.vae_tiling,
                            compile_mode=args.compile_mode, cuda_graphs=args.cuda_graphs)

        start = time.perf_counter()
        bar = tqdm(total=len(todo), unit="img", disable=args.quiet or rank != 0 and world > 1, dynamic_ncols=True)
        for k in range(0, len(todo), args.batch_size):
            batch = todo[k : k + args.batch_size]
            ready: list[tuple[InputItem, np.ndarray]] = []
            for it in batch:
                try:
                    ready.append((it, read_image(it.path)))
                except ImageReadError as err:
                    summary.failed[str(it.path)] = str(err).split(": ", 1)[-1]
                    tqdm.write(f"skipped {err}", file=sys.stderr)
            if ready:
                _predict_and_write(pipe, ready, args, out_dir, color_map, save_ply, summary)
            bar.update(len(batch))
            elapsed = time.perf_counter() - start
            bar.set_postfix_str(f"{(k + len(batch)) / max(elapsed, 1e-9):.2f} img/s")
        bar.close()

    summary.done_per_rank[rank] = len(summary.done)
    if world > 1:
        summary = _merge_summaries(summary)
    if rank == 0:
        _print_summary(summary, out_dir, world)
    return 1 if summary.failed else 0


def _quiet_loading() -> None:
    """No weight-loading progress bars from transformers/diffusers (with --quiet, and on ranks other than 0)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def configure_fast_path(pipe, device, compile: bool = False, vae_tiling: bool = False, compile_mode: str = "default",
                        cuda_graphs: bool = False) -> None:
    """The CLI's speed choices. On a CPU, channels_last makes oneDNN's convolutions several times faster
    (on GPUs it only pays off together with torch.compile, so it is tied to --compile there)."""
    if device.type == "cpu" or compile:
        pipe.enable_channels_last()
    if vae_tiling:
        pipe.enable_vae_tiling()
    if compile:
        pipe.enable_compile(mode=compile_mode, cuda_graphs=cuda_graphs)


def _predict_and_write(pipe, ready, args, out_dir, color_map, save_ply, summary) -> None:
    """Run one batch; if the batch fails, retry image by image so that the culprit is named."""
    from tqdm import tqdm

    from apdepth.image_io import save_depth_outputs

    def write(it, depth, rgb):
        save_depth_outputs(out_dir / it.rel.parent, it.rel.name, depth, color_map=color_map)
        if save_ply:
            _write_ply(out_dir / it.rel.parent / f"{it.rel.name}.ply", depth, rgb, args)
        summary.done.append(str(it.path))

    try:
        out = pipe([a for _, a in ready], processing_resolution=args.processing_res, batch_size=args.batch_size,
                   ensemble_size=getattr(args, "ensemble_size", 1))
        for (it, rgb), depth in zip(ready, out.depth):
            write(it, depth, rgb)
    except (ValueError, RuntimeError) as err:
        if len(ready) == 1:
            it = ready[0][0]
            summary.failed[str(it.path)] = f"inference failed: {err}"
            tqdm.write(f"failed {it.path}: {err}", file=sys.stderr)
            return
        for one in ready:
            _predict_and_write(pipe, [one], args, out_dir, color_map, save_ply, summary)


def _write_ply(path, depth, rgb, args) -> None:
    from apdepth.pointcloud import save_depth_ply

    # depth is affine-invariant [0, 1]; it needs a near/far placement before it can be unprojected
    near, far = getattr(args, "near_far", (1.0, 10.0))
    save_depth_ply(path, depth, rgb, focal=getattr(args, "focal", None), fov_deg=getattr(args, "fov", 60.0), near=near, far=far)


def _merge_summaries(summary: Summary) -> Summary:
    from accelerate.utils import gather_object

    merged = Summary()
    for part in gather_object([summary]):
        merged.merge(part)
    return merged


def _print_summary(summary: Summary, out_dir: Path, world_size: int = 1) -> None:
    from apdepth.image_io import atomic_write

    n_done, n_skip, n_fail = len(summary.done), len(summary.skipped), len(summary.failed)
    print(f"done: {n_done}  skipped: {n_skip}  failed: {n_fail}  ->  {out_dir}")
    for name, reason in sorted(summary.failed.items()):
        print(f"  failed: {name}: {reason}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / SUMMARY_NAME, "w") as fh:
        json.dump(
            {
                "done": sorted(summary.done),
                "skipped": sorted(summary.skipped),
                "failed": summary.failed,
                "world_size": world_size,
                "done_per_rank": {str(k): v for k, v in sorted(summary.done_per_rank.items())},
            },
            fh,
            indent=1,
        )
