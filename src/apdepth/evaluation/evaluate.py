"""``evaluate()``: the one evaluation loop, shared by validation during training and ``apdepth eval``.

For each sample: get the affine-invariant prediction (from the cache or the predictor), bring it
onto the GT grid, fit scale and shift per image, clip to the dataset's valid range, compute the
metrics over valid pixels (and boundary F1 where the dataset's GT is dense), then average the
per-image values over the dataset.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from apdepth.evaluation.alignment import ALIGNMENTS, align
from apdepth.evaluation.boundary import boundary_f1
from apdepth.evaluation.metrics import METRIC_NAMES, compute_metrics

# How each metric is shown in the Markdown summary: (label, multiplier)
DISPLAY = {
    "abs_rel": ("AbsRel ×100", 100.0),
    "sq_rel": ("SqRel ×100", 100.0),
    "rmse": ("RMSE (m)", 1.0),
    "rmse_log": ("RMSE-log ×100", 100.0),
    "log10": ("log10 ×100", 100.0),
    "delta1": ("δ1 ×100", 100.0),
    "delta2": ("δ2 ×100", 100.0),
    "delta3": ("δ3 ×100", 100.0),
    "i_rmse": ("iRMSE (1/km)", 1000.0),
    "silog": ("SI-log ×100", 1.0),  # already ×100 by definition
    "boundary_f1": ("Boundary F1 ×100", 100.0),
}


def prediction_path(prediction_dir: str | os.PathLike, rgb_relpath: str) -> Path:
    """Where the cached prediction of ``rgb_relpath`` lives: ``<dir>/<relpath without ext>_depth.npy``.

    This is the layout ``apdepth predict`` writes for a folder input, so its output can be reused.
    """
    from apdepth.data.archive import normalize_relpath

    stem, _ext = os.path.splitext(normalize_relpath(rgb_relpath))
    return Path(prediction_dir) / f"{stem}_depth.npy"


def _load_prediction(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    arr = np.asarray(arr, dtype=np.float32)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"cached prediction {path} has shape {arr.shape}, expected (H, W)")
    return arr


def _as_depth_list(depth: Any, count: int) -> list[np.ndarray]:
    """Normalise a predictor's ``.depth`` ((B,H,W) array/tensor or list of (H,W)) to a list of arrays."""
    if hasattr(depth, "detach"):  # torch tensor
        depth = depth.detach().float().cpu().numpy()
    if isinstance(depth, np.ndarray):
        if depth.ndim == 2:
            depth = depth[None]
        if depth.ndim == 4 and depth.shape[1] == 1:
            depth = depth[:, 0]
        items = list(depth)
    else:
        items = [np.asarray(d.detach().float().cpu().numpy() if hasattr(d, "detach") else d) for d in depth]
    items = [
        np.squeeze(np.asarray(d, dtype=np.float32)) if np.asarray(d).ndim > 2 else np.asarray(d, dtype=np.float32)
        for d in items
    ]
    if len(items) != count:
        raise ValueError(f"predictor returned {len(items)} depth maps for {count} images")
    return items


