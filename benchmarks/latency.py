"""Inference latency, throughput, memory and distance to the hardware floor.

Builds the paper-size architecture (``--preset sd2``: SD2 U-Net with 8 input channels, SD VAE,
Depth Anything V2 Small) with random weights, the bundled small model (``--bundled``), or a real
checkpoint (``--checkpoint``); times each stage and the whole pipeline (CUDA events on a GPU,
perf_counter on a CPU; warm-up, then the median of many runs) and prints a Markdown table:
ms/image, images/s, peak memory, achieved TFLOP/s and the floor (own FLOP count over a matrix rate
measured on the same device). Optionally checks every fast-path option against the plain fp32 path.

Examples (see docs/benchmarks.md for recorded results):

    # GPU, paper-size: the whole sweep is benchmarks/gpu_benchmark.sh; one piece of it by hand:
    python benchmarks/latency.py --preset sd2 --dtype bf16 --resolutions 768 --batch-sizes 1 8 --huge --check
    # 2-core CPU, the bundled small model at 768x768
    python benchmarks/latency.py --bundled --device cpu --dtype fp32 --resolutions 768 --batch-sizes 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from apdepth.models import build_pipeline
from apdepth.prior import normalize_prior_disparity


def add_model_args(p: argparse.ArgumentParser, default_dtype: str) -> None:
    """Which model (random paper-size or small architecture, a checkpoint, the bundled one), device and dtype."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default="sd2", help="random-weight architecture: sd2 | small | tiny (default sd2)")
    src.add_argument("--checkpoint", help="a pipeline folder or hub id instead of random weights")
    src.add_argument("--bundled", action="store_true", help="the bundled default model")
    p.add_argument("--prior", help="prior for checkpoints without one")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=default_dtype, choices=["fp32", "fp16", "bf16"])


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(p, default_dtype="bf16")
    p.add_argument("--resolutions", type=int, nargs="+", default=[512, 768, 1024])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="time the whole pipeline on NxN inputs (resized to each --resolutions value inside); default: same as the resolution",
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also time the torch.compile fast path")
    p.add_argument("--cuda-graphs", action="store_true", help="compile with CUDA graphs (implies --compile)")
    p.add_argument(
        "--compile-mode",
        default=None,
        choices=["default", "max-autotune"],
        help="Inductor tuning level (default: default, as ApDepthPipeline.enable_compile)",
    )
    p.add_argument(
        "--skip-eager", action="store_true", help="time only the compiled path (with --compile/--cuda-graphs)"
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="channels_last memory format (what `apdepth predict` uses on a CPU)",
    )
    p.add_argument("--separate-encode", action="store_true", help="two VAE encoder calls instead of one fused call")
    p.add_argument(
        "--exact-speedups",
        action="store_true",
        help="the decoder's 3 output channels folded into the 1 kept, and the text conditioning's cross-attention "
        "keys/values projected once per call (ApDepthPipeline.enable_exact_speedups; what the commands use)",
    )
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True (CUDA)")
    p.add_argument(
        "--huge", action="store_true", help="also run one 4096x4096 input at native resolution with VAE tiling"
    )
    p.add_argument("--huge-size", type=int, default=4096, help="side of the --huge input (default 4096)")
    p.add_argument("--check", action="store_true", help="relative error of each timed path against plain fp32 eager")
    p.add_argument(
        "--flops-only", action="store_true", help="only count FLOPs per stage (meta device: no memory, no time)"
    )
    p.add_argument("--json", help="also write the rows as JSON here")
    return p.parse_args(argv)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Median wall time of a callable in ms: CUDA events on a GPU, perf_counter elsewhere."""

    def __init__(self, device, warmup, iters):
        self.device, self.warmup, self.iters = device, warmup, iters

    def __call__(self, fn):
        for _ in range(self.warmup):
            fn()
        sync(self.device)
        times = []
        for _ in range(self.iters):
            if self.device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def matmul_rate(device, dtype) -> float:
    """Measured dense matrix-multiply rate in TFLOP/s (the 'floor' denominator)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = Timer(device, 3, 10 if device.type == "cuda" else 5)(lambda: a @ b)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def count_flops(pipe, res, batch) -> dict[str, float]:
    """FLOPs per stage for one batch, counted with torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    device, dtype = pipe.unet.device, pipe.unet.dtype
    rgb = torch.rand(batch, 3, res, res, device=device, dtype=dtype)
    out = {}
    with torch.no_grad():
        if pipe.prior is not None:
            with FlopCounterMode(display=False) as fc:
                disp = pipe.prior_disparity(rgb)
            out["prior"] = fc.get_total_flops()
            # (quantiles are data-dependent and cannot run on the meta device; they cost no matmul FLOPs)
            prior_in = disp if disp.is_meta else normalize_prior_disparity(disp, pipe.config.prior_normalization)
            prior_in = prior_in.to(dtype)
        with FlopCounterMode(display=False) as fc:
            pipe.encode(torch.cat([rgb, rgb]) if pipe.prior is not None else rgb)
        out["vae_encode"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            lat = pipe.predict_latent(rgb, prior_in if pipe.prior is not None else None)
        out["unet"] = fc.get_total_flops() - out["vae_encode"]  # predict_latent includes the encode
        with FlopCounterMode(display=False) as fc:
            pipe.decode_depth(lat)
        out["vae_decode"] = fc.get_total_flops()
    out["total"] = sum(out.values())
    return out


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def load(args, device, dtype):
    from apdepth.runtime import load_pipeline

    if args.checkpoint or args.bundled:  # fast paths are set per row by the caller
        return load_pipeline(args.checkpoint or None, prior=args.prior, device=device, dtype=dtype, fast_path=False)
    pipe = build_pipeline(args.preset, seed=0).to(dtype=dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stage_times(pipe, timer, res, batch, input_size=None):
    """Per-stage times (ms per batch) on device tensors, then the whole __call__."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    rgb = torch.rand(batch, 3, res, res, device=device)
    graphs = getattr(pipe, "_cuda_graphs", False)
    # With CUDA graphs every call below is a new step, and every output kept for a later stage is cloned:
    # a replay may reuse the memory of the previous replay's outputs.
    mark = torch.compiler.cudagraph_mark_step_begin if graphs else (lambda: None)
    if graphs:
        plain = timer

        def timer(fn):
            return plain(lambda: (mark(), fn()))

    with torch.no_grad():
        t = {}
        prior_in = None
        if pipe.prior is not None:
            t["prior"] = timer(lambda: pipe.prior_disparity(rgb))
            mark()
            prior_in = pipe.prior_condition(rgb).to(dtype)
            x = torch.cat([rgb, prior_in[:, None].expand(-1, 3, -1, -1)]).to(dtype) * 2 - 1
        else:
            x = rgb.to(dtype) * 2 - 1
        t["vae_encode"] = timer(lambda: pipe.encode(x))
        mark()
        z = pipe.encode(x).clone()
        sample = torch.cat(z.chunk(2)[::-1], 1) if pipe.prior is not None else z
        tt = torch.full((batch,), pipe.config.timestep, device=device, dtype=torch.long)
        cond = pipe.text_embedding(batch).to(device=device, dtype=dtype)
        t["unet"] = timer(lambda: pipe.unet(sample, tt, encoder_hidden_states=cond, return_dict=False)[0])
        mark()
        lat = pipe.unet(sample, tt, encoder_hidden_states=cond, return_dict=False)[0].clone()
        t["vae_decode"] = timer(lambda: pipe.decode_depth(lat))
        full = rgb if not input_size else torch.rand(batch, 3, input_size, input_size, device=device)
        t["pipeline"] = timer(lambda: pipe(full, processing_resolution=res, batch_size=batch, output_type="pt"))
    return t


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean() / b.float().abs().mean().clamp_min(1e-12))


