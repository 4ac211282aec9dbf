"""Training losses pinned to hand-computed values, plus the LR schedule and stage lookup."""

from __future__ import annotations

import math

import pytest
import torch

from apdepth.training.losses import (
    frequency_weights,
    latent_frequency_loss,
    latent_valid_mask,
    masked_mse,
    scale_shift_invariant_l1,
)
from apdepth.training.schedule import lr_lambda, stage_index


def test_latent_mask_is_a_min_pool():
    valid = torch.ones(1, 16, 16, dtype=torch.bool)
    valid[0, 3, 12] = False  # one hole in the top-right 8x8 cell
    mask = latent_valid_mask(valid, 8)
    assert mask.shape == (1, 1, 2, 2)
    assert mask[0, 0].tolist() == [[True, False], [True, True]]
    with pytest.raises(ValueError, match="multiple of 8"):
        latent_valid_mask(torch.ones(1, 12, 16, dtype=torch.bool), 8)
    # A VAE that downsamples by 4: 4x4 cells, the hole now only voids cell (0, 3).
    mask4 = latent_valid_mask(valid, 4)
    assert mask4.shape == (1, 1, 4, 4)
    assert (~mask4[0, 0]).nonzero().tolist() == [[0, 3]]


def test_masked_mse_averages_over_valid_cells_and_channels():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    target[0, :, 0, 0] = 2.0  # error 4 in the one valid cell, both channels
    target[0, :, 1, 1] = 100.0  # masked out
    mask = torch.tensor([[[[True, False], [False, False]]]])
    assert masked_mse(pred, target, mask).item() == pytest.approx(4.0)
    # No valid cell: zero, and still differentiable.
    p = torch.ones(1, 1, 2, 2, requires_grad=True)
    loss = masked_mse(p, torch.zeros_like(p), torch.zeros(1, 1, 2, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and p.grad is not None


def test_frequency_weights_on_2x2_grid():
    # fftshift puts DC at (1, 1); r = [[sqrt2, 1], [1, 0]], r_max = sqrt2.
    w = frequency_weights(2, 2, alpha=1.0, dtype=torch.float64)
    s = 1 / math.sqrt(2)
    assert torch.allclose(w, torch.tensor([[2.0, 1 + s], [1 + s, 1.0]], dtype=torch.float64))


def test_frequency_loss_dc_only_input():
    # Constant 1 on 4x4: the only non-zero amplitude is DC = 16, at the centre (W = 1); target 0.
    # L1: 16 * 1 / 16 entries = 1.  L2: 256 / 16 = 16.
    pred = torch.ones(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    assert latent_frequency_loss(pred, target).item() == pytest.approx(1.0)
    assert latent_frequency_loss(pred, target, norm="l2").item() == pytest.approx(16.0)
    # alpha does not matter at the centre.
    assert latent_frequency_loss(pred, target, alpha=5.0).item() == pytest.approx(1.0)


def test_frequency_loss_single_frequency_input():
    # cos(2*pi*j/4) along w on a 4x4 grid: amplitude 8 at horizontal frequencies +-1, which fftshift puts
    # at (2, 1) and (2, 3): r = 1, r_max = sqrt(8), W = 1 + 1/sqrt(8).
    j = torch.arange(4, dtype=torch.float64)
    pred = torch.cos(2 * math.pi * j / 4).expand(4, 4)[None, None].clone()
    target = torch.zeros_like(pred)
    w = 1 + 1 / math.sqrt(8)
    assert latent_frequency_loss(pred, target).item() == pytest.approx(2 * 8 * w / 16)
    assert latent_frequency_loss(pred, target, norm="l2").item() == pytest.approx(2 * 64 * w / 16)
    assert latent_frequency_loss(pred, target, alpha=0.0).item() == pytest.approx(1.0)
    # Amplitude only: a phase shift (a translation) of the same pattern costs nothing.
    shifted = torch.roll(pred, shifts=1, dims=-1)
    assert latent_frequency_loss(shifted, pred).item() == pytest.approx(0.0, abs=1e-12)


def test_frequency_loss_masking():
    pred = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    target = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    # Everything masked: both latents become 0.
    assert latent_frequency_loss(pred, target, torch.zeros(1, 1, 2, 2, dtype=torch.bool)).item() == 0.0
    # One valid cell: pred becomes a delta whose amplitude is 1 at every frequency, so the loss is the mean
    # weight on the 2x2 grid: (2 + 2 * (1 + 1/sqrt2) + 1) / 4 = 5/4 + 1 / (2 * sqrt2).
    mask = torch.tensor([[[[False, True], [False, False]]]])
    assert latent_frequency_loss(pred, target, mask).item() == pytest.approx(1.25 + 1 / (2 * math.sqrt(2)))
    # Differences outside the mask are ignored.
    other = pred.clone()
    other[0, 0, 1, 1] = 50.0
    assert latent_frequency_loss(other, pred, mask).item() == pytest.approx(0.0)


def test_frequency_loss_is_per_channel_and_sample():
    pred = torch.ones(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    assert latent_frequency_loss(pred, target).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="norm"):
        latent_frequency_loss(pred, target, norm="l3")


def test_frequency_loss_gradcheck():
    torch.manual_seed(0)
    pred = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    mask = torch.ones(1, 1, 3, 4, dtype=torch.bool)
    mask[0, 0, 0, 0] = False
    for norm in ("l1", "l2"):
        assert torch.autograd.gradcheck(lambda p: latent_frequency_loss(p, target, mask, norm=norm), (pred,))


def test_ssi_loss_is_scale_and_shift_invariant():
    torch.manual_seed(0)
    target = torch.rand(2, 8, 8) + 0.5
    mask = torch.ones(2, 8, 8, dtype=torch.bool)
    assert scale_shift_invariant_l1(3.0 * target + 7.0, target, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert scale_shift_invariant_l1(torch.rand(2, 8, 8), target, mask).item() > 0.1


def test_lr_schedule_warmup_and_decay():
    f = lr_lambda(warmup_steps=10, decay_steps=110, final_ratio=0.01)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1)  # half-way through the decay: sqrt(0.01)
    assert f(110) == pytest.approx(0.01)
    assert f(500) == pytest.approx(0.01)


def test_stage_lookup():
    class S:
        def __init__(self, until):
            self.until = until

    stages = [S(24000), S(25000)]
    assert [stage_index(stages, s) for s in (0, 23999, 24000, 24999, 30000)] == [0, 0, 1, 1, 1]
