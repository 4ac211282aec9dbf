"""Each model-path speed-up, timed and gated by agreement with fp32, in one process (one model build).

Variants, cumulative in this order (each row adds one thing to the row before it):

1. ``eager``: the plain path in ``--dtype`` (what ``ApDepthPipeline`` does without options);
2. ``+exact``: :meth:`ApDepthPipeline.enable_exact_speedups` (decoder output channels folded into the one kept,
   text-conditioning keys/values once per call);
3. ``+cudnn_benchmark``: ``torch.backends.cudnn.benchmark`` (CUDA only);
4. ``+compile``: ``torch.compile`` with Inductor's default tuning, CUDA graphs on a GPU, channels_last;
5. ``+max_autotune``: the same with ``mode="max-autotune"`` (with ``--autotune``: compiles for many minutes).

Every row is timed at each batch size (CUDA events, median) and compared with the plain fp32 path on the same
input (relative mean absolute error of the depth). A speed-up is **kept** only if its error stays within
``max(1.25 x the eager row's error, eager + 1e-3)``, i.e. it agrees with fp32 as today's path does. The ratio to the floor uses the FLOP count of the paper-size model and a matmul rate measured here.

    # GPU, paper-size architecture (random weights), bf16 -- part of benchmarks/gpu_speedups.sh
    python benchmarks/speedups.py --preset sd2 --dtype bf16 --res 768 --batch-sizes 1 8 --autotune
    # CPU dry run of the same code
    python benchmarks/speedups.py --preset tiny --device cpu --dtype bf16 --res 64 --batch-sizes 1 2 --iters 2
    # the bundled model on the CPU (channels_last, as the commands run it)
    OMP_NUM_THREADS=1 python benchmarks/speedups.py --bundled --device cpu --dtype fp32 --res 256 --batch-sizes 4 --no-compile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import Timer, count_flops, matmul_rate, rel_error, sync  # noqa: E402

from apdepth.models import build_pipeline  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="sd2", help="random-weight architecture: sd2 | small | tiny (default sd2)")
    p.add_argument("--bundled", action="store_true", help="the bundled small model instead of random weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="bf16", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--res", type=int, default=768, help="square input and processing resolution (default 768)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--autotune", action="store_true", help="also the max-autotune compile row (long compile)")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    p.add_argument("--json", help="also write the rows as JSON here")
    return p.parse_args(argv)


def build(preset, device, dtype, bundled=False):
    if bundled:
        from apdepth.runtime import load_pipeline

        return load_pipeline(None, device=device, dtype=dtype, fast_path=False, quiet=True)
    with torch.device(device):  # weights initialised where they run: a paper-size model builds in seconds
        pipe = build_pipeline(preset, seed=0)
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv=None) -> int:
    from apdepth.runtime import pick_device, pick_dtype

    args = parse_args(argv)
    device, dtype = pick_device(args.device), pick_dtype(args.dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    rate = matmul_rate(device, dtype)
    print(
        f"# device: {name}; torch {torch.__version__}; dtype {args.dtype}; matmul rate {rate:.1f} TFLOP/s", flush=True
    )

    pipe = build(args.preset, device, dtype, args.bundled)
    if device.type == "cpu":
        pipe.enable_channels_last()  # what the commands use on a CPU (the reference stays plain)
    ref = build(args.preset, device, torch.float32, args.bundled)
    flops = count_flops(pipe, args.res, 1)["total"]
    floor_ms = flops / (rate * 1e12) * 1e3
    x = torch.rand(max(args.batch_sizes), 3, args.res, args.res, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        target = ref(x[:1], processing_resolution=args.res, output_type="pt").depth.float()
    del ref
    if device.type == "cuda":
        torch.cuda.empty_cache()

    def step(variant: str, setup) -> list[dict]:
        t0 = time.perf_counter()
        setup()
        with torch.no_grad():
            out = pipe(x[:1], processing_resolution=args.res, output_type="pt").depth.float()  # compiles, if compiled
        err = rel_error(out, target)  # now: a CUDA graph replay may reuse out's memory
        sync(device)
        first_s = time.perf_counter() - t0
        rows = []
        for bs in args.batch_sizes:
            timer = Timer(device, args.warmup, args.iters)

            def call(bs=bs):
                with torch.no_grad():
                    pipe(x[:bs], processing_resolution=args.res, batch_size=bs, output_type="pt")

            ms = timer(call) / bs
            row = dict(
                variant=variant,
                res=args.res,
                batch=bs,
                ms_per_image=ms,
                floor_ms=floor_ms,
                ratio_to_floor=ms / floor_ms,
                rel_err_vs_fp32=err,
                setup_and_first_call_s=first_s,
            )
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        return rows

    def compile_with(mode):
        def setup():
            torch._dynamo.reset()
            pipe.enable_channels_last()
            pipe.enable_compile(mode=mode, cuda_graphs=device.type == "cuda")

        return setup

    plan = [("eager", lambda: None), ("+exact", pipe.enable_exact_speedups)]
    if device.type == "cuda":
        plan.append(("+cudnn_benchmark", lambda: setattr(torch.backends.cudnn, "benchmark", True)))
    if not args.no_compile:
        plan.append(("+compile", compile_with("default")))
        if args.autotune:
            plan.append(("+max_autotune", compile_with("max-autotune")))
    rows = []
    for variant, setup in plan:
        try:
            rows += step(variant, setup)
        except torch.OutOfMemoryError:
            print(f"{variant}: out of memory", flush=True)

    base = next((r["rel_err_vs_fp32"] for r in rows if r["variant"] == "eager"), None)
    for r in rows:
        e = r["rel_err_vs_fp32"]
        r["kept"] = base is not None and e <= max(1.25 * base, base + 1e-3)
    print()
    model = "bundled model" if args.bundled else f"random {args.preset} weights"
    print(
        f"Device: {name}; torch {torch.__version__}; dtype {args.dtype}; {model}; {args.res}x{args.res}; "
        f"{flops / 1e12:.3f} TFLOP/image; floor {floor_ms:.1f} ms/image at {rate:.0f} TFLOP/s"
    )
    print()
    print(
        "| variant (cumulative) | batch | ms/image | ratio to floor | rel. error vs fp32 | kept | set-up + first call (s) |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['batch']} | {r['ms_per_image']:.1f} | {r['ratio_to_floor']:.2f} | {r['rel_err_vs_fp32']:.2e} | "
            f"{'yes' if r['kept'] else 'NO'} | {r['setup_and_first_call_s']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
