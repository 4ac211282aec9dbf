"""The paper's ablation in miniature: what the prior, the prior conditioning and the frequency loss each add.

Four rows (six with the end-to-end fine-tuned pair), all scored by the one ``apdepth.evaluation.evaluate()``
on a held-out synthetic test set:

    (a) the prior alone        the depth prior inside the pipeline (relative disparity -> scored with
                               disparity-space alignment; the depth-aligned number is reported as well)
    (b) no prior               the same single-step model trained without the prior (Marigold-style control)
    (c) ApDepth, stage 1       prior-conditioned, latent MSE
    (d) ApDepth, stage 2       stage 1 fine-tuned with the latent frequency loss
    (b') no prior, end to end  (b) fine-tuned on the decoded depth (``--noprior-e2e``, optional)
    (e) ApDepth, end to end    (d) fine-tuned on the decoded depth, as E2E-FT does for Marigold
                               (``--e2e``, optional; the bundled model)

Reference rows (``--baselines``, on by default), scored the same way:

    VAE depth round trip       the ground-truth depth, normalised as in training, encoded and decoded by the
                               stage-2 model's VAE at the processing resolution: an upper bound for every
                               model that decodes its depth through this VAE
    vertical ramp              "the bottom of the image is near": a geometric baseline with no learning

Metrics: AbsRel, δ1 and the scale-invariant boundary F1 (the synthetic GT is dense and exact).
Differences between rows come with a paired bootstrap 95% interval over test scenes (``--bootstrap``
resamples): prior vs no prior (c - b, and e - b' when given), ApDepth vs its own prior in the same
alignment space (d - a and e - a, in disparity and in depth space), stage 2 vs stage 1 (d - c) and end-to-end
fine-tuning vs stage 2 (e - d).
Writes ``<output>/ablation.json``, ``<output>/ablation.md`` (also printed; the exact command is on top),
a figure (input | prior | stage 1 | stage 2 | [end to end |] ground truth for a few test scenes) and an edge crop view
(the same columns, zoomed on the test scene region with the most occlusion edges).

Reproduce (see docs/results.md):

    apdepth synth --out data/synth_test --num 200 --size 240x320 --seed 900000 --scene mixed
    python benchmarks/ablation.py --test-set data/synth_test --prior-from runs/stage1/pipeline \\
        --noprior runs/noprior/pipeline --stage1 runs/stage1/pipeline --stage2 runs/stage2/pipeline \\
        --output docs/results --figure docs/images/ablation.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

# Figure layout in pixels (the test checks the figure size against these).
GAP = 4
HEADER = 18
FOOTER = 16
# Which ablation row fills each prediction column of the figure (those of rows that were run), and its title.
FIGURE_ROWS = (("prior", "prior"), ("stage1", "stage 1"), ("stage2", "stage 2"), ("e2e", "end to end"))
EDGE_RATIO = 1.25  # inverse-depth ratio above which GT neighbours count as an occlusion edge (crop picking)


class Row(NamedTuple):
    key: str
    label: str
    alignment: str


ROWS = (
    Row("prior", "(a) prior alone", "disparity"),
    Row("noprior", "(b) single step, no prior (Marigold-style control)", "depth"),
    Row("stage1", "(c) ApDepth, stage 1 (latent MSE)", "depth"),
    Row("stage2", "(d) ApDepth, stage 2 (+ latent frequency loss)", "depth"),
    Row("noprior_e2e", "(b') no prior, end-to-end fine-tuned (control for (e))", "depth"),
    Row("e2e", "(e) ApDepth, end-to-end fine-tuned on decoded depth", "depth"),
)
OPTIONAL_ROWS = ("noprior_e2e", "e2e")  # scored only when their checkpoints are given
# Reference rows: (key, label, alignment); scored from predictions this script writes into the cache.
BASELINES = (
    Row("vae", "VAE depth round trip (upper bound)", "depth"),
    Row("ramp", "vertical ramp (bottom = near)", "disparity"),
)
# Paired differences reported with bootstrap intervals: (label, row a, alignment a, row b, alignment b).
# The difference is b - a; "better" is read per metric (lower AbsRel, higher δ1 / boundary F1).
COMPARISONS = (
    ("prior conditioning: (c) stage 1 vs (b) no prior", "noprior", "depth", "stage1", "depth"),
    ("ApDepth vs its own prior, disparity space: (d) vs (a)", "prior", "disparity", "stage2", "disparity"),
    ("ApDepth vs its own prior, depth space: (d) vs (a)", "prior", "depth", "stage2", "depth"),
    ("frequency loss: (d) stage 2 vs (c) stage 1", "stage1", "depth", "stage2", "depth"),
    ("prior conditioning, end to end: (e) vs (b') no prior", "noprior_e2e", "depth", "e2e", "depth"),
    ("ApDepth (e) vs its own prior, disparity space: (e) vs (a)", "prior", "disparity", "e2e", "disparity"),
    ("ApDepth (e) vs its own prior, depth space: (e) vs (a)", "prior", "depth", "e2e", "depth"),
    ("end-to-end fine-tuning: (e) vs (d) stage 2", "stage2", "depth", "e2e", "depth"),
)
LOWER_IS_BETTER = {"abs_rel": True, "delta1": False, "boundary_f1": False}
TABLE_METRICS = (
    ("abs_rel", "AbsRel ×100", 100.0),
    ("delta1", "δ1 ×100", 100.0),
    ("boundary_f1", "Boundary F1 ×100", 100.0),
)


class PriorOnly:
    """Predictor adapter for ``evaluate()``: the pipeline's prior alone.

    Calls the pipeline with ``output_prior=True`` and hands back its ``prior_depth`` (relative depth in
    [0, 1], 0 = near, min/max normalised per image: an affine map of the prior's disparity) as ``.depth``,
    so the prior goes through exactly the resizing and scoring path of the full model.
    """

    def __init__(self, pipe):
        if getattr(pipe, "prior", None) is None:
            raise ValueError(
                "the --prior-from checkpoint has no prior (it is a prior-free model); "
                "pass a prior-conditioned checkpoint such as the stage-1 one"
            )
        self.pipe = pipe

    def __call__(self, images, processing_resolution=None, match_input_resolution=True, output_type="np", **kwargs):
        out = self.pipe(
            images,
            processing_resolution=processing_resolution,
            match_input_resolution=match_input_resolution,
            output_type=output_type,
            output_prior=True,
            **kwargs,
        )
        return SimpleNamespace(depth=out.prior_depth)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--test-set", required=True, help="synthetic test set folder (written by `apdepth synth`)")
    p.add_argument(
        "--split-file", help="list of test samples, e.g. DIR/split.txt (default: every sample in the folder)"
    )
    p.add_argument("--prior-from", help="prior-conditioned checkpoint whose prior is row (a) (default: --stage1)")
    p.add_argument("--noprior", required=True, help="checkpoint of the prior-free control model, row (b)")
    p.add_argument("--stage1", required=True, help="ApDepth checkpoint after stage 1, row (c)")
    p.add_argument("--stage2", required=True, help="ApDepth checkpoint after stage 2, row (d)")
    p.add_argument("--e2e", help="ApDepth checkpoint fine-tuned end to end on the decoded depth, row (e) (optional)")
    p.add_argument(
        "--noprior-e2e", help="the prior-free control fine-tuned end to end at the same budget, row (b') (optional)"
    )
    p.add_argument("--output", required=True, help="folder for ablation.json and ablation.md")
    p.add_argument("--figure", required=True, help="figure PNG path")
    p.add_argument("--crop-figure", help="edge crop view PNG path (default: <figure stem>_edges.png)")
    p.add_argument("--figure-scenes", type=int, default=4, help="test scenes in the figure (default 4)")
    p.add_argument("--tile-width", type=int, default=320, help="figure tile width in pixels (default 320)")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N test images")
    p.add_argument(
        "--processing-res",
        type=int,
        default=None,
        help="longer side for inference; default: the dataset protocol's (native for synthetic)",
    )
    p.add_argument("--cache-dir", help="keep per-row predictions here (reused on re-runs; default: a temporary folder)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default auto)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="leave out the VAE round trip and vertical ramp rows",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=10000,
        help="bootstrap resamples for the 95%% intervals of differences (default 10000; 0 = none)",
    )
    args = p.parse_args(argv)
    if args.figure_scenes < 1:
        p.error("--figure-scenes must be >= 1")
    if args.tile_width < 16:
        p.error("--tile-width must be >= 16")
    if args.max_samples is not None and args.max_samples < 1:
        p.error("--max-samples must be >= 1")
    args.prior_from = args.prior_from or args.stage1
    return args


# ---------------------------------------------------------------------------------------------- scoring


def _load(checkpoint: str, device, dtype):
    from apdepth.runtime import load_pipeline

    return load_pipeline(checkpoint, device=device, dtype=dtype, fast_path=False)


def _check_cache(cache: Path, source: dict) -> None:
    """A prediction cache belongs to one checkpoint and resolution; refuse to mix (stale numbers look real)."""
    stamp = cache / "source.json"
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old != source:
            raise ValueError(
                f"prediction cache {cache} was made with {old}, not {source}; delete it or pass another --cache-dir"
            )
    else:
        cache.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(source, indent=2) + "\n")


def _stored_prior(checkpoint) -> bool | None:
    """Whether a local pipeline folder declares a prior (None when that cannot be told without loading)."""
    index = Path(checkpoint) / "model_index.json"
    if not index.is_file():
        return None
    entry = json.loads(index.read_text()).get("prior")
    return None if entry is None else entry[0] is not None


def _check_roles(checkpoints: dict[str, str], has_prior) -> None:
    """Fail before hours of inference when checkpoints are passed in the wrong roles."""
    for key, ckpt in checkpoints.items():
        flag = has_prior(key)
        if flag is None:
            continue
        if key == "noprior" and flag:
            raise ValueError(f"--noprior {ckpt} has a prior; row (b) needs the prior-free control model")
        if key == "noprior_e2e" and flag:
            raise ValueError(f"--noprior-e2e {ckpt} has a prior; row (b') needs the prior-free control model")
        if key not in ("noprior", "noprior_e2e") and not flag:
            option = "--prior-from" if key == "prior" else f"--{key}"
            raise ValueError(
                f"{option} {ckpt} has no prior (it is a prior-free model); rows (a), (c), (d) and (e) "
                "need prior-conditioned checkpoints"
            )


class VerticalRamp:
    """Predictor adapter for ``evaluate()``: "the bottom of the image is near", whatever the image.

    Depth in [0, 1] falls linearly from 1 (top row) to 0 (bottom row); a baseline any learned model must beat.
    """

    def __call__(self, images, processing_resolution=None, match_input_resolution=True, output_type="np", **kwargs):
        out = []
        for im in images:
            h, w = im.shape[-2:]
            out.append(np.repeat(np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None], w, axis=1))
        return SimpleNamespace(depth=out)


def vae_round_trip(pipe, dataset, cache: Path, res: int, n: int) -> None:
    """Write, for each of the first ``n`` samples, the GT depth after a round trip through ``pipe``'s VAE.

    The GT is brought to the processing size (longer side ``res``, nearest neighbour; 0 = native), mapped
    to [-1, 1] as the training target is (2%/98% quantiles, method.md section 2) with invalid pixels set to
    +1 (far), padded to the VAE's downsampling factor, encoded (posterior mean) and decoded exactly as a
    prediction is, then resized back: the best depth any model decoding through this VAE can produce.
    """
    import torch
    import torch.nn.functional as F

    from apdepth.data.transforms import normalize_depth_quantile
    from apdepth.evaluation.evaluate import prediction_path
    from apdepth.image_io import save_npy

    factor = int(getattr(pipe, "vae_scale_factor", 8))
    param = next(pipe.vae.parameters())
    for i in range(n):
        s = dataset[i]
        path = prediction_path(cache, s["rgb_relpath"])
        if path.is_file():
            continue
        depth, valid = s["depth"].float(), s["valid"].bool()
        h, w = depth.shape
        scale = 1.0 if res == 0 else res / max(h, w)
        ph, pw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        d = F.interpolate(depth[None, None], size=(ph, pw), mode="nearest")[0, 0]
        v = F.interpolate(valid[None, None].float(), size=(ph, pw), mode="nearest")[0, 0] > 0.5
        norm, v = normalize_depth_quantile(d, v)
        norm = torch.where(v, norm, torch.ones_like(norm))
        x = F.pad(norm[None, None], (0, (-pw) % factor, 0, (-ph) % factor), mode="replicate").expand(-1, 3, -1, -1)
        with torch.no_grad():
            out = pipe.decode_depth(pipe.encode(x.to(param.device, param.dtype))).float().cpu()[:, :ph, :pw]
        out = F.interpolate(out[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        save_npy(path, out.clamp(0, 1).numpy().astype(np.float32))


def _entry(row: Row, checkpoint, result: dict) -> dict:
    """One row of the report: what was scored (row, checkpoint, alignment) and evaluate()'s summary of it."""
    keys = ("n_samples", "n_skipped", "processing_resolution", "seconds", "metrics")
    return {
        "key": row.key,
        "label": row.label,
        "checkpoint": checkpoint,
        "alignment": row.alignment,
        **{k: result[k] for k in keys},
    }


def _per_sample(result: dict) -> dict[str, np.ndarray]:
    """Per-image metric arrays (NaN where an image was skipped), in dataset order."""
    rows = result["per_sample"]
    return {
        k: np.array([np.nan if r.get("skipped") else r.get(k, np.nan) for r in rows], dtype=np.float64)
        for k in LOWER_IS_BETTER
    }


def active_rows(args) -> tuple[Row, ...]:
    """The rows to score: the four of the paper's ablation, plus the optional ones whose checkpoints are given."""
    return tuple(r for r in ROWS if r.key not in OPTIONAL_ROWS or getattr(args, r.key) is not None)


def score(args, dataset, cache_root: Path) -> tuple[list[dict], dict]:
    """Evaluate the rows (and the reference rows); returns one dict per row (label, checkpoint,
    alignment, metrics, ...) and the per-image metrics keyed by ``(row key, alignment)``."""
    from apdepth.evaluation.evaluate import evaluate
    from apdepth.runtime import pick_device, pick_dtype

    device, dtype = pick_device(args.device), pick_dtype(args.dtype)
    rows = active_rows(args)
    checkpoints = {"prior": args.prior_from, "noprior": args.noprior, "stage1": args.stage1, "stage2": args.stage2}
    checkpoints.update({key: getattr(args, key) for key in OPTIONAL_ROWS if getattr(args, key) is not None})
    from apdepth.hub import resolve_checkpoint

    # Resolve (and for hub ids fetch) every checkpoint first: a typo in --stage2 should not surface
    # only after the other rows have run.
    resolved = {key: resolve_checkpoint(ckpt) for key, ckpt in checkpoints.items()}
    _check_roles(checkpoints, lambda key: _stored_prior(resolved[key]))
    res = args.processing_res
    results, samples = [], {}
    common = dict(
        processing_resolution=res,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    other = {"depth": "disparity", "disparity": "depth"}
    pipe = None
    for row in rows:
        ckpt = checkpoints[row.key]
        cache = cache_root / row.key
        _check_cache(
            cache, {"checkpoint": str(Path(resolved[row.key]).resolve()), "processing_resolution": res, "row": row.key}
        )
        pipe = _load(resolved[row.key], device, dtype)
        has_prior = pipe.prior is not None
        _check_roles({row.key: ckpt}, lambda _: has_prior)  # published layouts tell only once loaded
        predictor = PriorOnly(pipe) if row.key == "prior" else pipe
        r = evaluate(predictor, dataset, alignment=row.alignment, prediction_dir=cache, **common)
        entry = _entry(row, ckpt, r)
        samples[(row.key, row.alignment)] = _per_sample(r)
        # The same cached predictions in the other alignment space: the prior for reference in the table,
        # the models so that each can be compared with the prior in the prior's own space.
        r_other = evaluate(None, dataset, alignment=other[row.alignment], prediction_dir=cache, **common)
        samples[(row.key, other[row.alignment])] = _per_sample(r_other)
        if row.key == "prior":
            entry["metrics_depth_aligned"] = r_other["metrics"]
        results.append(entry)
        if row.key != rows[-1].key:
            del pipe
        del predictor
    if args.baselines:
        res_used = results[0]["processing_resolution"]
        n = results[0]["n_samples"] + results[0]["n_skipped"]
        for row in BASELINES:
            cache = cache_root / row.key
            _check_cache(
                cache,
                {
                    "checkpoint": str(Path(resolved["stage2"]).resolve()) if row.key == "vae" else None,
                    "processing_resolution": res,
                    "row": row.key,
                },
            )
            if row.key == "vae":
                # The last row's pipeline: every ApDepth row decodes through the stage-2 model's VAE.
                vae_round_trip(pipe, dataset, cache, res_used, n)
                predictor, ckpt = None, checkpoints["stage2"]
            else:
                predictor, ckpt = VerticalRamp(), None
            r = evaluate(predictor, dataset, alignment=row.alignment, prediction_dir=cache, **common)
            entry = dict(_entry(row, ckpt, r), reference=True)
            samples[(row.key, row.alignment)] = _per_sample(r)
            if row.key == "ramp":
                r_depth = evaluate(None, dataset, alignment="depth", prediction_dir=cache, **common)
                entry["metrics_depth_aligned"] = r_depth["metrics"]
            results.append(entry)
    del pipe
    return results, samples


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 10000, seed: int = 0) -> dict:
    """Mean of ``b - a`` over the images where both are finite, and its 95% percentile bootstrap interval
    (images resampled with replacement, the same draw for both rows: a paired test; Efron & Tibshirani 1993).

    Returns ``{"diff", "lo", "hi", "n"}``; ``lo``/``hi`` are NaN when ``resamples`` is 0 or no image is shared.
    """
    ok = np.isfinite(a) & np.isfinite(b)
    d = (b - a)[ok]
    if d.size == 0:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    out = {"diff": float(d.mean()), "lo": float("nan"), "hi": float("nan"), "n": int(d.size)}
    if resamples > 0:
        rng = np.random.default_rng(seed)
        means = np.empty(resamples)
        for start in range(0, resamples, 1000):  # bounded memory for large test sets
            stop = min(resamples, start + 1000)
            idx = rng.integers(0, d.size, size=(stop - start, d.size))
            means[start:stop] = d[idx].mean(axis=1)
        out["lo"], out["hi"] = (float(x) for x in np.quantile(means, [0.025, 0.975]))
    return out


def compare(samples: dict, resamples: int) -> list[dict]:
    """The paired differences of :data:`COMPARISONS` for every metric, with their intervals and verdicts."""
    rows = []
    for label, ka, aa, kb, ab in COMPARISONS:
        if (ka, aa) not in samples or (kb, ab) not in samples:
            continue
        for metric, lower in LOWER_IS_BETTER.items():
            r = paired_bootstrap(samples[(ka, aa)][metric], samples[(kb, ab)][metric], resamples)
            if not (math.isfinite(r["lo"]) and math.isfinite(r["hi"])):
                verdict = "no interval"
            elif (r["hi"] < 0) if lower else (r["lo"] > 0):
                verdict = "better"
            elif (r["lo"] > 0) if lower else (r["hi"] < 0):
                verdict = "worse"
            else:
                verdict = "no significant difference"
            rows.append({"comparison": label, "metric": metric, **r, "verdict": verdict})
    return rows


# ---------------------------------------------------------------------------------------------- reports


def _fmt(value, mult: float) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value * mult:.1f}"


