"""Render a procedural RGB-D dataset (exact depth) or a contact sheet of synthetic scenes.

Sample ``i`` of a dataset made with ``--seed S`` is scene ``S + i`` and is stored under the id
``f"{S + i:08d}"``, so the same command always writes the same files and a dataset can be extended
by a later run with another ``--seed``/``--num`` (``--skip-existing`` skips finished samples).

Layout of ``--out DIR``::

    rgb/<id>.png            8-bit RGB
    depth/<id>.png          16-bit PNG, planar z-depth in millimetres, 0 = invalid   (--depth-format png)
    depth/<id>.npy          float32 metres, 0 = invalid                              (--depth-format npy)
    mask/<id>.png           8-bit, 255 = valid depth, 0 = sky / beyond the far plane
    intrinsics/<id>.json    {"K": 3x3 pinhole matrix in pixels, "height", "width", "seed", "scene", ...}
    split.txt               one sample per line: "rgb/<id>.png depth/<id>.png mask/<id>.png"
    meta.json               the generator settings

With ``--video``, ``--num`` sequences of ``--frames`` frames along camera trajectories (walk, pan, dolly)::

    <id>/frames/000000.png  8-bit RGB frames (read them as a clip: apdepth predict <id>/frames --video)
    <id>/gt.npz             depth (T,H,W) float32 metres (0 = invalid), valid (T,H,W), K (3,3), poses (T,4,4)
                            camera-to-world with the OpenCV camera frame
    <id>/meta.json          seed, scene, trajectory, frames, size, fps
    sequences.txt           one sequence id per line
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# numpy and the writer are imported where used: `apdepth synth --workers N` starts its worker server (which
# imports torch, ~2 s) before this process has imported anything heavy
if TYPE_CHECKING:
    import numpy as np

PNG_MAX_DEPTH_M = 65.535  # largest depth a 16-bit millimetre PNG can hold


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> (H, W), both positive ints."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--size must look like HEIGHTxWIDTH, e.g. 480x640; got {text!r}")
    h, w = (int(p) for p in parts)
    if h < 8 or w < 8:
        raise ValueError(f"--size must be at least 8x8 pixels, got {h}x{w}")
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="dataset folder to write (created if missing)")
    parser.add_argument("--num", type=int, default=100, help="number of samples (default 100)")
    parser.add_argument("--size", default="480x640", help="image size HEIGHTxWIDTH (default 480x640)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sample; sample i uses seed+i")
    parser.add_argument(
        "--scene",
        choices=["indoor", "outdoor", "mixed"],
        default="mixed",
        help="scene family (default mixed: indoor or outdoor per seed)",
    )
    parser.add_argument(
        "--depth-format",
        choices=["png", "npy"],
        default="png",
        help="png: 16-bit millimetres; npy: float32 metres (default png)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="render in this many processes, one torch thread each (default 1: in-process)",
    )
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep samples whose files already exist (resume an interrupted run)",
    )
    parser.add_argument(
        "--contact-sheet",
        type=Path,
        metavar="PNG",
        help="write a contact sheet (RGB next to coloured depth) of --num scenes to this PNG",
    )
    parser.add_argument("--columns", type=int, default=3, help="scenes per row of the contact sheet (default 3)")
    g = parser.add_argument_group("video (--video): camera trajectories with per-frame depth, intrinsics and poses")
    g.add_argument("--video", action="store_true", help="render --num sequences instead of still images")
    g.add_argument("--frames", type=int, default=48, help="frames per sequence (default 48)")
    g.add_argument(
        "--trajectory",
        choices=["walk", "pan", "dolly", "mixed"],
        default="mixed",
        help="camera motion (default mixed: one per seed)",
    )
    g.add_argument("--fps", type=float, default=24.0, help="frame rate stored with each sequence (default 24)")


def _sample_paths(sid: str, depth_format: str) -> tuple[str, str, str]:
    return f"rgb/{sid}.png", f"depth/{sid}.{depth_format}", f"mask/{sid}.png"


def write_sample(root: Path, seed: int, height: int, width: int, scene: str, depth_format: str = "png") -> str:
    """Render scene ``seed`` and write its files under ``root``; returns its split-file line."""
    from apdepth.data.synthetic import render_scene

    out = render_scene(seed, height, width, scene)
    return _write_rendered(root, seed, _encode_depth(out, depth_format), out, height, width, scene, depth_format)


def write_samples(
    root: Path,
    seeds,
    height: int,
    width: int,
    scene: str,
    depth_format: str = "png",
    on_written=None,
    specs=None,
) -> list[str]:
    """Render scenes ``seeds`` in turn here and write their files (see :func:`write_sample`) in a bounded pool
    of writer threads, so that encoding and writing one sample overlaps rendering the next. ``specs``: the
    scenes of ``seeds`` already drawn, one ``make_scene_spec(seed, scene)`` pair each (e.g. by a parent
    process); drawn here when None. Calls ``on_written(line)`` (in a writer thread) as each sample is complete;
    returns the split-file lines of all. Raises the first write error after the samples already started are
    finished."""
    from apdepth.data.synthetic import make_scene_spec, render
    from apdepth.writer import WriterPool

    seeds = list(seeds)
    if specs is not None and len(specs) != len(seeds):
        raise ValueError(f"got {len(specs)} drawn scenes for {len(seeds)} seeds")
    lines: list[str] = []
    errors: list[BaseException] = []

    def done(_seed, line, err):
        if err is None:
            lines.append(line)
            if on_written is not None:
                on_written(line)
        else:
            errors.append(err)

    with WriterPool(on_done=done) as writers:
        for k, s in enumerate(seeds):
            if errors:
                break
            spec, cam = make_scene_spec(s, scene) if specs is None else specs[k]
            out = render(spec.to_scene(), cam, height, width)  # what render_scene(s, height, width, scene) gives
            stored = _encode_depth(out, depth_format)
            writers.submit(s, _write_rendered, root, s, stored, out, height, width, scene, depth_format)
    if errors:
        raise errors[0]
    return lines


def _encode_depth(out: dict, depth_format: str) -> np.ndarray:
    """The depth as stored: uint16 millimetres (0 = invalid) for png, float32 metres for npy. Raises ValueError
    when the depth does not fit a 16-bit millimetre PNG."""
    import numpy as np

    depth, valid = out["depth"], out["valid"]
    if depth_format != "png":
        return depth.astype(np.float32)
    if float(depth.max(initial=0)) > PNG_MAX_DEPTH_M:
        raise ValueError(f"depth {depth.max():.2f} m does not fit a 16-bit millimetre PNG; use --depth-format npy")
    mm = np.round(depth * 1000.0).astype(np.uint16)
    mm[valid] = np.maximum(mm[valid], 1)  # keep "0 = invalid" unambiguous
    return mm


def _write_rendered(
    root: Path, seed: int, stored_depth: np.ndarray, out: dict, height: int, width: int, scene: str, depth_format: str
) -> str:
    """Write one rendered sample (in a writer thread or a worker process); returns its split-file line."""
    import numpy as np

    from apdepth.writer import atomic_write, save_npy, save_png

    sid = f"{seed:08d}"
    rgb_p, depth_p, mask_p = _sample_paths(sid, depth_format)
    if depth_format == "png":
        save_png(root / depth_p, stored_depth)
    else:
        save_npy(root / depth_p, stored_depth)
    save_png(root / mask_p, (out["valid"].astype(np.uint8) * 255))
    meta = {
        "K": out["intrinsics"].tolist(),
        "height": height,
        "width": width,
        "seed": seed,
        "scene": scene,
        "depth": "planar z-depth",
        "depth_unit": "mm" if depth_format == "png" else "m",
    }
    with atomic_write(root / "intrinsics" / f"{sid}.json", "w") as fh:
        json.dump(meta, fh, indent=1)
    # written last: its presence marks a complete sample; RLE deflate is faster and smaller on rendered RGB
    save_png(root / rgb_p, out["rgb"], rle=True)
    return " ".join((rgb_p, depth_p, mask_p))


def _keep_freed_memory() -> None:
    """Make glibc's ``malloc`` keep freed memory in this process instead of handing it back to the kernel.

    By default blocks above a (moving) threshold get their own ``mmap`` and the top of the heap is trimmed on
    ``free``, so each render's large temporaries (a 256² scene allocates tens of MB) come back as fresh pages:
    ~2,600 page faults and ~8 ms of kernel time per 256² scene, a tenth of its CPU. Fixed thresholds keep the
    peak in the heap for reuse. Only for processes that do nothing but render (the worker processes); a
    no-op where ``mallopt`` is missing."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value
    mallopt(m_trim_threshold, 1 << 30)


