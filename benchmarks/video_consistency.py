"""Video benchmark with exact ground truth: naive per-frame depth vs the temporally consistent clip.

One command renders (once; reused afterwards) held-out synthetic sequences with ``apdepth synth --video``
(scene seeds from 950000, far from the training seeds below 900000 and the still-image test set
900000-900199), runs the model once per sequence and scores both outputs of that pass:

* ``naive`` (each frame normalised on its own), aligned per frame (the image protocol) and with ONE
  scale/shift per sequence;
* ``consistent`` (global co-alignment, :mod:`apdepth.temporal`), with ONE scale/shift per sequence;
* ``ground truth`` as the floor of the temporal metrics.

Metrics (:mod:`apdepth.evaluation.video_metrics`): AbsRel, δ1, temporal alignment error (TAE, true
poses), flicker on static pixels. Writes ``per_sequence.csv``, ``summary.json`` and ``summary.md`` to
``--out``, and the raw per-frame predictions to ``--out/raw/`` (``--reuse-predictions`` rescores them
without running the model again). The consistent output is :func:`apdepth.video_depth.coalign_clip` on
the same per-frame predictions, i.e. exactly what ``pipe.predict_video`` computes.

    python benchmarks/video_consistency.py --out docs/results/video            # bundled model, 20 x 48 frames
    python benchmarks/video_consistency.py --out OUT --checkpoint PATH_OR_ID    # another model
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROWS = (
    ("naive", "per frame"),
    ("naive", "per sequence"),
    ("consistent", "per sequence"),
    ("ground truth", "-"),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="results folder")
    p.add_argument("--data", type=Path, default=Path("data/synth_video_test"), help="sequence folder (rendered if missing)")
    p.add_argument("--num", type=int, default=20, help="sequences (default 20)")
    p.add_argument("--frames", type=int, default=48, help="frames per sequence (default 48)")
    p.add_argument("--size", default="120x160", help="frame size HxW (default 120x160)")
    p.add_argument("--seed", type=int, default=950000, help="first scene seed (default 950000)")
    p.add_argument("--scene", default="mixed", choices=["indoor", "outdoor", "mixed"])
    p.add_argument("--checkpoint", default=None, help="pipeline folder or hub id (default: the bundled model)")
    p.add_argument("--prior", default=None)
    p.add_argument("--processing-res", type=int, default=None, help="default: stored with the model")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=1, help="processes for rendering (default 1)")
    p.add_argument("--reuse-predictions", action="store_true",
                   help="reuse the per-frame predictions saved in OUT/raw/ by an earlier run (same model only)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import torch

    from apdepth.data.synthetic_cli import parse_size, write_video_dataset
    from apdepth.evaluation.video_metrics import video_metrics
    from apdepth.pipeline import ApDepthPipeline
    from apdepth.image_io import save_npy
    from apdepth.video import read_video
    from apdepth.video_depth import _upsample, coalign_clip

    args = parse_args(argv)
    h, w = parse_size(args.size)
    t0 = time.perf_counter()
    write_video_dataset(args.data, args.num, args.frames, h, w, args.seed, args.scene, skip_existing=True, workers=args.workers)
    t_render = time.perf_counter() - t0
    pipe = ApDepthPipeline.from_pretrained(args.checkpoint, prior=args.prior)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_channels_last()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, model_seconds, align_seconds, frames_total = [], 0.0, 0.0, 0
    for s in range(args.seed, args.seed + args.num):
        sid = f"{s:08d}"
        seq = args.data / sid
        meta = json.loads((seq / "meta.json").read_text())
        gt = np.load(seq / "gt.npz")
        frames, _, _ = read_video(seq / "frames")
        frames = frames[: args.frames]
        depth, valid, K, poses = gt["depth"][: args.frames], gt["valid"][: args.frames], gt["K"], gt["poses"][: args.frames]
        cache = args.out / "raw" / f"{sid}.npy"
        if args.reuse_predictions and cache.exists():
            raw = np.load(cache)
        else:
            t1 = time.perf_counter()
            with torch.inference_mode():
                raw = pipe(list(frames), processing_resolution=args.processing_res, batch_size=args.batch_size,
                           match_input_resolution=False).depth
            model_seconds += time.perf_counter() - t1
            frames_total += len(frames)
            save_npy(cache, raw.astype(np.float32))
        t1 = time.perf_counter()
        out = coalign_clip(raw, frames)
        align_seconds += time.perf_counter() - t1
        naive = np.stack([_upsample(d, frames.shape[1:3]) for d in raw])
        preds = {"naive": naive, "consistent": out.depth, "ground truth": depth}
        for method, alignment in ROWS:
            m = video_metrics(preds[method], depth, valid, K, poses, per_frame_alignment=alignment == "per frame")
            rows.append({"sequence": sid, "trajectory": meta["trajectory"], "method": method, "alignment": alignment, **m})
        print(f"{sid} {meta['trajectory']:5s}  " + "  ".join(
            f"{r['method']}/{r['alignment']}: tae {r['tae']:.4f}" for r in rows[-4:-1]), flush=True)

    fields = ["sequence", "trajectory", "method", "alignment", "abs_rel", "delta1", "tae", "flicker", "static_fraction"]
    with open(args.out / "per_sequence.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=fields)
        wr.writeheader()
        wr.writerows(rows)
    summary = {"command": "python benchmarks/video_consistency.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "sequences": args.num, "frames": args.frames, "size": [h, w], "seed": args.seed,
               "checkpoint": args.checkpoint or "bundled", "render_seconds": round(t_render, 1),
               "model_seconds": round(model_seconds, 1),
               "model_frames_per_s": round(frames_total / model_seconds, 2) if frames_total else None,
               "coalign_seconds_per_frame": round(align_seconds / (args.num * args.frames), 4),
               "rows": []}
    for method, alignment in ROWS:
        sel = [r for r in rows if r["method"] == method and r["alignment"] == alignment]
        agg = {k: float(np.nanmean([r[k] for r in sel])) for k in ("abs_rel", "delta1", "tae", "flicker")}
        by_traj = {t: float(np.nanmean([r["tae"] for r in sel if r["trajectory"] == t]))
                   for t in sorted({r["trajectory"] for r in sel})}
        summary["rows"].append({"method": method, "alignment": alignment, **agg, "tae_by_trajectory": by_traj})
    get = {(r["method"], r["alignment"]): r for r in summary["rows"]}
    naive_pf, naive_seq, cons = get[("naive", "per frame")], get[("naive", "per sequence")], get[("consistent", "per sequence")]
    summary["tae_reduction_vs_naive_per_sequence"] = 1.0 - cons["tae"] / naive_seq["tae"]
    summary["tae_reduction_vs_naive_per_frame"] = 1.0 - cons["tae"] / naive_pf["tae"]
    summary["abs_rel_consistent_minus_naive_per_frame"] = cons["abs_rel"] - naive_pf["abs_rel"]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    counts = ", ".join(f"{k}: {sum(1 for r in rows if r['trajectory'] == k) // len(ROWS)}" for k in ("walk", "pan", "dolly"))
    lines = [
        f"{args.num} sequences x {args.frames} frames, {h}x{w}, seeds {args.seed}-{args.seed + args.num - 1} "
        f"({counts}); "
        f"model {summary['checkpoint']}, processing resolution {args.processing_res or 'default'}; model "
        f"{summary['model_frames_per_s']} frames/s, co-alignment {summary['coalign_seconds_per_frame'] * 1000:.0f} ms/frame",
        "",
        "| output | alignment to GT | AbsRel ↓ | δ1 ↑ | TAE ↓ | flicker ↓ | TAE walk / pan / dolly |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        acc = ("-", "-") if r["method"] == "ground truth" else (f"{r['abs_rel']:.4f}", f"{r['delta1']:.4f}")
        bt = r["tae_by_trajectory"]
        lines.append(f"| {r['method']} | {r['alignment']} | {acc[0]} | {acc[1]} | {r['tae']:.4f} | {r['flicker']:.4f} | "
                     + " / ".join(f"{bt.get(k, float('nan')):.4f}" for k in ("walk", "pan", "dolly")) + " |")
    lines += ["",
              f"TAE reduction, consistent vs naive (both one alignment per sequence): {summary['tae_reduction_vs_naive_per_sequence']:.1%}; "
              f"vs naive aligned per frame: {summary['tae_reduction_vs_naive_per_frame']:.1%}. "
              f"AbsRel consistent (per sequence) - naive (per frame): {summary['abs_rel_consistent_minus_naive_per_frame']:+.4f}."]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