def markdown(command: str, rows: list[dict], meta: dict, differences: list[dict] | None = None) -> str:
    res = meta["processing_resolution"]
    lines = [
        "# Ablation on the synthetic test set",
        "",
        "```bash",
        command,
        "```",
        "",
        f"{meta['n_samples']} test images from `{meta['test_set']}`, processing resolution "
        f"{'native' if res == 0 else res}, per-image least-squares scale and shift, valid depth "
        f"({meta['min_depth']:g}, {meta['max_depth']:g}) m. Mean over images.",
        "",
        "| row | alignment | " + " | ".join(label for _, label, _ in TABLE_METRICS) + " |",
        "|---|---|" + "---|" * len(TABLE_METRICS),
    ]
    for r in rows:
        cells = [_fmt(r["metrics"].get(k), m) for k, _, m in TABLE_METRICS]
        lines.append(f"| {r['label']} | {r['alignment']} | " + " | ".join(cells) + " |")
        if "metrics_depth_aligned" in r:
            cells = [_fmt(r["metrics_depth_aligned"].get(k), m) for k, _, m in TABLE_METRICS]
            lines.append(f"| {r['label']}, depth-aligned (reference only) | depth | " + " | ".join(cells) + " |")
    if differences:
        lines += [
            "",
            f"Paired differences (second row minus first, mean over the same images) with bootstrap 95% intervals "
            f"({meta.get('bootstrap', 0)} resamples of the test images):",
            "",
            "| comparison | metric | difference ×100 | 95% interval ×100 | reading |",
            "|---|---|---|---|---|",
        ]
        names = {k: label for k, label, _ in TABLE_METRICS}
        for d in differences:
            lines.append(
                f"| {d['comparison']} | {names[d['metric']]} | {d['diff'] * 100:+.2f} | "
                f"[{d['lo'] * 100:+.2f}, {d['hi'] * 100:+.2f}] | {d['verdict']} |"
            )
    lines += [
        "",
        "The prior predicts relative disparity, so its headline row fits scale and shift in disparity space; "
        "the depth-aligned line scores the same predictions the way the models are scored. Reference rows: the "
        "VAE round trip encodes and decodes the ground truth (an upper bound for the models); the vertical ramp "
        'is a baseline with no learning. "better" means the interval excludes zero in the metric\'s favourable '
        "direction (lower AbsRel, higher δ1 and boundary F1).",
        "",
        f"![{', '.join(meta['figure_columns'])}]({meta['figure_link']})",
        "",
        f"![zoom on occlusion edges]({meta['crop_figure_link']})",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- figures


def _figure_indices(n: int, k: int) -> list[int]:
    k = min(k, n)
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)}) if k > 1 else [0]


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(arr).resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def _panels(sample: dict, preds: dict[str, np.ndarray], dataset, crop=None) -> list[np.ndarray]:
    """The uint8 tiles of one scene: input, the aligned predictions (``preds``, in column order) and GT on one
    shared colour scale."""
    from apdepth.evaluation.alignment import align
    from apdepth.visualize import colorize_depth

    rgb = (sample["rgb"].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    gt = sample["depth"].numpy().astype(np.float64)
    valid = sample["valid"].numpy().astype(bool)
    vals = gt[valid]
    # One scale per scene from the GT, so colours compare across columns (near = low = the same colour).
    vmin, vmax = np.quantile(vals, [0.02, 0.98]) if vals.size else (0.0, 1.0)
    min_d, max_d = float(getattr(dataset, "min_depth", 0.0)), float(getattr(dataset, "max_depth", np.inf))
    tiles = [rgb]
    alignment = {r.key: r.alignment for r in ROWS}
    for key in preds:
        aligned, _, _ = align(preds[key], gt, valid, alignment=alignment[key], min_depth=min_d, max_depth=max_d)
        tiles.append(colorize_depth(aligned, vmin=vmin, vmax=vmax))
    tiles.append(colorize_depth(gt, vmin=vmin, vmax=vmax, valid=valid))
    if crop is not None:
        y0, y1, x0, x1 = crop
        tiles = [t[y0:y1, x0:x1] for t in tiles]
    return tiles


def _compose(
    rows: list[list[np.ndarray]], tile_w: int, names: list[str], footer: str, nearest: bool, columns: list[str]
) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    h0, w0 = rows[0][0].shape[:2]
    tile_h = max(1, int(round(tile_w * h0 / w0)))
    width = GAP + len(columns) * (tile_w + GAP)
    height = HEADER + len(rows) * (tile_h + GAP) + FOOTER
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for c, title in enumerate(columns):
        draw.text((GAP + c * (tile_w + GAP) + 2, 3), title, fill=(0, 0, 0), font=font)
    for r, (tiles, name) in enumerate(zip(rows, names)):
        y = HEADER + r * (tile_h + GAP)
        for c, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(_resize(tile, (tile_w, tile_h), nearest)), (GAP + c * (tile_w + GAP), y))
        # Scene name on a dark strip in the input tile's corner: readable on any image.
        box = draw.textbbox((GAP + 3, y + 2), name, font=font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((GAP + 3, y + 2), name, fill=(255, 255, 255), font=font)
    draw.text((GAP, height - FOOTER + 2), footer, fill=(60, 60, 60), font=font)
    return np.asarray(canvas)


def _edge_crop(sample: dict) -> tuple[int, int, int, int, int]:
    """(y0, y1, x0, x1, score): a window a third of the image per side around the densest GT occlusion edges."""
    from apdepth.evaluation.boundary import occlusion_edges

    gt = sample["depth"].numpy().astype(np.float64)
    valid = sample["valid"].numpy().astype(bool)
    h, w = gt.shape
    edges = np.zeros((h, w), dtype=np.int64)
    # Horizontal pairs are (H, W-1), vertical ones (H-1, W); count each edge at its first pixel.
    for e in occlusion_edges(np.where(valid, gt, 1.0), EDGE_RATIO, valid):
        edges[: e.shape[0], : e.shape[1]] += e
    ch, cw = min(max(8, h // 3), h), min(max(8, w // 3), w)
    # Centre the crop on the densest edge cluster (found with a half-size window) so that both sides of
    # the boundary are in view; maximising the count over the full window would frame whole objects.
    kh, kw = max(1, ch // 2), max(1, cw // 2)
    sat = np.pad(edges.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = sat[kh:, kw:] - sat[:-kh, kw:] - sat[kh:, :-kw] + sat[:-kh, :-kw]
    wy, wx = np.unravel_index(int(np.argmax(win)), win.shape)
    y0 = int(np.clip(wy + kh // 2 - ch // 2, 0, h - ch))
    x0 = int(np.clip(wx + kw // 2 - cw // 2, 0, w - cw))
    return y0, y0 + ch, x0, x0 + cw, int(win[wy, wx])


def figure_columns(args) -> tuple[list[str], list[str]]:
    """(row keys, column titles) of the figure: input, the prediction columns of the rows run, ground truth."""
    run = {r.key for r in active_rows(args)}
    keys = [k for k, _ in FIGURE_ROWS if k in run]
    return keys, ["input", *(title for k, title in FIGURE_ROWS if k in run), "ground truth"]


def make_figures(args, dataset, cache_root: Path, n_eval: int) -> tuple[Path, Path]:
    from apdepth.evaluation.evaluate import prediction_path
    from apdepth.image_io import save_png

    figure = Path(args.figure)
    crop_figure = (
        Path(args.crop_figure) if args.crop_figure else figure.with_name(f"{figure.stem}_edges{figure.suffix}")
    )
    align_note = "prior: disparity fit, models: depth fit"
    keys, columns = figure_columns(args)
    rows, names, best = [], [], None
    for idx in _figure_indices(n_eval, args.figure_scenes):
        sample = dataset[idx]
        preds = {k: np.load(prediction_path(cache_root / k, sample["rgb_relpath"])) for k in keys}
        rows.append(_panels(sample, preds, dataset))
        names.append(Path(sample["rgb_relpath"]).stem)
        crop = _edge_crop(sample)
        if best is None or crop[4] > best[0][4]:
            best = (crop, sample, preds, names[-1])
    footer = f"each prediction aligned to GT per image ({align_note}); one colour scale per row (GT 2-98%), near = red"
    save_png(figure, _compose(rows, args.tile_width, names, footer, nearest=False, columns=columns))
    (y0, y1, x0, x1, _), sample, preds, name = best
    tiles = _panels(sample, preds, dataset, crop=(y0, y1, x0, x1))
    footer = f"crop rows {y0}:{y1}, cols {x0}:{x1} of {name}, nearest-neighbour zoom; {align_note}"
    save_png(crop_figure, _compose([tiles], args.tile_width, [name], footer, nearest=True, columns=columns))
    return figure, crop_figure


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from apdepth.data import get_dataset
    from apdepth.image_io import atomic_write

    dataset = get_dataset("synthetic", args.test_set, split_file=args.split_file)
    if len(dataset) == 0:
        raise ValueError(f"{args.test_set}: no test images found")
    n_eval = len(dataset) if args.max_samples is None else min(args.max_samples, len(dataset))
    command = "python benchmarks/ablation.py " + shlex.join(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="apdepth-ablation-") as tmp:
        cache_root = Path(args.cache_dir) if args.cache_dir else Path(tmp)
        rows, samples = score(args, dataset, cache_root)
        figure, crop_figure = make_figures(args, dataset, cache_root, n_eval)
    res = rows[0]["processing_resolution"]
    meta = {
        "command": command,
        "test_set": args.test_set,
        "n_samples": rows[0]["n_samples"],
        "processing_resolution": res,
        "min_depth": float(getattr(dataset, "min_depth", 0.0)),
        "max_depth": float(getattr(dataset, "max_depth", float("inf"))),
        "figure": str(figure),
        "crop_figure": str(crop_figure),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.output)
    # Links relative to the report, so they work wherever the repository is checked out.
    meta["figure_link"] = Path(os.path.relpath(figure, out)).as_posix()
    meta["crop_figure_link"] = Path(os.path.relpath(crop_figure, out)).as_posix()
    meta["bootstrap"] = args.bootstrap
    meta["figure_columns"] = figure_columns(args)[1]
    differences = compare(samples, args.bootstrap)
    report = markdown(command, rows, meta, differences)
    from apdepth.evaluation.evaluate import json_safe

    with atomic_write(out / "ablation.json", "wb") as fh:
        fh.write(
            (json.dumps(json_safe({**meta, "rows": rows, "differences": differences}), indent=2) + "\n").encode("utf-8")
        )
    with atomic_write(out / "ablation.md", "wb") as fh:
        fh.write(report.encode("utf-8"))
    print(report)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError) as err:  # bad input, missing checkpoint or test set: a message, no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
