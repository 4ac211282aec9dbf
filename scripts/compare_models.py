"""Side-by-side depth of two (or more) models on the same images: input | model A | model B | ...

Used for the bundled model's before/after figure on the example photographs (docs/training.md):

    python scripts/compare_models.py assets/examples/photo_*.jpg assets/examples/synthetic_street_a.png \\
        --model "previous bundled=/path/to/old/weights" --model "bundled" \\
        --out docs/images/bundled_before_after.png

Each ``--model`` is ``LABEL=CHECKPOINT`` or ``bundled`` (the model shipped in the package). Each prediction
is coloured on its own 2%/98% range (affine-invariant depth has no common scale), near = red, with the
project's one visualiser (:func:`apdepth.visualize.colorize_depth`).
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("images", nargs="+", help="input images")
    p.add_argument("--model", action="append", required=True, metavar="LABEL=CHECKPOINT|bundled")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--tile-width", type=int, default=240)
    args = p.parse_args(argv)
    from PIL import Image, ImageDraw, ImageFont

    from apdepth.image_io import read_image, save_png
    from apdepth.runtime import load_pipeline
    from apdepth.visualize import colorize_depth

    models = []
    for spec in args.model:
        label, _, ckpt = spec.partition("=")
        models.append((label, ckpt or None))
    rgbs = [read_image(path) for path in args.images]
    columns = [[(r * 255 + 0.5).astype(np.uint8) for r in rgbs]]
    for label, ckpt in models:
        pipe = load_pipeline(checkpoint=ckpt, device="cpu", quiet=True)
        col = []
        for rgb in rgbs:
            d = pipe(rgb).depth[0]
            lo, hi = np.quantile(d, [0.02, 0.98])
            col.append(colorize_depth(d, vmin=float(lo), vmax=float(hi)))
        columns.append(col)
        del pipe
    titles = ["input"] + [label for label, _ in models]
    tw, gap, header = args.tile_width, 4, 18
    heights = [int(round(tw * r.shape[0] / r.shape[1])) for r in rgbs]
    canvas = Image.new("RGB", (gap + len(columns) * (tw + gap), header + sum(h + gap for h in heights)), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for c, title in enumerate(titles):
        draw.text((gap + c * (tw + gap) + 2, 3), title, fill=(0, 0, 0), font=font)
    y = header
    for i, h in enumerate(heights):
        for c, col in enumerate(columns):
            canvas.paste(Image.fromarray(col[i]).resize((tw, h), Image.BILINEAR), (gap + c * (tw + gap), y))
        y += h + gap
    save_png(args.out, np.asarray(canvas))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
