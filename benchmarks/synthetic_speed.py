"""Throughput of the synthetic scene renderer (images per second), printed as a Markdown table.

    PYTHONPATH=src python benchmarks/synthetic_speed.py [--num 24] [--scene mixed] [--threads N] [--write]

Each size renders the same ``--num`` seeds with ``render_batch`` after one warm-up batch; the
reported figure is the best of ``--repeats`` runs, which filters out interference from other
processes on a shared machine. The CPU-time column (summed over threads) is the work per image and
is less sensitive to such interference than the wall-clock figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from apdepth.data.synthetic import render_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num", type=int, default=24, help="images per timed batch")
    ap.add_argument("--scene", default="mixed", choices=["indoor", "outdoor", "mixed"])
    ap.add_argument("--sizes", default="256x256,480x640", help="comma-separated HxW list")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument(
        "--write",
        action="store_true",
        help="also time `apdepth synth` itself (write_dataset: render, encode and write every file)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = list(range(1000, 1000 + args.num))
    rows = []
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.lower().split("x"))
        render_batch(seeds[:2], h, w, args.scene)  # warm-up: tables, allocator
        best = cpu = float("inf")
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            render_batch(seeds, h, w, args.scene)
            best = min(best, time.perf_counter() - t0)
            cpu = min(cpu, time.process_time() - c0)
        rows.append((f"{h}x{w}", args.num / best, 1000 * best / args.num, 1000 * cpu / args.num))
        if args.write:
            import tempfile

            from apdepth.data.synthetic_cli import write_dataset

            best = cpu = float("inf")
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    t0, c0 = time.perf_counter(), time.process_time()
                    write_dataset(tmp, args.num, h, w, seed=seeds[0], scene=args.scene, progress=False)
                    best = min(best, time.perf_counter() - t0)
                    cpu = min(cpu, time.process_time() - c0)
            rows.append(
                (f"{h}x{w}, apdepth synth (written)", args.num / best, 1000 * best / args.num, 1000 * cpu / args.num)
            )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, scene={args.scene}, {args.num} images per batch\n"
    )
    print("| size (HxW) | images/s | wall ms/image | CPU ms/image (all threads) |")
    print("|---|---:|---:|---:|")
    for name, ips, ms, cpu_ms in rows:
        print(f"| {name} | {ips:.1f} | {ms:.1f} | {cpu_ms:.1f} |")


if __name__ == "__main__":
    main()
