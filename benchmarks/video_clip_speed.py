"""End-to-end speed and memory of ``apdepth predict`` on a 10-second 640x360 clip.

Builds the clip once (a slow pan and zoom across ``assets/examples/synthetic_street_b.png``, 24 fps, H.264),
then runs ``apdepth predict CLIP --output OUT --side-by-side`` in a child process and reports frames/s
(decode, model, co-alignment, encode: the whole command) and the child's peak resident memory.

    python benchmarks/video_clip_speed.py --out OUT [--seconds 10] [--device cpu] [-- extra predict flags]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seconds: float, fps: float = 24.0, size=(360, 640)) -> None:
    from PIL import Image

    from apdepth.video import VideoWriter

    src = Image.open(ROOT / "assets" / "examples" / "synthetic_street_b.png").convert("RGB")
    h, w = size
    big = src.resize((2 * w, int(2 * w * src.height / src.width)), Image.BICUBIC)
    n = int(round(seconds * fps))
    with VideoWriter(path, fps) as vw:
        for k in range(n):
            u = k / max(n - 1, 1)
            cw = big.width * 0.85 / (1.0 + 0.2 * u)  # zoom in by 20% while panning across the image
            ch = min(cw * h / w, big.height)
            x0 = (big.width - cw) * u
            y0 = (big.height - ch) * 0.5
            crop = big.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            vw.write(np.asarray(crop), k / fps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("extra", nargs="*", help="more apdepth predict flags (after --)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    clip = args.out / "clip_640x360.mp4"
    if not clip.exists():
        make_clip(clip, args.seconds)
    cmd = [
        sys.executable,
        "-m",
        "apdepth",
        "predict",
        str(clip),
        "--output",
        str(args.out / "depth"),
        "--device",
        args.device,
        "--side-by-side",
        "--quiet",
        *args.extra,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    rec = json.loads((args.out / "depth" / "clip_640x360_video.json").read_text())
    result = {
        "command": " ".join(cmd[1:]),
        "frames": rec["frames"],
        "size": [rec["height"], rec["width"]],
        "processing_size": rec["processing_size"],
        "fps_in": rec["fps"],
        "frames_per_s_pipeline": rec["frames_per_s"],
        "frames_per_s_wall": round(rec["frames"] / wall, 3),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_mb, 1),
    }
    (args.out / "speed.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
