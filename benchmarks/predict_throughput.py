"""`apdepth predict` against the bare pipeline, in one run on the same images: is I/O off the critical path?

Writes ``--num`` JPEGs of ``--size`` (the example photos, flipped and cropped), then times

* **bare**: ``pipe(image)`` on images already decoded in memory, ``--batch-size`` per call (the model alone,
  as the Python API runs it), once before and once after the predict runs; their mean is the reference;
* **predict**: the whole ``apdepth predict`` command in this process (``cli.main``: reading, inference,
  writing ``*_depth.npy``, 16-bit ``*_depth.png`` and ``*_depth_colored.png``, summary) on the first
  ``--num-small`` images and then on all ``--num``; the marginal time per image is the difference divided
  by the difference in counts, so fixed costs (start-up, thread pools, the summary) cancel. The pipeline is
  loaded once and handed to both runs (loading is not measured at all), after one untimed run on one image
  (first-use imports).

and prints ms/image for both and their ratio (the issue's target: at most 1.25), in wall-clock time and in
this process's CPU time (all threads: the work done, which other load on a shared machine barely changes).
The machine's load average is printed too.

    # the bundled model on the CPU, 1024x768 JPEGs, default outputs
    PYTHONPATH=src python benchmarks/predict_throughput.py --bundled --device cpu --dtype fp32
    # the paper-size architecture (random weights) on a GPU
    PYTHONPATH=src python benchmarks/predict_throughput.py --preset sd2 --device cuda --dtype bf16 --batch-size 8 \
        --processing-res 768 --num 64 --num-small 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: share latency.py's loader

from latency import add_model_args, load  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(p, default_dtype="fp32")
    p.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT of the JPEG inputs (default 1024x768)")
    p.add_argument("--num", type=int, default=24, help="images in the large predict run and in each bare pass")
    p.add_argument("--num-small", type=int, default=6, help="images in the small predict run (default 6)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--processing-res", type=int, default=None, help="default: the model's stored value")
    p.add_argument(
        "--color-map", default="Spectral", help="as apdepth predict (default Spectral; none = no colour PNG)"
    )
    p.add_argument("--warmup", type=int, default=2, help="bare calls before timing")
    p.add_argument("--workdir", help="where inputs and outputs go (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write the figures as JSON here")
    return p.parse_args(argv)


def make_inputs(folder: Path, num: int, width: int, height: int) -> list[Path]:
    """``num`` distinct JPEGs (quality 90) from the example photos: each photo, mirrored or not, cropped at a
    different place to the target aspect ratio, then resized."""
    from PIL import Image, ImageOps

    photos = sorted(EXAMPLES.glob("photo_*.jpg"))
    if not photos:
        raise SystemExit(f"no example photos in {EXAMPLES}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(num):
        with Image.open(photos[k % len(photos)]) as im:
            im = im.convert("RGB")
            if (k // len(photos)) % 2:
                im = ImageOps.mirror(im)
            centre = (0.5 + 0.4 * np.sin(k), 0.5 + 0.4 * np.cos(k))
            im = ImageOps.fit(im, (width, height), Image.BICUBIC, centering=centre)
            path = folder / f"img{k:04d}.jpg"
            im.save(path, quality=90)
            paths.append(path)
    return paths


def bare_ms_per_image(pipe, images, batch_size, res, warmup) -> tuple[float, float]:
    """(wall, CPU) milliseconds per image of the bare pipeline."""
    for k in range(min(warmup, len(images))):
        pipe(images[k], processing_resolution=res)
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(0, len(images), batch_size):
        pipe(images[k : k + batch_size], processing_resolution=res, batch_size=batch_size)
    if pipe._exec_device.type == "cuda":
        torch.cuda.synchronize()
    n = len(images)
    return 1000 * (time.perf_counter() - start) / n, 1000 * (time.process_time() - cpu) / n


def predict_seconds(pipe, inputs: list[Path], out: Path, args) -> tuple[float, float]:
    """(wall, CPU) seconds of ``apdepth predict`` on ``inputs`` with ``pipe`` standing in for the loaded checkpoint."""
    import apdepth.pipeline as pipeline_module
    from apdepth.cli import main

    folder = out.parent / f"{out.name}_in"
    folder.mkdir(parents=True)
    for p in inputs:
        os.symlink(p.resolve(), folder / p.name)
    argv = [
        "predict",
        str(folder),
        "--output",
        str(out),
        "--batch-size",
        str(args.batch_size),
        "--dtype",
        args.dtype,
        "--device",
        str(pipe._exec_device),
        "--color-map",
        args.color_map,
        "--quiet",
    ]
    if args.processing_res is not None:
        argv += ["--processing-res", str(args.processing_res)]
    original = pipeline_module.ApDepthPipeline.from_pretrained
    pipeline_module.ApDepthPipeline.from_pretrained = classmethod(lambda cls, *a, **k: pipe)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        code = main(argv)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        pipeline_module.ApDepthPipeline.from_pretrained = original
    if code != 0:
        raise SystemExit(f"apdepth predict failed (exit {code})")
    written = len(list(out.rglob("*_depth.npy")))
    if written != len(inputs):
        raise SystemExit(f"apdepth predict wrote {written} depth maps for {len(inputs)} inputs")
    return seconds, cpu


def main(argv=None) -> int:
    from apdepth.image_io import read_image
    from apdepth.runtime import configure_fast_path, pick_device, pick_dtype

    args = parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if not 1 <= args.num_small < args.num:
        raise SystemExit("--num-small must be in [1, --num)")
    device, dtype = pick_device(args.device), pick_dtype(args.dtype)
    args.device = str(device)
    pipe = load(args, device, dtype)
    configure_fast_path(pipe, device)  # what predict applies: the bare figure uses the same speed choices
    res = args.processing_res

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        inputs = make_inputs(work / "inputs", args.num, width, height)
        images = [read_image(p) for p in inputs]
        bare_before = bare_ms_per_image(pipe, images, args.batch_size, res, args.warmup)
        load_before = os.getloadavg()[0]
        predict_seconds(pipe, inputs[:1], work / "out_warmup", args)  # first-use imports and set-up, not timed
        small = predict_seconds(pipe, inputs[: args.num_small], work / "out_small", args)
        large = predict_seconds(pipe, inputs, work / "out_large", args)
        bare_after = bare_ms_per_image(pipe, images, args.batch_size, res, 0)
        load_after = os.getloadavg()[0]
        png_bytes = sum(p.stat().st_size for p in (work / "out_large").rglob("*_depth.png")) / args.num
        colour_bytes = sum(p.stat().st_size for p in (work / "out_large").rglob("*_colored.png")) / args.num

    (bare_before, cpu_before), (bare_after, cpu_after) = bare_before, bare_after
    bare, bare_cpu = (bare_before + bare_after) / 2, (cpu_before + cpu_after) / 2
    marginal = 1000 * (large[0] - small[0]) / (args.num - args.num_small)
    marginal_cpu = 1000 * (large[1] - small[1]) / (args.num - args.num_small)
    model = args.checkpoint or ("bundled" if args.bundled else f"random {args.preset}")
    row = {
        "model": model,
        "device": str(device),
        "dtype": args.dtype,
        "size": f"{width}x{height}",
        "batch": args.batch_size,
        "processing_res": pipe.config.processing_resolution if res is None else res,
        "bare_ms": round(bare, 1),
        "bare_ms_before": round(bare_before, 1),
        "bare_ms_after": round(bare_after, 1),
        "predict_ms": round(marginal, 1),
        "ratio": round(marginal / bare, 3),
        "bare_cpu_ms": round(bare_cpu, 1),
        "predict_cpu_ms": round(marginal_cpu, 1),
        "cpu_ratio": round(marginal_cpu / bare_cpu, 3),
        "predict_s_small": round(small[0], 2),
        "predict_s_large": round(large[0], 2),
        "depth_png_kb": round(png_bytes / 1024, 1),
        "colour_png_kb": round(colour_bytes / 1024, 1),
        "load_avg": [round(load_before, 2), round(load_after, 2)],
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(
        f"Device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load_before:.2f} -> {load_after:.2f}"
    )
    print(
        f"{model}, {args.dtype}, {args.num} JPEGs of {width}x{height}, batch {args.batch_size}, processing resolution "
        f"{row['processing_res']}, colour map {args.color_map}; predict: {args.num_small} then {args.num} images\n"
    )
    print(
        "| bare pipeline ms/image (before, after) | predict ms/image (marginal) | ratio | CPU ms/image: bare, predict "
        "| CPU ratio | 16-bit PNG KB | colour PNG KB |"
    )
    print("|---|---:|---:|---|---:|---:|---:|")
    print(
        f"| {bare:.1f} ({bare_before:.1f}, {bare_after:.1f}) | {marginal:.1f} | {marginal / bare:.2f} | "
        f"{bare_cpu:.0f}, {marginal_cpu:.0f} | {marginal_cpu / bare_cpu:.2f} | {row['depth_png_kb']} | {row['colour_png_kb']} |"
    )
    print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
