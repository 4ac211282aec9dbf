"""Video benchmark with exact ground truth: naive per-frame depth vs the temporally consistent clip.

One command renders (once; reused afterwards) held-out synthetic sequences with ``apdepth synth --video``
(scene seeds from 950000, far from the training seeds below 900000 and the still-image test set
900000-900199), runs the model once per sequence and scores both outputs of that pass with
:func:`apdepth.evaluation.video_eval.evaluate_video_sequences` (the same code as
``apdepth eval --dataset synthetic-video``): the naive output aligned per frame and per sequence, the
consistent output aligned per sequence, the consistent output after the flow-guided temporal filter
(``pipe.predict_video``'s default smoothing) aligned per sequence, and the ground truth as the floor. Metrics: AbsRel, δ1, temporal
alignment error (TAE, true poses), flicker on static pixels. Writes ``per_sequence.csv``, ``summary.json``
and ``summary.md`` to ``--out``, and the per-frame predictions to ``--out/raw/`` (``--reuse-predictions``
rescores them without running the model again).

    python benchmarks/video_consistency.py --out docs/results/video --processing-res 160   # bundled model
    python benchmarks/video_consistency.py --out OUT --processing-res 160 --checkpoint PATH_OR_ID
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="results folder")
    p.add_argument(
        "--data", type=Path, default=Path("data/synth_video_test"), help="sequence folder (rendered if missing)"
    )
    p.add_argument("--num", type=int, default=20, help="sequences (default 20)")
    p.add_argument("--frames", type=int, default=48, help="frames per sequence (default 48)")
    p.add_argument("--size", default="120x160", help="frame size HxW (default 120x160)")
    p.add_argument("--seed", type=int, default=950000, help="first scene seed (default 950000)")
    p.add_argument("--scene", default="mixed", choices=["indoor", "outdoor", "mixed"])
    p.add_argument("--checkpoint", default=None, help="pipeline folder or hub id (default: the bundled model)")
    p.add_argument("--prior", default=None)
    p.add_argument("--processing-res", type=int, default=None, help="default: stored with the model")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1, help="processes for rendering (default 1)")
    p.add_argument(
        "--smoothing",
        default="bidirectional",
        choices=["forward", "bidirectional"],
        help="temporal filter of the 'consistent + smoothing' row (default bidirectional)",
    )
    p.add_argument("--smoothing-strength", type=float, default=None, help="default: predict_video's default")
    p.add_argument(
        "--no-travel-correction",
        dest="travel_correction",
        action="store_false",
        help="consistent rows without the camera-travel correction (for the ablation)",
    )
    p.add_argument(
        "--reuse-predictions",
        action="store_true",
        help="reuse the per-frame predictions saved in OUT/raw/ by an earlier run (same model only)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    from apdepth.data.synthetic_cli import parse_size, write_video_dataset
    from apdepth.evaluation.video_eval import evaluate_video_sequences, summary_markdown

    args = parse_args(argv)
    h, w = parse_size(args.size)
    t0 = time.perf_counter()
    write_video_dataset(
        args.data, args.num, args.frames, h, w, args.seed, args.scene, skip_existing=True, workers=args.workers
    )
    t_render = time.perf_counter() - t0
    pipe = None

    def predictor(*a, **kw):
        nonlocal pipe
        if pipe is None:
            from apdepth.runtime import load_pipeline

            pipe = load_pipeline(args.checkpoint, prior=args.prior, device=args.device, quiet=True)
        return pipe(*a, **kw)

    summary = evaluate_video_sequences(
        predictor,
        args.data,
        args.out,
        max_sequences=args.num,
        max_frames=args.frames,
        processing_resolution=args.processing_res,
        batch_size=args.batch_size,
        reuse_predictions=args.reuse_predictions,
        sequence_ids=[f"{s:08d}" for s in range(args.seed, args.seed + args.num)],
        model_id=str(args.checkpoint or "bundled"),
        smoothing=args.smoothing,
        smoothing_strength=args.smoothing_strength,
        travel_correction=args.travel_correction,
    )
    summary["command"] = "python benchmarks/video_consistency.py " + " ".join(sys.argv[1:] if argv is None else argv)
    summary["checkpoint"] = args.checkpoint or "bundled"
    summary["render_seconds"] = round(t_render, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(summary_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
