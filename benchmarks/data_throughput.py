"""Training data supply: samples/s the data pipeline delivers, to compare with what a training step consumes.

Measures, on this machine:

* the procedural renderer alone (scenes/s in one process, one torch thread), the cost behind both
  ``apdepth synth`` and the ``synthetic_stream`` dataset;
* the training loader (:class:`apdepth.training.data.StepBatches` in a ``DataLoader``, exactly as the trainer
  builds it) over a config's datasets, with crops, flips and photometric augmentation, for each
  ``--workers`` count: samples/s delivered.

A training step consumes ``micro_batch / seconds_per_step`` samples/s (the trainer prints s/step); the
data pipeline keeps up when it delivers more. Example (the bundled model's recipe):

    python benchmarks/data_throughput.py --config configs/train/bundled/apdepth.yaml \\
        data.datasets.0.path=data/bundled_train --workers 0 1 2 --batches 30
"""

from __future__ import annotations

import argparse
import time

import torch


def render_rate(n: int, size: int) -> float:
    """Scenes/s of ``render_scene`` at ``size``x``size`` in this process (after one warm-up render)."""
    from apdepth.data.synthetic import render_scene

    render_scene(10_000_000, size, size, "mixed")
    t0 = time.perf_counter()
    for i in range(n):
        render_scene(10_000_001 + i, size, size, "mixed")
    return n / (time.perf_counter() - t0)


def loader_rate(cfg, workers: int, batches: int) -> float:
    """Samples/s a DataLoader over the config's StepBatches delivers with ``workers`` worker processes."""
    from torch.utils.data import DataLoader

    from apdepth.training.data import StepBatches

    ds = StepBatches(
        cfg.data.datasets,
        cfg.optim.micro_batch,
        cfg.seed,
        hflip=cfg.data.hflip,
        normalize_depth=cfg.model.task != "prior",
        photometric=cfg.data.photometric,
    )
    warm = max(2, workers)
    loader = DataLoader(
        ds,
        batch_size=None,
        sampler=range(warm + batches),
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
    it = iter(loader)
    for _ in range(warm):  # worker start-up is paid once per run, not per sample
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * cfg.optim.micro_batch / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--config", required=True, help="training config whose data section is measured")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (e.g. the data path)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader worker counts to measure")
    p.add_argument("--batches", type=int, default=20, help="batches timed per worker count (default 20)")
    p.add_argument("--render", type=int, default=10, help="scenes rendered for the renderer rate (0 = skip)")
    p.add_argument("--render-size", type=int, default=256)
    args = p.parse_args(argv)
    from apdepth.training.config import load_config

    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    print(
        f"config {args.config}: micro_batch {cfg.optim.micro_batch}, datasets "
        + ", ".join(f"{d.name}({d.path or d.scene}, size {d.size})" for d in cfg.data.datasets)
        + f", photometric p={cfg.data.photometric.probability}"
    )
    if args.render:
        print(
            f"renderer: {render_rate(args.render, args.render_size):.1f} scenes/s at {args.render_size}² "
            "(one process, one thread)"
        )
    for w in args.workers:
        print(f"loader, {w} workers: {loader_rate(cfg, w, args.batches):.1f} samples/s delivered")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
