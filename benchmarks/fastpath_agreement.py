"""How far each fast-path option moves the output from the plain fp32 path, on the same inputs.

Loads a checkpoint (default: the bundled model), runs the plain fp32 eager pipeline on the example
images, then each option alone, and prints the mean relative error of the depth maps
(mean |d_option - d_fp32| / mean |d_fp32|) as a Markdown table.

    python benchmarks/fastpath_agreement.py --device cpu
    python benchmarks/fastpath_agreement.py --device cuda --checkpoint developy/ApDepth --prior depth-anything/Depth-Anything-V2-Small-hf
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from apdepth.image_io import read_image

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--prior", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--processing-res", type=int, default=None)
    p.add_argument("--images", nargs="*", default=None, help="default: assets/examples/*")
    p.add_argument(
        "--tile-size", type=int, default=128, help="VAE tile size for the tiling row (small enough to engage)"
    )
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--compile-mode", default="default", choices=["default", "max-autotune"])
    args = p.parse_args(argv)
    from apdepth.runtime import default_compile_cache, load_pipeline, pick_device

    device = pick_device(args.device)
    paths = (
        [Path(x) for x in args.images]
        if args.images
        else sorted(q for q in EXAMPLES.iterdir() if q.suffix in (".png", ".jpg"))
    )
    images = [read_image(q) for q in paths]

    def load(dtype=torch.float32):
        # the plain pipeline: each fast path is switched on explicitly below
        return load_pipeline(args.checkpoint, prior=args.prior, device=device, dtype=dtype, fast_path=False)

    def run(pipe):
        t0 = time.perf_counter()
        out = [pipe(im, processing_resolution=args.processing_res).depth[0] for im in images]
        return out, time.perf_counter() - t0

    ref, _ = run(load())

    def rel(out):
        return float(np.mean([np.abs(a - b).mean() / np.abs(b).mean() for a, b in zip(out, ref)]))

    rows = []
    options = [("bf16 end to end (prior included)", lambda: load(torch.bfloat16))]
    if device.type == "cuda":
        options.append(("fp16 end to end (prior included)", lambda: load(torch.float16)))

    def separate():
        pipe = load()
        pipe.fuse_vae_encode = False
        return pipe

    def channels_last():
        pipe = load()
        pipe.enable_channels_last()
        return pipe

    def tiled():
        pipe = load()
        pipe.enable_vae_tiling(tile_size=args.tile_size)
        return pipe

    def compiled(cuda_graphs=False):
        pipe = load()
        pipe.enable_compile(mode=args.compile_mode, cuda_graphs=cuda_graphs, cache_dir=default_compile_cache())
        return pipe

    options += [
        ("two VAE encoder calls instead of one", separate),
        ("channels_last", channels_last),
        (f"tiled VAE ({args.tile_size} px tiles)", tiled),
    ]
    if not args.skip_compile:
        options.append((f"torch.compile, {args.compile_mode} mode (first calls include compiling)", compiled))
        if device.type == "cuda":
            options.append(
                ("torch.compile + CUDA graphs (first calls include compiling)", lambda: compiled(cuda_graphs=True))
            )
    for name, make in options:
        out, seconds = run(make())
        rows.append((name, rel(out), seconds))
        print(f"{name}: {rows[-1][1]:.5f} ({seconds:.1f} s)", flush=True)

    print()
    print(
        f"{len(images)} images, device {device}, checkpoint {args.checkpoint or 'bundled'}, "
        f"processing resolution {args.processing_res or 'model default'}"
    )
    print()
    print("| option | mean relative error vs fp32 | seconds for all images |")
    print("|---|---|---|")
    for name, err, seconds in rows:
        print(f"| {name} | {err:.2e} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
