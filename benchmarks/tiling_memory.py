"""Peak memory and time of the VAE stage (encode image + prior, decode) with and without VAE tiling.

Very large inputs at native resolution (``processing_resolution=0``) are bounded by the VAE, which works at full
pixel resolution. Each variant runs in a fresh process, so that the peak (resident set size on a CPU, allocated
memory on a GPU) is its own. Inputs: an example image resized to ``--size`` and its prior's disparity, as in the
pipeline. Also reports the relative difference that tiling makes to the decoded output (seam blending).

    python benchmarks/tiling_memory.py --bundled --device cpu --size 4096          # 2-core CPU
    python benchmarks/tiling_memory.py --preset sd2 --device cuda --dtype bf16 --size 4096
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from latency import add_model_args, load  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p, default_dtype="fp32")
    p.add_argument("--size", type=int, default=4096, help="square input side in pixels (default 4096)")
    p.add_argument("--tile", type=int, default=512, help="tile size in pixels (default 512, as --vae-tiling)")
    p.add_argument("--image", default=str(ROOT / "assets" / "examples" / "synthetic_street_a.png"))
    p.add_argument("--child", choices=["untiled", "tiled"], help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _rss_gb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**30


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(args) -> dict:
    from apdepth.image_io import read_image
    from apdepth.runtime import pick_device, pick_dtype

    device, dtype = pick_device(args.device), pick_dtype(args.dtype)
    pipe = load(args, device, dtype)
    if args.child == "tiled":
        pipe.enable_vae_tiling(tile_size=args.tile)
    img = torch.from_numpy(read_image(args.image)).permute(2, 0, 1)[None].float()
    rgb = F.interpolate(img, size=(args.size, args.size), mode="bilinear", align_corners=False).clamp(0, 1).to(device)
    with torch.no_grad():
        prior_in = pipe.prior_condition(rgb)
        x = torch.cat([rgb, prior_in[:, None].expand(-1, 3, -1, -1)]).to(dtype) * 2 - 1
        del rgb, prior_in
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else _rss_gb()
        t0 = time.perf_counter()
        z = pipe.encode(x)  # (2,4,h,w): image and prior in one call, as the pipeline does
        out = pipe.decode_depth(z[:1])  # full-resolution decode (the depth decode has the same cost)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else _peak_rss_gb()
    np.save(args.save, out[0].float().cpu().numpy())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return dict(variant=args.child, seconds=seconds, peak_gb=peak, added_gb=peak - base, device=name)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
        for variant in ("untiled", "tiled"):
            save = str(Path(tmp) / f"{variant}.npy")
            res = subprocess.run(
                [sys.executable, __file__, *passthrough, "--child", variant, "--save", save],
                capture_output=True,
                text=True,
            )
            if res.returncode:
                tail = res.stderr.strip().splitlines()[-1:] or ["?"]
                rows[variant] = dict(variant=variant, error=tail[0])
                print(f"{variant}: failed: {tail[0]}", flush=True)
                continue
            rows[variant] = json.loads(res.stdout.strip().splitlines()[-1])
            rows[variant]["depth"] = np.load(save)
            print(json.dumps({k: v for k, v in rows[variant].items() if k != "depth"}), flush=True)
    diff = None
    if all("depth" in r for r in rows.values()):
        a, b = rows["tiled"]["depth"].astype(np.float64), rows["untiled"]["depth"].astype(np.float64)
        diff = float(np.abs(a - b).mean() / np.abs(b).mean())
    device = next((r["device"] for r in rows.values() if "device" in r), args.device)
    what = "bundled model" if args.bundled else (args.checkpoint or f"random {args.preset}")
    cpu = device.startswith("CPU")
    print(f"\nVAE stage at {args.size}x{args.size} ({what}, {args.dtype}, {device}); tiles of {args.tile} px\n")
    print(f"| variant | seconds | peak {'RSS' if cpu else 'allocated'} GB | added by the stage GB |")
    print("|---|---|---|---|")
    for r in rows.values():
        if "error" in r:
            print(f"| {r['variant']} | failed: {r['error']} | | |")
        else:
            print(f"| {r['variant']} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | {r['added_gb']:.2f} |")
    if diff is not None:
        print(f"\nMean relative difference of the tiled output from the untiled one: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
