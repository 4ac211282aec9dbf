"""Learning-rate schedule (linear warm-up, then exponential decay) and the stage lookup by step."""

from __future__ import annotations

from typing import Sequence


def lr_lambda(warmup_steps: int, decay_steps: int, final_ratio: float = 0.01):
    """Multiplier of the base learning rate as a function of the optimiser step (0-based).

    Steps 0 .. warmup-1 ramp linearly up to 1 ((s + 1) / warmup, so the first step already moves);
    from ``warmup`` the multiplier decays exponentially and reaches ``final_ratio`` at ``decay_steps``,
    staying there afterwards.
    """
    if not 0 < final_ratio <= 1:
        raise ValueError(f"final_ratio must be in (0, 1], got {final_ratio}")
    warmup_steps = max(0, int(warmup_steps))
    decay_steps = int(decay_steps)

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = decay_steps - warmup_steps
        if span <= 0:
            return 1.0 if step < decay_steps else final_ratio
        progress = min(1.0, (step - warmup_steps) / span)
        return final_ratio**progress

    return fn


def stage_index(stages: Sequence, step: int) -> int:
    """Index of the stage active at ``step`` (0-based optimiser step): the first with ``step < until``;
    past the last boundary the last stage stays active."""
    for i, stage in enumerate(stages):
        if step < stage.until:
            return i
    return len(stages) - 1
