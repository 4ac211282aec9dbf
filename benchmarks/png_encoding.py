"""Cost of writing predict's outputs for one depth map: encoding options for the 16-bit and the colour PNG.

    PYTHONPATH=src python benchmarks/png_encoding.py [--size 1024x768] [--repeats 5]

The depth map is the bundled model's prediction for an example photo at ``--size`` (smooth, as real outputs
are). Times are the best of ``--repeats`` in this process's CPU time (other load on a shared machine barely
moves them), sizes in KB. Pillow's default is zlib level 6 with its adaptive per-row filter; ApDepth's writer
uses the PNG Up filter on every row and zlib level 1 (``apdepth.writer.encode_png``).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from apdepth.visualize import colorize_depth
from apdepth.writer import colour_depth01, encode_png, to_uint16_png_array

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "examples" / "photo_cat.jpg"


def best_cpu_ms(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return 1000 * best, out


def pillow(array, level):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def main() -> None:
    from apdepth.runtime import load_pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    pipe = load_pipeline(None, device="cpu", quiet=True)
    with Image.open(PHOTO) as im:
        depth = pipe(np.asarray(im.convert("RGB").resize((w, h)))).depth[0]
    u16 = to_uint16_png_array(depth)
    r = args.repeats
    rows = []
    ms_mpl, colour = best_cpu_ms(lambda: colorize_depth(depth), r)
    ms_lut, colour_lut = best_cpu_ms(lambda: colour_depth01(depth), r)
    assert np.array_equal(colour, colour_lut)
    rows.append(("colour map: matplotlib (colorize_depth)", ms_mpl, None))
    rows.append(("colour map: lookup table (colour_depth01), same values", ms_lut, None))
    for name, array in (("16-bit depth", u16), ("colour", colour)):
        for level in (6, 3, 1):
            ms, data = best_cpu_ms(lambda: pillow(array, level), r)
            rows.append(
                (f"{name}: Pillow, zlib level {level}" + (" (Pillow's default)" if level == 6 else ""), ms, len(data))
            )
        ms, data = best_cpu_ms(lambda: encode_png(array), r)
        with Image.open(io.BytesIO(data)) as back:
            assert np.array_equal(np.asarray(back).astype(np.int64), array.astype(np.int64))  # lossless
        rows.append((f"{name}: ApDepth writer (Up filter, zlib level 1)", ms, len(data)))
    print(f"{w}x{h} depth map of {PHOTO.name} (bundled model); best of {r}, CPU ms\n")
    print("| step | CPU ms | KB |")
    print("|---|---:|---:|")
    for name, ms, size in rows:
        print(f"| {name} | {ms:.1f} | {'' if size is None else f'{size / 1024:.0f}'} |")


if __name__ == "__main__":
    main()