def main(argv=None) -> int:
    args = parse_args(argv)
    from apdepth.runtime import default_compile_cache, pick_device, pick_dtype

    device, dtype = pick_device(args.device), pick_dtype(args.dtype)
    if args.flops_only:
        with torch.device("meta"):
            pipe = build_pipeline(args.preset, seed=0)
        print("| res | batch | prior | vae_encode (image + prior) | unet | vae_decode | total (TFLOP per image) |")
        print("|---|---|---|---|---|---|---|")
        for res in args.resolutions:
            f = count_flops(pipe, res, 1)
            print(
                f"| {res} | 1 | "
                + " | ".join(
                    f"{f.get(k, 0) / 1e12:.3f}" for k in ("prior", "vae_encode", "unet", "vae_decode", "total")
                )
                + " |"
            )
        return 0
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    timer = Timer(device, args.warmup, args.iters)
    rate = matmul_rate(device, dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# device: {name}; dtype {args.dtype}; measured matmul rate {rate:.1f} TFLOP/s", flush=True)

    pipe = load(args, device, dtype)
    pipe.fuse_vae_encode = not args.separate_encode
    if args.channels_last:
        pipe.enable_channels_last()
    if args.exact_speedups:
        pipe.enable_exact_speedups()
    if args.cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # the reference is always the plain fp32 path (no speed-up), so each option is checked against it
    changed = dtype != torch.float32 or args.exact_speedups or args.cudnn_benchmark or args.compile or args.cuda_graphs
    ref_pipe = load(args, device, torch.float32) if args.check and changed else None
    variants = [] if args.skip_eager and (args.compile or args.cuda_graphs) else [("eager", None)]
    if args.compile or args.cuda_graphs:
        variants.append(("compile+cudagraphs" if args.cuda_graphs else "compile", args.cuda_graphs))

    flops_at = {
        res: count_flops(pipe, res, 1) for res in args.resolutions
    }  # eager: the count does not depend on compiling
    rows = []
    for variant, graphs in variants:
        if variant != "eager":
            pipe.enable_compile(cuda_graphs=bool(graphs), mode=args.compile_mode, cache_dir=default_compile_cache())
        for res in args.resolutions:
            flops = flops_at[res]
            for bs in args.batch_sizes:
                reset_peak(device)
                try:
                    t = stage_times(pipe, timer, res, bs, args.input_size)
                except torch.OutOfMemoryError:
                    print(f"{variant} {res} bs{bs}: out of memory", flush=True)
                    continue
                per_img = t["pipeline"] / bs
                row = dict(
                    variant=variant,
                    res=res,
                    input=args.input_size or res,
                    batch=bs,
                    ms_per_image=per_img,
                    images_per_s=1e3 / per_img,
                    **{f"{k}_ms": v / bs for k, v in t.items() if k != "pipeline"},
                    peak_gb=peak_memory_gb(device),
                    tflop_per_image=flops["total"] / 1e12,
                    achieved_tflops=flops["total"] / (per_img * 1e-3) / 1e12,
                    floor_ms=flops["total"] / (rate * 1e12) * 1e3,
                )
                row["ratio_to_floor"] = per_img / row["floor_ms"]
                if ref_pipe is not None:
                    x = torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(0))
                    a = pipe(x.to(device), processing_resolution=res, output_type="pt").depth
                    b = ref_pipe(x.to(device), processing_resolution=res, output_type="pt").depth
                    row["rel_err_vs_fp32"] = rel_error(a, b)
                rows.append(row)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    if args.huge:
        pipe.enable_vae_tiling(tile_size=512)
        reset_peak(device)
        x = torch.rand(1, 3, args.huge_size, args.huge_size, device=device)
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = pipe(x, processing_resolution=0, output_type="pt")
        sync(device)
        huge = dict(seconds=time.perf_counter() - t0, peak_gb=peak_memory_gb(device), shape=list(out.depth.shape))
        print(
            f"# {args.huge_size}x{args.huge_size} at native resolution with VAE tiling:", json.dumps(huge), flush=True
        )
        pipe.disable_vae_tiling()

    cols = [
        "variant",
        "res",
        "input",
        "batch",
        "ms_per_image",
        "images_per_s",
        "prior_ms",
        "vae_encode_ms",
        "unet_ms",
        "vae_decode_ms",
        "peak_gb",
        "tflop_per_image",
        "achieved_tflops",
        "floor_ms",
        "ratio_to_floor",
    ]
    if ref_pipe is not None:
        cols.append("rel_err_vs_fp32")
    print()
    print(
        f"Device: {name}; dtype: {args.dtype}; measured matmul rate: {rate:.1f} TFLOP/s; "
        f"{'random ' + args.preset if not (args.checkpoint or args.bundled) else 'checkpoint'} weights; "
        f"per-stage times are per image"
    )
    print()
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print(
            "| "
            + " | ".join(
                f"{r.get(c, float('nan')):.3g}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols
            )
            + " |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