def _init_worker() -> None:
    import torch

    # one thread per process: processes scale across cores without torch's thread pools competing
    torch.set_num_threads(1)
    _keep_freed_memory()


def _worker_context():
    """The multiprocessing context of the worker processes: forked from a server that preloads the renderer."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # the package itself is torch-free (scenes are drawn with numpy): preload the renderer's modules
    ctx.set_forkserver_preload(["apdepth.data.synthetic.shading", "apdepth.data.synthetic_cli", "apdepth.writer"])
    return ctx


def _start_worker_server() -> None:
    """Start the worker server now (it then imports torch while this process carries on); a no-op where
    workers are spawned instead. :func:`_worker_pool` would start it anyway, only later."""
    if _worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _worker_pool(workers: int):
    """A pool of ``workers`` rendering processes, one torch thread each.

    Workers are forked from a server process that imports the renderer (and torch) once, before any torch
    thread exists, instead of each spawned worker importing torch again (about 2 s of CPU each) after the
    parent did: a start-up cost paid per run, on the critical path of short runs. Forking the parent itself
    after torch has started threads can hang, hence the server; platforms without one fall back to spawning.
    """
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=_worker_context(), initializer=_init_worker)


def _seed_runs(todo: list[int], workers: int) -> list[list[int]]:
    """``todo`` cut into consecutive runs of seeds, one worker task each: up to 8 seeds while many remain, then
    shorter runs (a third of the remainder per worker, at least 1) so that the workers finish close together
    instead of one rendering a last long run while the others idle."""
    runs, i = [], 0
    while i < len(todo):
        remaining = len(todo) - i
        size = max(1, min(8, -(-remaining // (3 * workers))))
        runs.append(todo[i : i + size])
        i += size
    return runs


def _noop() -> None:
    return None


def _render_in_workers(pool, workers: int, root: Path, todo: list[int], height, width, scene, depth_format, on_run):
    """Write samples ``todo`` with the worker processes of ``pool``; returns their split-file lines.

    The parent never imports torch (~2 s). The first task forks a worker, which waits until the worker server
    has imported torch (one core busy for ~2 s); meanwhile a thread of this process, at the lowest CPU
    priority (so that it only takes a core nobody else wants, not the server's), draws the first runs' scenes
    (numpy only, ~7 ms a scene) and they are handed to the workers with their seeds; the workers draw the
    rest themselves. At most ``window`` runs are in flight (memory stays flat for any ``--num``). Worker
    tasks are short runs of seeds, so that a worker renders the next scene while its writer threads encode
    and fsync the last one (writing one sample costs ~11 ms of CPU but ~30 ms of wall time, mostly fsync).
    ``on_run(k)`` is called with the number of samples of each finished run, in order."""
    import os
    import threading
    from collections import deque

    from apdepth.data.synthetic.scenes import make_scene_spec

    runs = _seed_runs(todo, workers)
    drawn: list[list] = []
    started = threading.Event()

    def draw():
        if sys.platform.startswith("linux"):  # there a thread has its own nice value (elsewhere the process's)
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except OSError:
                pass
        for run in runs:
            specs = []
            for s in run:
                if started.is_set():
                    return
                specs.append(make_scene_spec(s, scene))
            drawn.append(specs)

    drawer = threading.Thread(target=draw, name="synth-draw", daemon=True)
    drawer.start()
    try:
        pool.submit(_noop)  # returns once the first worker is forked, i.e. the server has imported torch
    finally:
        started.set()
        drawer.join()
    window = 4 * workers
    pending: deque = deque()
    lines: list[str] = []
    for k, run in enumerate(runs):
        specs = drawn[k] if k < len(drawn) else None
        pending.append(pool.submit(write_samples, root, run, height, width, scene, depth_format, specs=specs))
        # the runs drawn here (a few hundred scenes at most) go at once; the others as results come back
        while k >= len(drawn) and len(pending) > window:
            done = pending.popleft().result()
            lines.extend(done)
            on_run(len(done))
    while pending:
        done = pending.popleft().result()
        lines.extend(done)
        on_run(len(done))
    return lines


def write_dataset(
    root,
    num: int,
    height: int,
    width: int,
    seed: int = 0,
    scene: str = "mixed",
    depth_format: str = "png",
    skip_existing: bool = False,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Write samples ``seed .. seed+num-1``; returns the split-file path. ``split.txt`` keeps the
    lines of earlier runs, so extending a dataset lists every sample. ``workers > 1`` renders in
    that many worker processes (see :func:`_worker_pool`); the files are identical either way."""
    from tqdm import tqdm

    from apdepth.writer import atomic_write, remove_stale_temps

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if depth_format not in ("png", "npy"):
        raise ValueError(f"depth format must be png or npy, got {depth_format!r}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines, todo = [], []
    for s in range(seed, seed + num):
        paths = _sample_paths(f"{s:08d}", depth_format)
        if (
            skip_existing
            and all((root / p).exists() for p in paths)
            and (root / "intrinsics" / f"{s:08d}.json").exists()
        ):
            lines.append(" ".join(paths))
        else:
            todo.append(s)
    # hidden temporary files of a killed run (never counted as samples above) are removed
    remove_stale_temps(
        root / p
        for s in range(seed, seed + num)
        for p in (*_sample_paths(f"{s:08d}", depth_format), f"intrinsics/{s:08d}.json")
    )
    bar = tqdm(total=num, initial=num - len(todo), desc="synth", unit="img", disable=not progress or None)
    if workers == 1 or len(todo) < 2:
        lines += write_samples(root, todo, height, width, scene, depth_format, on_written=lambda _line: bar.update())
    else:
        n = min(workers, len(todo))
        with _worker_pool(n) as pool:
            lines += _render_in_workers(pool, n, root, todo, height, width, scene, depth_format, bar.update)
    bar.close()
    split = root / "split.txt"
    old = split.read_text().split("\n") if split.exists() else []
    merged = sorted({ln.strip() for ln in old + lines if ln.strip()})
    with atomic_write(split, "w") as fh:
        fh.write("\n".join(merged) + "\n")
    with atomic_write(root / "meta.json", "w") as fh:
        json.dump(
            {
                "generator": "apdepth synth",
                "size": [height, width],
                "scene": scene,
                "depth_format": depth_format,
                "depth": "planar z-depth",
                "depth_unit": "mm" if depth_format == "png" else "m",
                "last_seed_range": [seed, seed + num - 1],
            },
            fh,
            indent=1,
        )
    return split


def write_sequence(
    root: Path, seed: int, frames: int, height: int, width: int, scene: str, trajectory: str | None, fps: float
) -> str:
    """Render sequence ``seed`` and write it under ``root/<id>/``; returns ``<id>``.

    ``frames/000000.png ...`` (8-bit RGB), ``gt.npz`` (``depth`` float32 (T,H,W) metres with 0 = invalid,
    ``valid`` bool (T,H,W), ``K`` (3,3) pinhole intrinsics in pixels, ``poses`` (T,4,4) float64
    camera-to-world, OpenCV camera frame) and ``meta.json`` (written last: marks a complete sequence)."""
    import io

    import numpy as np

    from apdepth.data.synthetic.video import render_sequence
    from apdepth.writer import atomic_write, save_png

    out = render_sequence(seed, frames, height, width, scene, trajectory)
    sid = f"{seed:08d}"
    seq = root / sid
    for t, rgb in enumerate(out["rgb"]):
        save_png(seq / "frames" / f"{t:06d}.png", rgb, rle=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, depth=out["depth"], valid=out["valid"], K=out["intrinsics"], poses=out["poses"])
    with atomic_write(seq / "gt.npz") as fh:
        fh.write(buf.getvalue())
    meta = {
        "seed": seed,
        "scene": scene,
        "trajectory": out["trajectory"],
        "frames": frames,
        "height": height,
        "width": width,
        "fps": fps,
        "depth": "planar z-depth",
        "depth_unit": "m",
        "poses": "camera-to-world, OpenCV camera frame (x right, y down, z forward)",
    }
    with atomic_write(seq / "meta.json", "w") as fh:
        json.dump(meta, fh, indent=1)
    return sid


def write_video_dataset(
    root,
    num: int,
    frames: int,
    height: int,
    width: int,
    seed: int = 0,
    scene: str = "mixed",
    trajectory: str = "mixed",
    fps: float = 24.0,
    skip_existing: bool = False,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Write sequences ``seed .. seed+num-1`` (see :func:`write_sequence`) and ``sequences.txt`` (one id a line);
    returns that file's path."""
    from tqdm import tqdm

    from apdepth.writer import atomic_write

    if num < 1 or frames < 2:
        raise ValueError(f"--num must be >= 1 and --frames >= 2, got {num} and {frames}")
    if seed < 0 or workers < 1 or not fps > 0:
        raise ValueError("--seed must be >= 0, --workers >= 1 and --fps > 0")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    traj = None if trajectory == "mixed" else trajectory
    todo = [s for s in range(seed, seed + num) if not (skip_existing and (root / f"{s:08d}" / "meta.json").exists())]
    bar = tqdm(total=num, initial=num - len(todo), desc="synth --video", unit="seq", disable=not progress or None)
    args = [(root, s, frames, height, width, scene, traj, fps) for s in todo]
    if workers == 1 or len(todo) < 2:
        for a in args:
            write_sequence(*a)
            bar.update()
    else:
        with _worker_pool(min(workers, len(todo))) as pool:
            for fut in [pool.submit(write_sequence, *a) for a in args]:
                fut.result()
                bar.update()
    bar.close()
    listing = root / "sequences.txt"
    old = listing.read_text().split() if listing.exists() else []
    ids = sorted(set(old) | {f"{s:08d}" for s in range(seed, seed + num)})
    with atomic_write(listing, "w") as fh:
        fh.write("\n".join(ids) + "\n")
    return listing


def contact_sheet(seeds, height: int, width: int, scene: str = "mixed", columns: int = 3) -> np.ndarray:
    """A uint8 image: for each seed, its RGB next to its depth coloured by colorize_depth (2-98%
    stretch, invalid pixels black), ``columns`` scenes per row, separated by white gaps."""
    import numpy as np

    from apdepth.data.synthetic import render_scene
    from apdepth.visualize import colorize_depth

    seeds = list(seeds)
    if not seeds:
        raise ValueError("contact sheet needs at least one scene")
    if columns < 1:
        raise ValueError(f"--columns must be >= 1, got {columns}")
    gap = 4
    rows = -(-len(seeds) // columns)
    cell_w = 2 * width + gap
    sheet = np.full((rows * (height + gap) + gap, columns * (cell_w + 2 * gap) + gap, 3), 255, np.uint8)
    for k, s in enumerate(seeds):
        out = render_scene(int(s), height, width, scene)
        col = colorize_depth(out["depth"], vmin=None, vmax=None, valid=out["valid"])
        r, c = divmod(k, columns)
        y = gap + r * (height + gap)
        x = 2 * gap + c * (cell_w + 2 * gap)
        sheet[y : y + height, x : x + width] = out["rgb"]
        sheet[y : y + height, x + width + gap : x + 2 * width + gap] = col
    return sheet


def run(args: argparse.Namespace) -> int:
    try:
        height, width = parse_size(args.size)
        if args.num < 1:
            raise ValueError(f"--num must be >= 1, got {args.num}")
        if args.out is None and args.contact_sheet is None:
            raise ValueError("give --out DIR (a dataset) and/or --contact-sheet PNG")
        if args.out is not None and args.workers > 1:
            _start_worker_server()  # its ~2 s of importing torch overlap the rest of this process's start-up
        from apdepth.image_io import unwritable_reason

        for flag, folder in (
            ("--out", args.out),
            ("--contact-sheet", args.contact_sheet and Path(args.contact_sheet).parent),
        ):
            reason = folder is not None and unwritable_reason(folder)
            if reason:
                raise ValueError(f"cannot write to {flag} {folder}: {reason}")
        if args.contact_sheet is not None:
            from apdepth.writer import save_png

            sheet = contact_sheet(range(args.seed, args.seed + args.num), height, width, args.scene, args.columns)
            save_png(args.contact_sheet, sheet)
            print(f"wrote {args.contact_sheet} ({args.num} scenes)")
        if args.video:
            if args.out is None:
                raise ValueError("--video needs --out DIR")
            listing = write_video_dataset(
                args.out,
                args.num,
                args.frames,
                height,
                width,
                args.seed,
                args.scene,
                args.trajectory,
                args.fps,
                args.skip_existing,
                workers=args.workers,
            )
            print(f"wrote {args.num} sequences of {args.frames} frames to {args.out} (list {listing})")
            return 0
        if args.out is not None:
            split = write_dataset(
                args.out,
                args.num,
                height,
                width,
                args.seed,
                args.scene,
                args.depth_format,
                args.skip_existing,
                workers=args.workers,
            )
            print(f"wrote {args.num} samples to {args.out} (split file {split})")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
