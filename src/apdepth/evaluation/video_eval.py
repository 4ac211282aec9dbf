"""Score clips of synthetic sequences (``apdepth synth --video``): naive per-frame vs consistent depth.

:func:`evaluate_video_sequences` runs the model once per sequence, keeps the raw per-frame predictions,
co-aligns them (:func:`apdepth.video_depth.coalign_clip`, exactly what ``pipe.predict_video`` does) and
scores four rows with :func:`apdepth.evaluation.video_metrics.video_metrics`:

* ``naive`` / ``per frame``: each frame normalised on its own, aligned to GT frame by frame (image protocol);
* ``naive`` / ``per sequence``: the same predictions, ONE alignment for the sequence;
* ``consistent`` / ``per sequence``: the co-aligned clip, ONE alignment for the sequence;
* ``consistent + smoothing`` / ``per sequence``: the co-aligned clip after the flow-guided temporal filter
  (``pipe.predict_video``'s default; :class:`apdepth.temporal.FlowTemporalFilter`), ONE alignment;
* ``ground truth``: GT scored against itself, the floor of the temporal metrics.

Used by ``apdepth eval --dataset synthetic-video`` and ``benchmarks/video_consistency.py``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

ROWS = (
    ("naive", "per frame"),
    ("naive", "per sequence"),
    ("consistent", "per sequence"),
    ("consistent + smoothing", "per sequence"),
    ("ground truth", "-"),
)
TRAJECTORY_ORDER = ("walk", "pan", "dolly")


def evaluate_video_sequences(
    predictor,
    data_dir,
    out_dir,
    *,
    max_sequences: int | None = None,
    max_frames: int | None = None,
    processing_resolution: int | None = None,
    batch_size: int = 8,
    reuse_predictions: bool = False,
    progress: bool = True,
    sequence_ids: list[str] | None = None,
    model_id: str = "bundled",
    smoothing: str = "bidirectional",
    smoothing_strength: float | None = None,
    travel_correction: bool = True,
) -> dict:
    """Score every sequence listed in ``data_dir/sequences.txt``.

    Args:
        predictor: a callable with the pipeline's call API (``predictor(frames, processing_resolution=...,
            batch_size=..., match_input_resolution=False).depth`` -> (T, h, w)), loaded lazily by the caller.
        out_dir: receives ``raw/<id>.npy`` (per-frame predictions, float32 (T, h, w)), ``per_sequence.csv``,
            ``summary.json`` and ``summary.md``.
        max_sequences, max_frames: use only the first N sequences / frames.
        sequence_ids: score these sequences (default: all of ``sequences.txt``).
        reuse_predictions: use ``out_dir/raw/<id>.npy`` when present instead of running the model; predictions
            cached for another ``model_id`` (checkpoint name) or processing resolution are refused.
        smoothing, smoothing_strength: the temporal filter of the ``consistent + smoothing`` row (see
            :func:`apdepth.video_depth.predict_video`; strength ``None`` = its default).
        travel_correction: the camera-travel correction of the consistent rows (see
            :func:`apdepth.video_depth.predict_video`).
    Returns:
        the summary dict (also written as ``summary.json``).
    Raises:
        ValueError: ``data_dir`` has no ``sequences.txt``, a sequence is incomplete, or bad smoothing options.
    """
    import torch
    from tqdm import tqdm

    from apdepth.evaluation.video_metrics import video_metrics
    from apdepth.image_io import atomic_write, save_npy
    from apdepth.video import read_video
    from apdepth.video_depth import DEFAULT_SMOOTHING_STRENGTH, _upsample, check_smoothing, coalign_clip

    if smoothing_strength is None:
        smoothing_strength = DEFAULT_SMOOTHING_STRENGTH
    if check_smoothing(smoothing, smoothing_strength) == "none":
        raise ValueError("the consistent + smoothing row needs a smoothing mode other than 'none'")

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    listing = data_dir / "sequences.txt"
    if sequence_ids is None and not listing.is_file():
        raise ValueError(f"{data_dir}: no sequences.txt; render sequences with apdepth synth --video --out {data_dir}")
    ids = list(sequence_ids if sequence_ids is not None else listing.read_text().split())[:max_sequences]
    if not ids:
        raise ValueError(f"{listing} lists no sequences")
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_meta = {"model": model_id, "processing_resolution": processing_resolution}
    meta_path = out_dir / "raw" / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if reuse_predictions and old != cache_meta:
            raise ValueError(
                f"{out_dir / 'raw'} holds predictions of {old}, not {cache_meta}: use another output folder"
            )
    elif reuse_predictions and any((out_dir / "raw").glob("*.npy")):
        raise ValueError(f"{out_dir / 'raw'} holds predictions of an unknown model: use another output folder")
    with atomic_write(meta_path, "w") as fh:
        json.dump(cache_meta, fh)
    rows, model_seconds, align_seconds, frames_model, frames_all = [], 0.0, 0.0, 0, 0
    for sid in tqdm(ids, desc="sequences", unit="seq", disable=not progress):
        seq = data_dir / sid
        if not (seq / "meta.json").is_file() or not (seq / "gt.npz").is_file():
            raise ValueError(f"{seq}: incomplete sequence (meta.json or gt.npz missing)")
        meta = json.loads((seq / "meta.json").read_text())
        gt = np.load(seq / "gt.npz")
        frames, _, _ = read_video(seq / "frames")
        frames = frames[:max_frames]
        n = len(frames)
        depth, valid, K, poses = gt["depth"][:n], gt["valid"][:n], gt["K"], gt["poses"][:n]
        cache = out_dir / "raw" / f"{sid}.npy"
        if reuse_predictions and cache.exists():
            raw = np.load(cache)[:n]
        else:
            t1 = time.perf_counter()
            with torch.inference_mode():
                raw = np.asarray(
                    predictor(
                        list(frames),
                        processing_resolution=processing_resolution,
                        batch_size=batch_size,
                        match_input_resolution=False,
                    ).depth
                )
            model_seconds += time.perf_counter() - t1
            frames_model += n
            save_npy(cache, raw.astype(np.float32))
        t1 = time.perf_counter()
        out, smoothed = coalign_clip(
            raw,
            frames,
            smoothing=smoothing,
            smoothing_strength=smoothing_strength,
            output_smoothed=True,
            travel_correction=travel_correction,
        )
        align_seconds += time.perf_counter() - t1
        frames_all += n
        naive = np.stack([_upsample(d, frames.shape[1:3]) for d in raw])
        preds = {"naive": naive, "consistent": out.depth, "consistent + smoothing": smoothed, "ground truth": depth}
        for method, alignment in ROWS:
            m = video_metrics(preds[method], depth, valid, K, poses, per_frame_alignment=alignment == "per frame")
            rows.append(
                {"sequence": sid, "trajectory": meta["trajectory"], "method": method, "alignment": alignment, **m}
            )

    fields = ["sequence", "trajectory", "method", "alignment", "abs_rel", "delta1", "tae", "flicker", "static_fraction"]
    with atomic_write(out_dir / "per_sequence.csv", "w") as fh:
        wr = csv.DictWriter(fh, fieldnames=fields)
        wr.writeheader()
        wr.writerows(rows)
    h, w = frames.shape[1:3]
    summary = {
        "data": str(data_dir),
        "sequences": len(ids),
        "frames": max_frames or int(meta["frames"]),
        "size": [int(h), int(w)],
        "trajectories": {k: sum(1 for r in rows if r["trajectory"] == k) // len(ROWS) for k in TRAJECTORY_ORDER},
        "processing_resolution": processing_resolution,
        "model_seconds": round(model_seconds, 1),
        "model_frames_per_s": round(frames_model / model_seconds, 2) if frames_model else None,
        "coalign_seconds_per_frame": round(align_seconds / max(frames_all, 1), 4),
        "smoothing": smoothing,
        "smoothing_strength": smoothing_strength,
        "travel_correction": travel_correction,
        "rows": [],
    }
    for method, alignment in ROWS:
        sel = [r for r in rows if r["method"] == method and r["alignment"] == alignment]
        agg = {k: float(np.nanmean([r[k] for r in sel])) for k in ("abs_rel", "delta1", "tae", "flicker")}
        by_traj = {
            t: float(np.nanmean([r["tae"] for r in sel if r["trajectory"] == t]))
            for t in TRAJECTORY_ORDER
            if any(r["trajectory"] == t for r in sel)
        }
        summary["rows"].append({"method": method, "alignment": alignment, **agg, "tae_by_trajectory": by_traj})
    get = {(r["method"], r["alignment"]): r for r in summary["rows"]}
    naive_pf, naive_seq, cons, smooth = (
        get[("naive", "per frame")],
        get[("naive", "per sequence")],
        get[("consistent", "per sequence")],
        get[("consistent + smoothing", "per sequence")],
    )
    summary["tae_reduction_vs_naive_per_sequence"] = 1.0 - cons["tae"] / naive_seq["tae"]
    summary["tae_reduction_vs_naive_per_frame"] = 1.0 - cons["tae"] / naive_pf["tae"]
    summary["abs_rel_consistent_minus_naive_per_frame"] = cons["abs_rel"] - naive_pf["abs_rel"]
    summary["smoothed_tae_reduction_vs_naive_per_sequence"] = 1.0 - smooth["tae"] / naive_seq["tae"]
    summary["smoothed_tae_reduction_vs_naive_per_frame"] = 1.0 - smooth["tae"] / naive_pf["tae"]
    summary["smoothed_abs_rel_minus_naive_per_frame"] = smooth["abs_rel"] - naive_pf["abs_rel"]
    with atomic_write(out_dir / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=1)
    with atomic_write(out_dir / "summary.md", "w") as fh:
        fh.write(summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    """The results table of :func:`evaluate_video_sequences` as Markdown."""
    counts = ", ".join(f"{k}: {v}" for k, v in summary["trajectories"].items())
    fps = summary["model_frames_per_s"]
    lines = [
        f"{summary['sequences']} sequences x {summary['frames']} frames, {summary['size'][0]}x{summary['size'][1]} "
        f"({counts}); processing resolution {summary['processing_resolution'] or 'default'}; "
        f"model {fps if fps is not None else '(cached predictions)'} frames/s, "
        f"co-alignment{' and smoothing' if 'smoothing' in summary else ''} "
        f"{summary['coalign_seconds_per_frame'] * 1000:.0f} ms/frame"
        + (
            f"; smoothing {summary['smoothing']}, strength {summary['smoothing_strength']}"
            if "smoothing" in summary
            else ""
        )
        + (
            f"; travel correction {'on' if summary['travel_correction'] else 'off'}"
            if "travel_correction" in summary
            else ""
        ),
        "",
        "| output | alignment to GT | AbsRel ↓ | δ1 ↑ | TAE ↓ | flicker ↓ | TAE walk / pan / dolly |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        acc = ("-", "-") if r["method"] == "ground truth" else (f"{r['abs_rel']:.4f}", f"{r['delta1']:.4f}")
        bt = r["tae_by_trajectory"]
        lines.append(
            f"| {r['method']} | {r['alignment']} | {acc[0]} | {acc[1]} | {r['tae']:.4f} | {r['flicker']:.4f} | "
            + " / ".join(f"{bt[k]:.4f}" if k in bt else "-" for k in TRAJECTORY_ORDER)
            + " |"
        )
    lines += [
        "",
        f"TAE reduction, consistent vs naive (both one alignment per sequence): "
        f"{summary['tae_reduction_vs_naive_per_sequence']:.1%}; vs naive aligned per frame: "
        f"{summary['tae_reduction_vs_naive_per_frame']:.1%}. AbsRel consistent (per sequence) - naive (per frame): "
        f"{summary['abs_rel_consistent_minus_naive_per_frame']:+.4f}.",
    ]
    if "smoothed_tae_reduction_vs_naive_per_sequence" in summary:
        lines.append(
            f"With smoothing: TAE reduction vs naive (one alignment per sequence) "
            f"{summary['smoothed_tae_reduction_vs_naive_per_sequence']:.1%}, vs naive aligned per frame "
            f"{summary['smoothed_tae_reduction_vs_naive_per_frame']:.1%}; AbsRel - naive (per frame): "
            f"{summary['smoothed_abs_rel_minus_naive_per_frame']:+.4f}."
        )
    return "\n".join(lines) + "\n"
