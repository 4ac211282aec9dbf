"""Condition the output range of the prior inside a pipeline folder, in place (see
apdepth.prior.condition_prior_output_range; the trainer's prior export does the same).

    python scripts/condition_prior.py src/apdepth/weights/default

Exact in fp32 under ``quantile`` prior normalisation; keeps the prior's signal in bf16/fp16.
"""

from __future__ import annotations

import sys

from apdepth.pipeline import ApDepthPipeline
from apdepth.training.tasks import condition_prior_for_export


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    pipe = ApDepthPipeline.from_pretrained(argv[0])
    if pipe.config.prior_normalization != "quantile":
        print("error: only pipelines with quantile prior normalisation are invariant to this map", file=sys.stderr)
        return 2
    scale, offset = condition_prior_for_export(pipe.prior, pipe.config.prior_input_size)
    pipe.save_pretrained(argv[0])
    print(f"prior output mapped by y -> {scale:.6g} * y + {offset:.6g}; saved {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
