"""``apdepth predict``: depth maps for files, folders (recursive) and globs.

For each input image ``<stem>`` it writes, under ``--output`` (keeping the sub-folder structure of folder
and glob inputs): ``<stem>_depth.npy`` (float32, [0,1], 0 = near), ``<stem>_depth.png`` (16-bit,
value × 65535) and ``<stem>_depth_colored.png`` (unless ``--color-map none``). Unreadable inputs are
reported by name and the rest is processed; the exit code is 1 when any input failed.

User files are safe: no output is ever written over an input (an input whose output name is taken, by
another input or by an input file, writes ``<stem>_<ext>_depth.*`` instead, listed under ``renamed``); the
output folder is never read as input, nor are depth PNGs an earlier run wrote (they carry a PNG text
marker); every folder is entered once and every file taken once, even through symlink loops (what is left
out is listed under ``ignored``). An unwritable ``--output`` fails before the model loads; a full disk
stops the run with one error line.

Scale-out: run under ``accelerate launch --num_processes N -m apdepth predict ...`` (or torchrun): inputs
are sharded across processes, each is processed exactly once, and rank 0 prints the merged summary.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import glob
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from apdepth.image_io import IMAGE_EXTENSIONS
from apdepth.runtime import add_model_arguments

SUMMARY_NAME = "predict_summary.json"


@dataclass
class InputItem:
    path: Path
    rel: Path  # relative output path without suffix (sub-folders kept), e.g. "scene1/img001"


@dataclass
class CollectedInputs:
    """What :func:`collect_inputs` found.

    items: the inputs to process, each once (de-duplicated by real path), with their output names.
    errors: ``{spec: reason}`` for arguments that match nothing (each counts as a failed input).
    ignored: ``{path: reason}`` for files and folders deliberately left out: a second path to the same
        file, a folder reached twice (symlink loop), the output folder inside an input folder, and PNGs
        that apdepth itself wrote (an earlier run's outputs).
    renamed: ``{input path: output stem}`` for inputs whose default output name was taken (``a.jpg``
        beside ``a.png``) or would overwrite an input file; they write ``<stem>_<ext>_depth.*`` instead.
    """

    items: list[InputItem] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    done_per_rank: dict[int, int] = field(default_factory=dict)
    stopped: str | None = None  # why the run stopped early (e.g. the disk is full), else None

    def merge(self, other: "Summary") -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failed.update(other.failed)  # input errors are seen identically by every rank: counted once
        self.ignored.update(other.ignored)
        self.renamed.update(other.renamed)
        self.done_per_rank.update(other.done_per_rank)
        self.stopped = self.stopped or other.stopped


def _output_image_suffixes() -> tuple[str, ...]:
    """Suffixes of the image files in the output-format table (a later run must not take them as inputs)."""
    from apdepth.writer import DEPTH_OUTPUT_FORMATS

    return tuple(f.suffix for f in DEPTH_OUTPUT_FORMATS if f.suffix.endswith(".png"))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _written_by_apdepth(path: Path) -> bool:
    """True for a depth PNG that ``save_depth_outputs`` wrote (its tEXt marker; only the header is read)."""
    if not path.name.lower().endswith(_output_image_suffixes()):
        return False
    from PIL import Image

    from apdepth.image_io import OUTPUT_TEXT_KEY

    try:
        with Image.open(path) as im:
            return OUTPUT_TEXT_KEY in im.info
    except Exception:  # an unreadable file is the reader's business: it is reported when read
        return False


def _walk(root: Path, max_depth: int | None, skip_dir: str | None, ignored: dict[str, str]):
    """Yield (file path, parts relative to ``root``) below ``root``, following symlinks but entering each
    folder (by device and inode) once; folders reached twice and the folder ``skip_dir`` (a real path) are
    recorded in ``ignored`` and not entered."""
    seen: set[tuple[int, int]] = set()
    st = os.stat(root)
    seen.add((st.st_dev, st.st_ino))
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, parts = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            ignored[str(folder)] = f"folder cannot be read ({err.strerror or err})"
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                continue
            if is_dir:
                if max_depth is not None and len(parts) + 1 >= max_depth:
                    continue
                try:
                    st = os.stat(path)
                except OSError as err:  # e.g. a dangling or self-referencing link
                    ignored[str(path)] = f"cannot be entered ({err.strerror or err})"
                    continue
                if skip_dir is not None and os.path.realpath(path) == skip_dir:
                    ignored[str(path)] = "the output folder: never read as input"
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    ignored[str(path)] = "folder already visited through another path (symlink loop or second link)"
                    continue
                seen.add(key)
                subdirs.append((path, parts + (entry.name,)))
            elif entry.is_file():
                yield path, parts + (entry.name,)
        stack.extend(reversed(subdirs))


def _match_parts(parts: tuple[str, ...], pats: tuple[str, ...]) -> bool:
    """Shell-glob match of path parts against pattern parts; ``**`` matches zero or more folders and, as in
    :func:`glob.glob`, names starting with a dot only match pattern parts that start with a dot."""
    if not pats:
        return not parts
    if pats[0] == "**":
        return any(
            _match_parts(parts[i:], pats[1:])
            for i in range(len(parts) + 1)
            if not any(p.startswith(".") for p in parts[:i])
        )
    if not parts or (parts[0].startswith(".") and not pats[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], pats[0]) and _match_parts(parts[1:], pats[1:])


def collect_inputs(
    inputs: list[str],
    output: str | os.PathLike | None = None,
    color_map: str | None = "Spectral",
    save_ply: bool = False,
) -> CollectedInputs:
    """Expand files, folders (recursively) and glob patterns into the inputs to process, each exactly once.

    Files named explicitly are kept even with unusual extensions (so that a bad file is reported, not
    silently ignored); folder and glob expansion keep image extensions only and skip hidden files. Symlinks
    are followed but every folder is entered once and every file is taken once (by real path); what is left
    out is listed in ``ignored``. With ``output`` given, the output folder is never read when it lies inside
    an input folder, PNGs written by apdepth are never taken as inputs, and no input's outputs may land on an
    input file or on another input's outputs: such inputs get a disambiguated name (``renamed``).
    """
    found: list[InputItem] = []
    result = CollectedInputs()
    out_real = os.path.realpath(output) if output is not None else None
    for spec in inputs:
        p = Path(spec)
        if p.is_dir():
            skip = out_real if out_real is not None and out_real != os.path.realpath(p) else None
            files = [
                (q, parts)
                for q, parts in _walk(p, None, skip, result.ignored)
                if _is_image(q) and not q.name.startswith(".")
            ]
            if not files:
                result.errors[spec] = f"folder contains no images ({', '.join(IMAGE_EXTENSIONS)})"
            found += [InputItem(q, Path(*parts).with_suffix("")) for q, parts in files if not _own_output(q, result)]
        elif p.is_file():
            found.append(InputItem(p, Path(p.stem)))
        elif glob.has_magic(spec):
            base, pats = _glob_split(spec)
            depth = None if "**" in pats else len(pats)
            files = []
            if base.is_dir():
                skip = out_real if out_real is not None and out_real != os.path.realpath(base) else None
                files = [
                    (q, parts)
                    for q, parts in _walk(base, depth, skip, result.ignored)
                    if _is_image(q) and _match_parts(parts, pats)
                ]
            if not files:
                result.errors[spec] = "pattern matches no image files"
            found += [InputItem(q, Path(*parts).with_suffix("")) for q, parts in files if not _own_output(q, result)]
        else:
            result.errors[spec] = "no such file or folder"

    first: dict[str, Path] = {}
    for it in found:
        real = os.path.realpath(it.path)
        if real in first:
            if first[real] != it.path:
                result.ignored[str(it.path)] = f"same file as {first[real]}"
            continue
        first[real] = it.path
        result.items.append(it)
    if output is not None:
        _assign_output_names(result, Path(output), set(first), color_map, save_ply)
    return result


def _own_output(path: Path, result: CollectedInputs) -> bool:
    if _written_by_apdepth(path):
        result.ignored[str(path)] = "written by apdepth (an earlier run's output), not an input"
        return True
    return False


def _assign_output_names(result: CollectedInputs, out_dir: Path, input_reals: set[str], color_map, save_ply) -> None:
    """Give every input an output stem whose files neither overwrite an input nor another input's outputs.

    Names are compared case-insensitively (so outputs stay distinct on macOS and Windows too). An input keeps
    ``<stem>`` when it alone claims it; otherwise it writes ``<stem>_<ext>`` (``a.jpg`` -> ``a_jpg_depth.*``),
    then ``<stem>_<ext>_2`` and so on, in sorted order, so the names do not depend on the order of arguments.
    """

    def key(rel: Path) -> str:
        return str(rel).casefold()

    def hits_input(rel: Path) -> bool:
        return any(os.path.realpath(q) in input_reals for q in output_paths(out_dir, rel, color_map, save_ply))

    claims: dict[str, list[InputItem]] = {}
    for it in result.items:
        claims.setdefault(key(it.rel), []).append(it)
    contested = sorted(
        (it for it in result.items if len(claims[key(it.rel)]) > 1 or hits_input(it.rel)), key=lambda it: str(it.path)
    )
    taken = {k for k, its in claims.items() if len(its) == 1 and not hits_input(its[0].rel)}
    for it in contested:
        ext = it.path.suffix.lstrip(".").lower() or "noext"
        base = it.rel.with_name(f"{it.rel.name}_{ext}")
        rel, n = base, 1
        while key(rel) in taken or key(rel) in claims or hits_input(rel):
            n += 1
            rel = base.with_name(f"{base.name}_{n}")
        taken.add(key(rel))
        it.rel = rel
        result.renamed[str(it.path)] = str(rel)


def _glob_split(pattern: str) -> tuple[Path, tuple[str, ...]]:
    """``'in/**/*.png'`` -> (Path('in'), ('**', '*.png')): the folder before the first wildcard, and the rest."""
    parts = Path(pattern).parts
    k = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return (Path(*parts[:k]) if k else Path(".")), tuple(parts[k:])


def output_paths(out_dir: Path, rel: Path, color_map: str | None, save_ply: bool = False) -> list[Path]:
    from apdepth.writer import depth_output_paths

    paths = depth_output_paths(out_dir / rel.parent, rel.name, color_map)
    if save_ply:
        paths.append(out_dir / rel.parent / f"{rel.name}.ply")
    return paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or glob patterns"
    )
    p.add_argument("--output", "-o", required=True, help="output folder")
    add_model_arguments(p)
    p.add_argument(
        "--processing-res",
        type=int,
        default=None,
        help="longer side the model runs at (0 = native: time and memory grow with the pixel count; default: stored with the model)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument(
        "--ensemble-size",
        type=int,
        default=1,
        help="test-time ensemble of N members (mirror image, 0.75x/1.25x/0.5x resolution; 1 = off, max 8)",
    )
    p.add_argument(
        "--color-map", default="Spectral", help="matplotlib colour map for *_depth_colored.png, 'none' to skip"
    )
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose outputs all exist already")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (slow first batch, faster afterwards; cached on disk)",
    )
    p.add_argument(
        "--compile-mode",
        default="default",
        choices=["default", "max-autotune"],
        help="with --compile: Inductor's tuning level; max-autotune compiles much longer, usually runs faster (default: default)",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="with --compile on CUDA: also capture CUDA graphs (best for many same-size images)",
    )
    p.add_argument(
        "--vae-tiling", action="store_true", help="encode/decode in 512 px tiles: bounded memory for very large inputs"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("point cloud (--save-ply)")
    g.add_argument("--save-ply", action="store_true", help="also write <stem>.ply, a coloured point cloud (binary PLY)")
    g.add_argument(
        "--fov", type=float, default=60.0, help="horizontal field of view in degrees for the cloud (default 60)"
    )
    g.add_argument(
        "--focal", type=float, default=None, help="focal length in pixels of the input image (overrides --fov)"
    )
    g.add_argument(
        "--near-far",
        type=float,
        nargs=2,
        default=(1.0, 10.0),
        metavar=("NEAR", "FAR"),
        help="place relative depth 0 at NEAR and 1 at FAR (default 1 10); only FAR/NEAR changes the shape",
    )
    from apdepth.video_cli import add_video_arguments

    add_video_arguments(p)  # video files (or --video frame folders) take the clip path of apdepth.video_cli


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
    from tqdm import tqdm

    from apdepth.video_cli import run_video, video_only_options, wants_video
    from apdepth.writer import remove_stale_temps

    if wants_video(args):
        return run_video(args)
    clip_only = video_only_options(args)
    if clip_only:
        print(
            f"error: {', '.join(clip_only)} only apply to video inputs (video files, or frame folders with --video)",
            file=sys.stderr,
        )
        return 2
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
    unwritable = _check_writable(out_dir)
    if unwritable:
        print(f"error: cannot write to --output {out_dir}: {unwritable}", file=sys.stderr)
        return 2

    rank, world, state = _distributed()
    collected = collect_inputs(args.inputs, out_dir, color_map, save_ply)
    summary = Summary(failed=dict(collected.errors), ignored=dict(collected.ignored), renamed=dict(collected.renamed))
    mine = collected.items[rank::world]

    todo: list[InputItem] = []
    for it in mine:
        if args.skip_existing and all(p.is_file() for p in output_paths(out_dir, it.rel, color_map, save_ply)):
            summary.skipped.append(str(it.path))
        else:
            todo.append(it)
    # Hidden temporary files a killed run left (kill -9 mid-write) are removed; each rank cleans its own inputs'
    # outputs, which no other process writes. "Done" above only ever looks at final names.
    remove_stale_temps(p for it in mine for p in output_paths(out_dir, it.rel, "colored", True))

    if todo and args.processing_res == 0 and not args.quiet and rank == 0:
        note = native_size_note(todo)
        if note:
            print(note, file=sys.stderr)

    if todo:
        from apdepth.runtime import load_pipeline, model_options, pick_device

        options = model_options(args)
        options["device"] = state.device if (state is not None and args.device == "auto") else pick_device(args.device)
        if args.cuda_graphs and options["device"].type != "cuda":
            print(f"error: --cuda-graphs needs a CUDA device (running on {options['device']})", file=sys.stderr)
            return 2
        try:
            pipe = load_pipeline(
                **options,
                compile=args.compile,
                compile_mode=args.compile_mode,
                cuda_graphs=args.cuda_graphs,
                vae_tiling=args.vae_tiling,
                quiet=args.quiet or (rank != 0 and world > 1),
            )
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

        bar = tqdm(total=len(todo), unit="img", disable=args.quiet or rank != 0 and world > 1, dynamic_ncols=True)
        try:
            _stream(pipe, todo, args, out_dir, color_map, save_ply, summary, bar)
        finally:
            bar.close()

    summary.done_per_rank[rank] = len(summary.done)
    if world > 1:
        summary = _merge_summaries(summary)
    if rank == 0:
        if not _print_summary(summary, out_dir, world):
            return 1
    return 1 if summary.failed or summary.stopped else 0


# errno values after which no later write can succeed: disk full, quota, read-only file system, no permission.
_FATAL_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


NATIVE_NOTE_MEGAPIXELS = 4.0  # above this, --processing-res 0 gets a note on the cost


def native_size_note(items: list[InputItem], megapixels: float | None = None) -> str | None:
    """With ``--processing-res 0``: a note naming how many inputs exceed ``megapixels`` and the largest one,
    with its pixel count relative to a 768 px run (time and memory grow at least linearly with it); None if
    none does. Only image headers are read."""
    from PIL import Image

    megapixels = NATIVE_NOTE_MEGAPIXELS if megapixels is None else megapixels
    big: list[tuple[int, int, int, Path]] = []
    for it in items:
        try:
            with Image.open(it.path) as im:
                w, h = im.size
        except Exception:  # unreadable inputs are reported when they are read
            continue
        if w * h > megapixels * 1e6:
            big.append((w * h, w, h, it.path))
    if not big:
        return None
    pixels, w, h, path = max(big)
    scale = 768 / max(w, h)
    ratio = pixels / (round(w * scale) * round(h * scale))
    return (
        f"note: --processing-res 0 runs at native size; {len(big)} input(s) exceed {megapixels:g} MP, the largest "
        f"{path} at {w}x{h} ({pixels / 1e6:.1f} MP, {ratio:.0f}x the pixels of --processing-res 768). Time and "
        "memory grow at least in proportion, so expect minutes per image on a CPU and many GB of memory; "
        "pass --processing-res N to bound it (--vae-tiling bounds the VAE's memory)."
    )


def _check_writable(out_dir: Path) -> str | None:
    """None if files can be created in ``out_dir`` (created if missing), else the reason, before any model loads."""
    from apdepth.image_io import unwritable_reason

    return unwritable_reason(out_dir)


def _reason(err: BaseException, path: Path) -> str:
    """An error message without the leading ``<path>: `` that the readers put in front."""
    text = str(err)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _fail(summary: Summary, path: Path, reason: str) -> None:
    from tqdm import tqdm

    summary.failed[str(path)] = reason
    tqdm.write(f"failed: {path}: {reason}", file=sys.stderr)


def _stream(pipe, todo: list[InputItem], args, out_dir: Path, color_map, save_ply: bool, summary: Summary, bar) -> None:
    """The streaming run: reader threads decode the next images while the model runs on the current batch, and
    a bounded pool of writer threads encodes and writes, so the slowest stage sets the pace. Queues are bounded
    (a few batches of images in flight, whatever the number of inputs); the progress bar counts finished images
    (written or failed). A write error that will fail every later write too (disk full, read-only) stops the
    run: queued writes are dropped and the inputs not finished are listed as not processed."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from apdepth.image_io import ImageReadError, read_image
    from apdepth.writer import WriterPool

    lock = threading.Lock()
    stop: list[OSError] = []

    def finished(it: InputItem, _result, err: BaseException | None) -> None:
        with lock:
            if err is None:
                summary.done.append(str(it.path))
            elif isinstance(err, _RunStopped):
                summary.failed[str(it.path)] = _NOT_PROCESSED
            elif isinstance(err, OSError):
                reason = f"cannot write its outputs: {err.strerror or err}"
                if err.errno in _FATAL_WRITE_ERRNOS:  # said once, when the run stops
                    summary.failed[str(it.path)] = reason
                    stop.append(err)
                else:
                    _fail(summary, it.path, reason)
            else:  # non-finite depth, inference errors: this input fails, the run goes on
                _fail(summary, it.path, str(err))
            bar.update(1)

    readers = max(1, min(4, os.cpu_count() or 1))
    ahead = max(2 * args.batch_size, 2 * readers)  # images decoded (or being decoded) ahead of the model
    pending: deque = deque()
    items = iter(todo)
    with ThreadPoolExecutor(readers, thread_name_prefix="apdepth-reader") as read_pool:
        writers = WriterPool(max_pending=max(2 * args.batch_size, 4), on_done=finished)
        try:

            def refill() -> None:
                while len(pending) < ahead:
                    it = next(items, None)
                    if it is None:
                        return
                    pending.append((it, read_pool.submit(read_image, it.path)))

            refill()
            while pending and not stop:
                batch = [pending.popleft() for _ in range(min(args.batch_size, len(pending)))]
                refill()  # the readers work on the next images while this batch runs
                ready: list[tuple[InputItem, object]] = []
                for it, fut in batch:
                    try:
                        ready.append((it, fut.result()))
                    except ImageReadError as err:
                        with lock:
                            _fail(summary, it.path, _reason(err, it.path))
                            bar.update(1)
                if ready:
                    _predict_and_queue(pipe, ready, args, out_dir, color_map, save_ply, writers, finished, stop)
        except BaseException:
            writers.close(cancel=True)
            raise
        writers.close(cancel=bool(stop))
        if stop:
            for _, fut in pending:
                fut.cancel()
    if stop:
        summary.stopped = f"cannot write to {out_dir}: {stop[0].strerror or stop[0]}"
        for it in todo:
            if str(it.path) not in summary.done and str(it.path) not in summary.failed:
                summary.failed[str(it.path)] = _NOT_PROCESSED


_NOT_PROCESSED = "not processed: the run stopped (output not writable)"


class _RunStopped(ValueError):
    """A queued write dropped because an earlier one found the output unwritable."""


def _predict_and_queue(pipe, ready, args, out_dir, color_map, save_ply, writers, finished, stop) -> None:
    """Run one batch and queue its writes; if the batch fails, retry image by image so that the culprit is named."""
    try:
        out = pipe(
            [a for _, a in ready],
            processing_resolution=args.processing_res,
            batch_size=args.batch_size,
            ensemble_size=getattr(args, "ensemble_size", 1),
            output_type="pt",
        )
        # start every device->host copy before the first write waits on one (no per-image synchronisation here)
        hosts = [_to_host(d) for d in out.depth]
    except (ValueError, RuntimeError) as err:
        if len(ready) == 1:
            finished(ready[0][0], None, _InferenceError(f"inference failed: {err}"))
            return
        for one in ready:
            _predict_and_queue(pipe, [one], args, out_dir, color_map, save_ply, writers, finished, stop)
        return
    for (it, rgb), host in zip(ready, hosts):
        writers.submit(it, _write_one, it, host, rgb if save_ply else None, args, out_dir, color_map, stop)


class _InferenceError(ValueError):
    pass


def _to_host(depth):
    """Start copying one (H,W) depth tensor to host memory. On CUDA: an asynchronous copy into pinned memory and
    an event the writer thread waits on, so the main thread goes on to the next batch at once."""
    import torch

    if depth.device.type == "cpu":
        return depth, None
    if depth.device.type == "cuda":
        host = torch.empty(depth.shape, dtype=depth.dtype, pin_memory=True)
        host.copy_(depth, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done
    return depth.cpu(), None


def _write_one(it: InputItem, host, rgb, args, out_dir: Path, color_map, stop: list) -> None:
    """One image's outputs, in a writer thread: depth maps (colour map applied here) and the optional cloud.
    Not started once an earlier write found the output unwritable (``stop`` non-empty)."""
    from apdepth.writer import check_finite_depth, save_depth_outputs

    if stop:
        raise _RunStopped()
    tensor, done = host
    if done is not None:
        done.synchronize()
    depth = tensor.numpy()
    check_finite_depth(depth)  # NaN weights or fp16 overflow: this input fails by name, nothing is written
    save_depth_outputs(out_dir / it.rel.parent, it.rel.name, depth, color_map=color_map)
    if rgb is not None:
        _write_ply(out_dir / it.rel.parent / f"{it.rel.name}.ply", depth, rgb, args)


def _write_ply(path, depth, rgb, args) -> None:
    from apdepth.pointcloud import save_depth_ply

    # depth is affine-invariant [0, 1]; it needs a near/far placement before it can be unprojected
    near, far = getattr(args, "near_far", (1.0, 10.0))
    save_depth_ply(
        path, depth, rgb, focal=getattr(args, "focal", None), fov_deg=getattr(args, "fov", 60.0), near=near, far=far
    )


def _merge_summaries(summary: Summary) -> Summary:
    from accelerate.utils import gather_object

    merged = Summary()
    for part in gather_object([summary]):
        merged.merge(part)
    return merged


def _print_summary(summary: Summary, out_dir: Path, world_size: int = 1) -> bool:
    """Print the summary (stdout) and write ``predict_summary.json``; False (and one error line) if it cannot
    be written."""
    from apdepth.image_io import atomic_write

    n_done, n_skip, n_fail = len(summary.done), len(summary.skipped), len(summary.failed)
    line = f"done: {n_done}  skipped: {n_skip}  failed: {n_fail}"
    if summary.ignored:
        line += f"  ignored: {len(summary.ignored)}"
    print(f"{line}  ->  {out_dir}")
    for name, reason in sorted(summary.failed.items()):
        print(f"  failed: {name}: {reason}")
    for name, stem in sorted(summary.renamed.items()):
        print(f"  renamed: {name} -> {stem}_depth.* (its usual name was taken)")
    shown = sorted(summary.ignored.items())
    for name, reason in shown[:_MAX_LISTED]:
        print(f"  ignored: {name}: {reason}")
    if len(shown) > _MAX_LISTED:
        print(f"  ignored: ... and {len(shown) - _MAX_LISTED} more (listed in {SUMMARY_NAME})")
    record = {
        "done": sorted(summary.done),
        "skipped": sorted(summary.skipped),
        "failed": dict(sorted(summary.failed.items())),
        "ignored": dict(sorted(summary.ignored.items())),
        "renamed": dict(sorted(summary.renamed.items())),
        "stopped": summary.stopped,
        "world_size": world_size,
        "done_per_rank": {str(k): v for k, v in sorted(summary.done_per_rank.items())},
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(out_dir / SUMMARY_NAME, "w") as fh:
            json.dump(record, fh, indent=1)
    except OSError as err:
        summary.stopped = summary.stopped or str(err)
        print(
            f"error: {summary.stopped}; {SUMMARY_NAME} not written (the lines above are the summary)", file=sys.stderr
        )
        return False
    if summary.stopped:
        print(f"error: run stopped: {summary.stopped}", file=sys.stderr)
    return True


_MAX_LISTED = 10  # ignored entries printed one per line; the rest are counted (all are in the JSON summary)
