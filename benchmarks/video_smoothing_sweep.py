"""Tune the video temporal filter on sequences of its own (never the test set): a grid of filter settings,
each scored like the video benchmark's ``consistent + smoothing`` row.

Run the benchmark once on a tuning set first (it renders the sequences and caches the model's per-frame
predictions in ``OUT/raw/``), then sweep the filter on those cached predictions without the model:

    python benchmarks/video_consistency.py --out outputs/video_tune --data data/synth_video_tune \\
        --seed 960000 --num 16 --processing-res 160
    python benchmarks/video_smoothing_sweep.py --data data/synth_video_tune --raw outputs/video_tune/raw \\
        --exclude 00960005 --strength 0.6,0.8,0.9,0.95 --depth-tolerance 0.05,0.1,0.2,0.3 --affine 0,1

Each sequence is co-aligned once (as ``pipe.predict_video`` does), with and/or without the camera-travel
correction (``--travel 0,1``); every setting then filters the same co-aligned clip. Prints one line per setting (mean AbsRel, δ1, TAE, flicker over sequences, one alignment
to the ground truth per sequence; TAE per trajectory), with the naive and the unsmoothed consistent output
first, and writes them to ``--csv`` when given.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sequences of apdepth synth --video")
    p.add_argument("--raw", type=Path, required=True, help="OUT/raw of benchmarks/video_consistency.py")
    p.add_argument("--exclude", default="", help="comma-separated sequence ids to leave out")
    p.add_argument("--modes", default="bidirectional", help="comma-separated: forward, bidirectional")
    p.add_argument("--strength", type=_floats, default=[0.95])
    p.add_argument("--depth-tolerance", type=_floats, default=[0.2])
    p.add_argument("--flow-tolerance", type=_floats, default=[1.5])
    p.add_argument("--affine", default="0", help="comma-separated 0/1")
    p.add_argument(
        "--travel", default="1", help="comma-separated 0/1: without / with the camera-travel correction (default 1)"
    )
    p.add_argument("--csv", type=Path, default=None, help="also write the table here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import numpy as np

    from apdepth.evaluation.video_metrics import video_metrics
    from apdepth.temporal import CoAligner, smooth_clip
    from apdepth.video import read_video
    from apdepth.video_depth import _coalign, _gray, _upsample

    args = parse_args(argv)
    travels = [bool(int(v)) for v in args.travel.split(",")]
    skip = set(filter(None, args.exclude.split(",")))
    ids = sorted(p.stem for p in args.raw.glob("*.npy") if p.stem not in skip)
    if not ids:
        print(f"error: no cached predictions in {args.raw}", file=sys.stderr)
        return 2
    seqs = []
    for sid in ids:
        seq = args.data / sid
        gt = np.load(seq / "gt.npz")
        frames, _, _ = read_video(seq / "frames")
        raw = np.load(args.raw / f"{sid}.npy")[: len(frames)]
        aligner = CoAligner(keep_flows=True)
        flows = []
        for rgb, d in zip(frames, raw):
            aligner.add_frame(d, _gray(rgb, d.shape))
            if aligner.last_flows is not None:
                flows.append(aligner.last_flows)
        clips = {}
        for travel in travels:
            a, c, (lo, hi), shift = _coalign(aligner, travel)
            norm = [((a[t] * raw[t] + c[t] - lo) / (hi - lo)).astype(np.float32) for t in range(len(raw))]
            clips[travel] = (norm, np.diff(shift, prepend=0.0) / (hi - lo))
        traj = json.loads((seq / "meta.json").read_text())["trajectory"]
        n = len(frames)
        seqs.append(
            (traj, raw, clips, flows, frames.shape[1:3], gt["depth"][:n], gt["valid"][:n], gt["K"], gt["poses"][:n])
        )

    def score(name, settings, make, travel=False):
        per = []
        for traj, raw, clips, flows, size, depth, valid, K, poses in seqs:
            norm, steps = clips[travel]
            out = np.stack([np.clip(_upsample(x, size), 0, 1) for x in make(raw, norm, flows, steps)])
            per.append((traj, video_metrics(out, depth, valid, K, poses)))
        row = {"output": name, **settings}
        row.update({k: float(np.mean([m[k] for _, m in per])) for k in ("abs_rel", "delta1", "tae", "flicker")})
        for t in ("walk", "pan", "dolly"):
            vals = [m["tae"] for tr, m in per if tr == t]
            row[f"tae_{t}"] = float(np.mean(vals)) if vals else float("nan")
        print(
            f"{name:14s} {json.dumps(settings):105s} AbsRel {row['abs_rel']:.4f} d1 {row['delta1']:.4f} "
            f"TAE {row['tae']:.5f} flicker {row['flicker']:.5f} walk/pan/dolly "
            f"{row['tae_walk']:.5f}/{row['tae_pan']:.5f}/{row['tae_dolly']:.5f}",
            flush=True,
        )
        return row

    counts = {t: sum(s[0] == t for s in seqs) for t in ("walk", "pan", "dolly")}
    print(f"{len(seqs)} sequences ({counts}); one alignment to the ground truth per sequence")
    rows = [score("naive", {}, lambda raw, norm, flows, steps: raw, travels[0])]
    rows += [
        score("consistent", {"travel": travel}, lambda raw, norm, flows, steps: norm, travel) for travel in travels
    ]
    grid = itertools.product(
        args.modes.split(","),
        args.strength,
        args.depth_tolerance,
        args.flow_tolerance,
        [bool(int(v)) for v in args.affine.split(",")],
        travels,
    )
    for mode, k, dtol, ftol, affine, travel in grid:
        kw = {"strength": k, "depth_tolerance": dtol, "flow_tolerance": ftol, "affine": affine}
        rows.append(
            score(
                mode,
                {**kw, "travel": travel},
                lambda raw, norm, flows, steps, mode=mode, kw=kw: smooth_clip(
                    len(norm), lambda t: norm[t], lambda t: flows[t - 1], mode, offsets=steps.__getitem__, **kw
                ),
                travel,
            )
        )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.csv, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=keys)
            wr.writeheader()
            wr.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
