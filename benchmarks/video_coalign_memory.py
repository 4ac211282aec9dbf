"""Peak memory and time of the co-alignment on a long clip (synthetic per-frame predictions, no model).

Each frame is one smooth depth map under its own random scale and shift (what the co-alignment removes);
pixels are paired by position (``flow=None``), so only the co-alignment's own memory is measured:

    python benchmarks/video_coalign_memory.py --frames 3000

Prints the peak resident memory of the process, the time and the number of pixel pairs kept.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time


def main(argv=None) -> int:
    import numpy as np

    from apdepth.temporal import DEFAULT_MAX_SAMPLES, CoAligner

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--size", default="32x48", help="HxW of the predictions (default 32x48)")
    p.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES)
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    truth = 1.0 + 2.0 * yy / h + 0.5 * np.sin(xx / 6.0)
    al = CoAligner(flow=None, max_samples=args.max_samples)
    t0 = time.perf_counter()
    for _ in range(args.frames):
        d = truth * rng.uniform(0.5, 2.0) + rng.uniform(-0.5, 0.5)
        al.add_frame(((d - d.min()) / (d.max() - d.min()) * 0.9 + 0.05).astype(np.float32))
    al.solve()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kept = sum(x.size for x in al._pairs.x)
    print(
        f"{args.frames} frames {h}x{w}: peak RSS {peak:.0f} MB, {time.perf_counter() - t0:.1f} s, {kept} pixel pairs kept"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
