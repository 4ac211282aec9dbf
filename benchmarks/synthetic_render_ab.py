"""Renderer CPU time per scene: this tree's synthetic renderer against another tree's, alternated scene by scene.

    PYTHONPATH=src python benchmarks/synthetic_render_ab.py --base OLD_SRC [--num 40] [--rounds 3] [--size 256x256]

``OLD_SRC`` is the ``src`` folder of another checkout (e.g. ``git worktree add /tmp/old <commit>`` or
``git archive <commit> src | tar -x -C /tmp/old``). Both renderers are imported into one process (the other
tree's ``apdepth/data/synthetic`` package under a private name: it uses relative imports only), each draws
its own scenes once, and then the same scene is rendered by one and the other in alternating order, so drift
of a shared machine's speed hits both alike. The process uses one torch thread and the ``apdepth synth``
workers' malloc settings. Also checks that both give bit-identical rgb, depth and mask for every scene.

Prints the mean CPU ms per scene, the mean over scenes of each scene's fastest round, and the median of the
per-scene ratios of those minima, with the load average.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _import_other(src: Path, tmp: str):
    pkg = src / "apdepth" / "data" / "synthetic"
    if not (pkg / "render.py").is_file():
        raise ValueError(f"{src} has no apdepth/data/synthetic/render.py: pass a checkout's src folder")
    shutil.copytree(pkg, Path(tmp) / "_base_synthetic", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, tmp)
    return importlib.import_module("_base_synthetic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, type=Path, help="src folder of the checkout to compare against")
    ap.add_argument("--num", type=int, default=40, help="scenes (seeds 1000, 1001, ...)")
    ap.add_argument("--rounds", type=int, default=3, help="times each scene is rendered by each renderer")
    ap.add_argument("--size", default="256x256", help="HxW")
    ap.add_argument("--scene", default="mixed", choices=["indoor", "outdoor", "mixed"])
    args = ap.parse_args()
    if args.num < 1 or args.rounds < 1:
        raise ValueError("--num and --rounds must be at least 1")
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)
    from apdepth.data import synthetic as new
    from apdepth.data.synthetic_cli import _keep_freed_memory

    _keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        base = _import_other(args.base.resolve(), tmp)
        seeds = range(1000, 1000 + args.num)
        scenes = {0: [base.make_scene(s, args.scene) for s in seeds], 1: [new.make_scene(s, args.scene) for s in seeds]}
        renders = {0: base.render, 1: new.render}
        for which in (0, 1):  # warm-up: tables, allocator
            renders[which](*scenes[which][0], h, w)
        best = {(which, i): float("inf") for which in (0, 1) for i in range(args.num)}
        total = [0.0, 0.0]
        for r in range(args.rounds):
            for i in range(args.num):
                outs = {}
                for which in (0, 1) if (i + r) % 2 == 0 else (1, 0):
                    c0 = time.process_time()
                    outs[which] = renders[which](*scenes[which][i], h, w)
                    dt = time.process_time() - c0
                    total[which] += dt
                    best[(which, i)] = min(best[(which, i)], dt)
                for k in ("rgb", "depth", "valid"):
                    if not np.array_equal(outs[0][k], outs[1][k]):
                        raise SystemExit(f"seed {seeds[i]}: {k} differs between the two renderers")
    k = args.num * args.rounds
    mins = [sum(best[(which, i)] for i in range(args.num)) / args.num for which in (0, 1)]
    ratio = statistics.median(best[(1, i)] / best[(0, i)] for i in range(args.num))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{h}x{w} {args.scene}, {args.num} scenes x {args.rounds} rounds, load average {load}; outputs identical")
    print(
        f"mean CPU ms/scene: base {1000 * total[0] / k:.2f}, this tree {1000 * total[1] / k:.2f} "
        f"({100 * (total[1] / total[0] - 1):+.1f}%)"
    )
    print(
        f"per-scene minimum, mean: base {1000 * mins[0]:.2f}, this tree {1000 * mins[1]:.2f} "
        f"({100 * (mins[1] / mins[0] - 1):+.1f}%); median per-scene ratio {100 * (ratio - 1):+.1f}%"
    )


if __name__ == "__main__":
    main()