def _resize(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()


def _list_collate(batch):
    return batch


def evaluate(
    predictor: Callable | None,
    dataset,
    *,
    alignment: str = "depth",
    processing_resolution: int | None = None,
    prediction_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    max_samples: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
    num_workers: int = 0,
    predictions_read_only: bool = False,
) -> dict:
    """Evaluate ``predictor`` on ``dataset`` with Marigold's affine-invariant protocol.

    Args:
        predictor: called as ``predictor(rgb_list, processing_resolution=res, match_input_resolution=True,
            output_type="np")``, where ``rgb_list`` holds (3, H, W) float tensors in [0, 1]; its ``.depth``
            must be affine-invariant depth in [0, 1] (0 = near) as a (B, H, W) array or a list of (H, W).
            May be None when every prediction is already cached in ``prediction_dir``.
        dataset: a dataset of :mod:`apdepth.data` (sample dicts); its ``min_depth``/``max_depth`` (metres),
            ``processing_resolution``, ``alignment_max_res`` and ``boundary_metrics`` are honoured.
        alignment: ``"depth"`` (default) or ``"disparity"`` least-squares scale and shift per image.
        processing_resolution: longer side the predictor works at; None = the dataset's protocol
            default, 0 = native size.
        prediction_dir: cache of ``<rgb_relpath without ext>_depth.npy``; existing files are reused,
            new predictions are written there (so an interrupted run resumes).
        predictions_read_only: ``prediction_dir`` holds the user's own predictions: every sample's file must
            be there (checked before anything is scored; a ``ValueError`` names how many are missing and the
            first expected path), none is computed or written, and ``predictor`` is not used.
        output_dir: if given, ``per_sample.csv``, ``summary.json`` and ``summary.md`` are written there.
        max_samples: evaluate only the first N samples.
        batch_size: images per predictor call; a predictor that takes a ``batch_size`` keyword (as
            :class:`~apdepth.pipeline.ApDepthPipeline` does) also gets it, so the model sees whole batches.
        progress: show a progress bar.
        num_workers: DataLoader workers for reading samples.

    Returns:
        ``{"dataset", "alignment", "processing_resolution", "n_samples", "n_skipped", "min_depth",
        "max_depth", "metrics": {name: mean over images}, "per_sample": [row dicts]}``; metric names
        are those of :data:`apdepth.evaluation.metrics.METRIC_NAMES` plus ``boundary_f1`` where computed.
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    if predictor is None and prediction_dir is None:
        raise ValueError("evaluate() needs a predictor or a prediction_dir with cached predictions")
    if predictions_read_only:
        if prediction_dir is None:
            raise ValueError("predictions_read_only needs a prediction_dir")
        predictor = None

    name = getattr(dataset, "name", type(dataset).__name__)
    min_depth = float(getattr(dataset, "min_depth", 0.0))
    max_depth = float(getattr(dataset, "max_depth", float("inf")))
    res = int(
        processing_resolution if processing_resolution is not None else getattr(dataset, "processing_resolution", 0)
    )
    max_res_fit = getattr(dataset, "alignment_max_res", None)
    with_boundary = bool(getattr(dataset, "boundary_metrics", False))
    prepare = getattr(dataset, "prepare_prediction", None)

    n_total = len(dataset)
    n = n_total if max_samples is None else min(max_samples, n_total)
    if predictions_read_only:
        _check_predictions_present(dataset, n, Path(prediction_dir))
    batch_kw = {"batch_size": batch_size} if predictor is not None and _takes_batch_size(predictor) else {}
    loader = DataLoader(
        Subset(dataset, range(n)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_list_collate,
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"eval {name}", unit="img")

    rows: list[dict] = []
    n_predicted = 0
    t0 = time.perf_counter()
    warned_resize = False
    for batch in loader:
        preds: list[np.ndarray | None] = [None] * len(batch)
        cached: list[Path | None] = [None] * len(batch)
        missing = []
        for i, sample in enumerate(batch):
            if prediction_dir is not None:
                path = prediction_path(prediction_dir, sample["rgb_relpath"])
                if path.is_file():
                    preds[i], cached[i] = _load_prediction(path), path
                    continue
            missing.append(i)
        if missing:
            if predictor is None:
                path = prediction_path(prediction_dir, batch[missing[0]]["rgb_relpath"])
                raise ValueError(f"no cached prediction {path} and no predictor to compute it")
            rgbs = [batch[i]["rgb"] for i in missing]
            with torch.no_grad():
                out = predictor(
                    rgbs, processing_resolution=res, match_input_resolution=True, output_type="np", **batch_kw
                )
            depth_list = _as_depth_list(getattr(out, "depth", out), len(missing))
            for i, d in zip(missing, depth_list):
                preds[i] = d
                if prediction_dir is not None:
                    from apdepth.writer import save_npy  # the one writer (atomic, umask-respecting)

                    save_npy(prediction_path(prediction_dir, batch[i]["rgb_relpath"]), d.astype(np.float32))
            n_predicted += len(missing)

        for sample, pred, source in zip(batch, preds, cached):
            gt = sample["depth"].numpy()
            valid = sample["valid"].numpy().astype(bool)
            if prepare is not None and pred.shape != gt.shape:
                pred = prepare(pred)
            if source is not None and _aspect_differs(pred.shape, gt.shape):
                raise ValueError(
                    f"prediction {source} has shape {pred.shape} but image {sample['rgb_relpath']} has "
                    f"{tuple(gt.shape)} (another aspect ratio): it is not a prediction of this image"
                )
            if pred.shape != gt.shape:
                if not warned_resize:
                    warnings.warn(
                        f"{name}: prediction of shape {pred.shape} resized bilinearly to the GT's {gt.shape}",
                        stacklevel=2,
                    )
                    warned_resize = True
                pred = _resize(pred, gt.shape)
            rows.append(
                _evaluate_one(
                    pred, gt, valid, sample["rgb_relpath"], alignment, min_depth, max_depth, max_res_fit, with_boundary
                )
            )
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()

    evaluated = [r for r in rows if not r["skipped"]]
    metric_names = list(METRIC_NAMES) + (["boundary_f1"] if with_boundary else [])
    means = {m: (float(np.mean([r[m] for r in evaluated])) if evaluated else float("nan")) for m in metric_names}
    result = {
        "dataset": name,
        "alignment": alignment,
        "processing_resolution": res,
        "n_samples": len(evaluated),
        "n_skipped": len(rows) - len(evaluated),
        "n_predicted": n_predicted,
        "min_depth": min_depth,
        "max_depth": max_depth,
        "seconds": round(time.perf_counter() - t0, 3),
        "metrics": means,
        "per_sample": rows,
    }
    if output_dir is not None:
        write_reports(result, output_dir)
    return result


def _takes_batch_size(predictor) -> bool:
    import inspect

    try:
        params = inspect.signature(predictor).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "batch_size" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _aspect_differs(a: tuple[int, ...], b: tuple[int, ...], tolerance: float = 0.02) -> bool:
    ra, rb = a[0] / max(a[1], 1), b[0] / max(b[1], 1)
    return abs(ra - rb) > tolerance * rb


def _check_predictions_present(dataset, n: int, prediction_dir: Path) -> None:
    """Raise a ValueError naming what is missing unless every one of the first ``n`` samples has its file."""
    specs = getattr(dataset, "samples", None)
    if specs is None:
        rels = [dataset[i]["rgb_relpath"] for i in range(n)]
    else:
        rels = [s.rgb for s in specs[:n]]
    absent = [prediction_path(prediction_dir, rel) for rel in rels]
    absent = [p for p in absent if not p.is_file()]
    if not absent:
        return
    present = sum(1 for _ in prediction_dir.rglob("*_depth.npy")) if prediction_dir.is_dir() else 0
    raise ValueError(
        f"--predictions {prediction_dir}: {len(absent)} of {n} predictions missing (first: {absent[0]}); "
        f"{present} *_depth.npy file(s) found there. Each image's prediction must be <predictions>/<image path in "
        "the dataset without extension>_depth.npy; the folder is only read. Leave out --predictions to have eval "
        "compute the missing ones (cached under <output>/predictions)."
    )


def _evaluate_one(pred, gt, valid, relpath, alignment, min_depth, max_depth, max_res_fit, with_boundary) -> dict:
    row: dict[str, Any] = {"rgb_relpath": relpath, "n_valid": int(valid.sum()), "skipped": False}
    finite = np.isfinite(pred)
    valid = valid & finite
    if valid.sum() < 2:
        row.update(skipped=True, scale=float("nan"), shift=float("nan"))
        row.update({m: float("nan") for m in METRIC_NAMES})
        if with_boundary:
            row["boundary_f1"] = float("nan")
        return row
    pred = np.where(finite, pred, 0.0)
    aligned, scale, shift = align(
        pred, gt, valid, alignment=alignment, min_depth=min_depth, max_depth=max_depth, max_resolution=max_res_fit
    )
    row.update(scale=scale, shift=shift)
    row.update(compute_metrics(aligned, gt, valid))
    if with_boundary:
        row["boundary_f1"] = boundary_f1(aligned, gt, valid)
    return row


def _fmt(value: float, mult: float = 1.0, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value * mult:.{digits}f}"


def summary_markdown(result: dict) -> str:
    """The Markdown report of one evaluation (title, paper-style headline, full metric table)."""
    res = result["processing_resolution"]
    m = result["metrics"]
    lines = [
        f"# Evaluation on {result['dataset']}",
        "",
        f"{result['n_samples']} images ({result['n_skipped']} skipped without valid GT), "
        f"{result['alignment']}-space least-squares alignment, processing resolution "
        f"{'native' if res == 0 else res}, valid depth ({result['min_depth']:g}, {result['max_depth']:g}) m.",
        "",
        f"**AbsRel×100 / δ1×100: {_fmt(m['abs_rel'], 100, 1)} / {_fmt(m['delta1'], 100, 1)}**",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, value in m.items():
        label, mult = DISPLAY.get(key, (key, 1.0))
        lines.append(f"| {label} | {_fmt(value, mult)} |")
    return "\n".join(lines) + "\n"


def write_reports(result: dict, output_dir: str | os.PathLike) -> list[Path]:
    """Write ``per_sample.csv``, ``summary.json`` and ``summary.md`` atomically into ``output_dir``."""
    from apdepth.image_io import atomic_write

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = result["per_sample"]
    metric_names = list(result["metrics"])
    fields = ["rgb_relpath", "n_valid", "skipped", "scale", "shift", *metric_names]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    paths = [out / "per_sample.csv", out / "summary.json", out / "summary.md"]
    with atomic_write(paths[0], "wb") as fh:
        fh.write(buf.getvalue().encode("utf-8"))
    summary = {k: v for k, v in result.items() if k != "per_sample"}
    with atomic_write(paths[1], "wb") as fh:
        fh.write((json.dumps(json_safe(summary), indent=2) + "\n").encode("utf-8"))
    with atomic_write(paths[2], "wb") as fh:
        fh.write(summary_markdown(result).encode("utf-8"))
    return paths


def json_safe(obj):
    """``obj`` with NaN as None and +-inf as the strings 'inf'/'-inf' (recursively), so the JSON stays valid."""
    # JSON has no inf/nan; null for nan and a string for inf keep the file strictly valid
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
