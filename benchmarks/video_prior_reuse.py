"""Experiment: model-side temporal smoothing by reusing the previous frame's prior (not adopted; see
docs/results.md, "Video: temporal consistency").

Each frame's normalised prior condition (what the U-Net sees next to the image latent) is blended with the
previous frame's, carried along OpenCV's DIS optical flow, by :class:`apdepth.temporal.FlowTemporalFilter`
(with its affine correction, so each frame keeps its own prior normalisation), then the model runs as
usual. The per-frame predictions are cached in ``OUT/raw/`` and scored like the video benchmark; compare
them with the plain model's on the same sequences with ``benchmarks/video_smoothing_sweep.py --raw OUT/raw``.

    python benchmarks/video_prior_reuse.py --data data/synth_video_tune --num 16 --out outputs/video_tune_prior
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sequences of apdepth synth --video")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num", type=int, default=None, help="first N sequences (default all)")
    p.add_argument("--strength", type=float, default=0.8, help="filter strength on the prior (default 0.8)")
    p.add_argument("--depth-tolerance", type=float, default=0.4, help="in the prior's [-1, 1] units")
    p.add_argument("--processing-res", type=int, default=160)
    p.add_argument("--checkpoint", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    import cv2
    import numpy as np
    import torch

    from apdepth.evaluation.video_eval import evaluate_video_sequences, summary_markdown
    from apdepth.runtime import load_pipeline
    from apdepth.temporal import FlowTemporalFilter

    args = parse_args(argv)
    pipe = load_pipeline(args.checkpoint, device="cpu", quiet=True)
    plain_condition = pipe.prior_condition
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    state: dict = {}

    def smoothed_condition(rgb, return_disparity=False):
        cond, disp = plain_condition(rgb, return_disparity=True)  # (B, h, w) each
        out = []
        for b in range(rgb.shape[0]):  # frames arrive in clip order
            img = (rgb[b].permute(1, 2, 0).float().cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            c = cond[b].float().cpu().numpy()
            prev = state.get("gray")
            flows = () if prev is None else (dis.calc(gray, prev, None), dis.calc(prev, gray, None))
            out.append(torch.from_numpy(state["filter"].step(c, *flows)))
            state["gray"] = gray
        new = torch.stack(out).to(device=cond.device, dtype=cond.dtype)
        return (new, disp) if return_disparity else new

    pipe.prior_condition = smoothed_condition

    def predictor(frames, **kw):  # one call per sequence: start a fresh history
        state.clear()
        state["filter"] = FlowTemporalFilter(strength=args.strength, depth_tolerance=args.depth_tolerance, affine=True)
        return pipe(frames, **kw)

    summary = evaluate_video_sequences(
        predictor,
        args.data,
        args.out,
        max_sequences=args.num,
        processing_resolution=args.processing_res,
        batch_size=8,
        model_id=f"{args.checkpoint or 'bundled'}+prior-filter-{args.strength}",
    )
    print(summary_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
