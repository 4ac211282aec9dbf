"""Evaluate depth predictions on the standard benchmarks with Marigold's affine-invariant protocol.

One dataset:  apdepth eval --dataset nyu --data-dir nyuv2/nyu_labeled_extracted.tar --output out/nyu
All five:     apdepth eval --suite all --data-root DATA --output out
Clips:        apdepth eval --dataset synthetic-video --data-dir SEQS --output out/video   (apdepth synth --video;
              naive per-frame vs temporally consistent depth, temporal metrics: docs/video.md)

Predictions are cached as ``<output>/predictions/<rgb path without extension>_depth.npy`` (the layout of
``apdepth predict``); with every prediction present no model is loaded at all. ``--predictions DIR`` scores
the user's own predictions in that layout: the folder is only read, and a missing or mismatched prediction
is an error (never filled in by the model).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apdepth.runtime import add_model_arguments

SUITE = ("nyu", "kitti", "eth3d", "scannet", "diode")
SUITE_TITLES = {"nyu": "NYUv2", "kitti": "KITTI", "eth3d": "ETH3D", "scannet": "ScanNet", "diode": "DIODE"}
EVAL_DATASETS = ("nyu", "kitti", "eth3d", "scannet", "diode", "synthetic", "hypersim", "vkitti", "synthetic-video")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", choices=EVAL_DATASETS, help="evaluate one dataset")
    what.add_argument(
        "--suite",
        metavar="all|NAMES",
        help="'all' (NYUv2, KITTI, ETH3D, ScanNet, DIODE) or a comma-separated list of those",
    )
    parser.add_argument("--data-dir", help="with --dataset: the dataset's tar or extracted folder")
    parser.add_argument("--data-root", help="with --suite: folder holding nyuv2/, kitti/, eth3d/, scannet/, diode/")
    parser.add_argument("--split-file", help="with --dataset: list of samples (default: every sample found)")
    parser.add_argument(
        "--split-dir",
        help="with --suite: folder of split lists (e.g. a copy of Marigold's "
        "data_split/); datasets without one are enumerated",
    )
    parser.add_argument(
        "--output",
        help="write per_sample.csv, summary.json, summary.md here "
        "(--suite: one sub-folder per dataset plus suite.md / suite.json)",
    )
    parser.add_argument(
        "--alignment",
        choices=("depth", "disparity"),
        default="depth",
        help="least-squares scale/shift in depth (default) or disparity space",
    )
    parser.add_argument(
        "--processing-res",
        type=int,
        default=None,
        help="longer side for inference; default: the protocol's per dataset (0 = native)",
    )
    parser.add_argument(
        "--predictions",
        help="score these predictions (<image path without extension>_depth.npy, "
        "the layout apdepth predict writes; --suite: one sub-folder per dataset). The folder is only "
        "read; every prediction must be present. Without it, predictions are computed and cached "
        "in <output>/predictions",
    )
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--batch-size", type=int, default=1, help="images per model call (default 1)")
    parser.add_argument(
        "--ensemble-size",
        type=int,
        default=1,
        help="test-time ensemble members per image (1 = off, up to 8; see apdepth predict --help). Cached predictions are reused as they are: use a fresh --output",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="data loading workers (default 0)")
    add_model_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


class LazyPredictor:
    """Loads the pipeline on first use, so that fully cached evaluations never import it."""

    def __init__(self, args):
        self.args = args
        self._pipe = None

    def __call__(self, *a, **kw):
        if self._pipe is None:
            from apdepth.runtime import UsageError, load_pipeline, model_options

            try:
                self._pipe = load_pipeline(**model_options(self.args))
            except ImportError as err:
                raise UsageError(f"cannot load the model ({err}); pass --predictions with cached predictions") from err
            except OSError as err:  # checkpoint missing or unreadable: one line, exit code 2
                raise UsageError(str(err)) from err
        ensemble = getattr(self.args, "ensemble_size", 1)
        if ensemble > 1:
            kw["ensemble_size"] = ensemble
        return self._pipe(*a, **kw)


def _find_split(split_dir: str | None, split_names: tuple[str, ...]) -> Path | None:
    """The first of the dataset's known split-list paths present under ``split_dir`` (or its file name)."""
    if not split_dir:
        return None
    candidates = [Path(split_dir) / n for n in split_names] + [Path(split_dir) / Path(n).name for n in split_names]
    return next((c for c in candidates if c.is_file()), None)


def _run_one(name, data_dir, split_file, predictor, args, output, predictions) -> dict:
    from apdepth.data import get_dataset
    from apdepth.evaluation.evaluate import evaluate

    dataset = get_dataset(name, data_dir, split_file=split_file)
    common = dict(
        alignment=args.alignment,
        processing_resolution=args.processing_res,
        output_dir=output,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        num_workers=args.num_workers,
    )
    if predictions is not None:  # the user's predictions: only read, never completed by the model
        return evaluate(None, dataset, prediction_dir=predictions, predictions_read_only=True, **common)
    cache = Path(output) / "predictions" if output is not None else None
    return evaluate(predictor, dataset, prediction_dir=cache, **common)


def suite_table(results: dict[str, dict | None]) -> str:
    """Markdown: one row per dataset (AbsRel×100, δ1×100, samples) and the paper-style one-liner."""
    lines = ["| dataset | images | AbsRel×100 | δ1×100 |", "|---|---|---|---|"]
    paper = []
    for name, res in results.items():
        title = SUITE_TITLES.get(name, name)
        if res is None:
            lines.append(f"| {title} | — | — | — |")
            paper.append("—")
            continue
        a, d = res["metrics"]["abs_rel"] * 100, res["metrics"]["delta1"] * 100
        lines.append(f"| {title} | {res['n_samples']} | {a:.1f} | {d:.1f} |")
        paper.append(f"{a:.1f}/{d:.1f}")
    header = "| " + " | ".join(SUITE_TITLES.get(n, n) for n in results) + " |"
    lines += ["", "AbsRel×100 / δ1×100:", "", header, "|" + "---|" * len(results), "| " + " | ".join(paper) + " |"]
    return "\n".join(lines) + "\n"


def _run_video(args, predictor) -> int:
    from apdepth.evaluation.video_eval import evaluate_video_sequences, summary_markdown

    if not args.output:
        print(
            "error: --dataset synthetic-video needs --output (per-frame predictions and reports go there)",
            file=sys.stderr,
        )
        return 2
    try:
        summary = evaluate_video_sequences(
            predictor,
            args.data_dir,
            args.output,
            max_sequences=args.max_samples,
            processing_resolution=args.processing_res,
            batch_size=args.batch_size,
            reuse_predictions=True,
            progress=not args.no_progress,
            model_id=str(args.checkpoint or "bundled"),
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_markdown(summary))
    return 0


def run(args) -> int:
    from apdepth.evaluation.evaluate import summary_markdown

    if args.max_samples is not None and args.max_samples < 1:
        print("error: --max-samples must be >= 1", file=sys.stderr)
        return 2
    if args.processing_res is not None and args.processing_res < 0:
        print("error: --processing-res must be >= 0 (0 = native)", file=sys.stderr)
        return 2
    if args.output:
        from apdepth.image_io import unwritable_reason

        reason = unwritable_reason(args.output)
        if reason:  # checked before any sample is read or predicted
            print(f"error: cannot write to --output {args.output}: {reason}", file=sys.stderr)
            return 2
    predictor = LazyPredictor(args)

    if args.dataset:
        if not args.data_dir:
            print("error: --dataset needs --data-dir (the dataset's tar or folder)", file=sys.stderr)
            return 2
        if args.dataset == "synthetic-video":  # clips: naive vs consistent, temporal metrics (docs/video.md)
            return _run_video(args, predictor)
        try:
            result = _run_one(
                args.dataset, args.data_dir, args.split_file, predictor, args, args.output, args.predictions
            )
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(summary_markdown(result))
        return 0

    if not args.data_root:
        print("error: --suite needs --data-root", file=sys.stderr)
        return 2
    names = SUITE if args.suite == "all" else tuple(s.strip() for s in args.suite.split(",") if s.strip())
    unknown = [n for n in names if n not in SUITE]
    if unknown or not names:
        print(f"error: --suite takes 'all' or names from {', '.join(SUITE)}; got {args.suite!r}", file=sys.stderr)
        return 2
    from apdepth.data import get_dataset_class

    results: dict[str, dict | None] = {}
    for name in names:
        cls = get_dataset_class(name)
        data_dir = Path(args.data_root) / cls.archive_name
        if not data_dir.exists() and not data_dir.with_suffix("").exists():
            print(f"warning: {name}: {data_dir} not found, skipped", file=sys.stderr)
            results[name] = None
            continue
        if not data_dir.exists():
            data_dir = data_dir.with_suffix("")
        split = _find_split(args.split_dir, cls.split_names)
        if split is None:
            print(f"note: {name}: no split list found, evaluating every sample in {data_dir}", file=sys.stderr)
        out = Path(args.output) / name if args.output else None
        preds = Path(args.predictions) / name if args.predictions else None
        try:
            results[name] = _run_one(name, data_dir, split, predictor, args, out, preds)
        except ValueError as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            return 2
    table = suite_table(results)
    print(table)
    if args.output:
        from apdepth.evaluation.evaluate import json_safe
        from apdepth.image_io import atomic_write

        out = Path(args.output)
        with atomic_write(out / "suite.md", "wb") as fh:
            fh.write(table.encode("utf-8"))
        summary = {
            n: (None if r is None else {k: v for k, v in r.items() if k != "per_sample"}) for n, r in results.items()
        }
        with atomic_write(out / "suite.json", "wb") as fh:
            fh.write((json.dumps(json_safe(summary), indent=2) + "\n").encode("utf-8"))
    return 0 if any(r is not None for r in results.values()) else 2
