import math

import numpy as np
import pytest

from apdepth.evaluation.alignment import align, fit_scale_shift
from apdepth.evaluation.boundary import boundary_f1, boundary_recall, thresholds_and_weights
from apdepth.evaluation.metrics import METRIC_NAMES, compute_metrics, delta, silog


def test_metrics_against_hand_computed_values():
    # three valid pixels; the fourth is garbage and must be ignored
    pred = np.array([[1.5, 2.0], [4.0, 1000.0]])
    gt = np.array([[2.0, 2.0], [2.0, 0.0]])
    valid = np.array([[True, True], [True, False]])
    m = compute_metrics(pred, gt, valid)
    assert set(m) == set(METRIC_NAMES)
    assert m["abs_rel"] == pytest.approx((0.25 + 0 + 1.0) / 3)
    assert m["sq_rel"] == pytest.approx((0.125 + 0 + 2.0) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 4.0) / 3))
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(0.75) ** 2 + math.log(2) ** 2) / 3))
    assert m["log10"] == pytest.approx((abs(math.log10(0.75)) + math.log10(2)) / 3)
    # ratios 4/3, 1, 2 against 1.25, 1.5625, 1.953125
    assert (m["delta1"], m["delta2"], m["delta3"]) == pytest.approx((1 / 3, 2 / 3, 2 / 3))
    assert m["i_rmse"] == pytest.approx(math.sqrt(((1 / 1.5 - 0.5) ** 2 + (0.25 - 0.5) ** 2) / 3))
    d = [math.log(0.75), 0.0, math.log(2)]
    mean_d = sum(d) / 3
    assert m["silog"] == pytest.approx(100 * math.sqrt(sum(x * x for x in d) / 3 - mean_d**2))
    assert silog(pred, gt, valid) == pytest.approx(m["silog"])
    assert delta(pred, gt, valid, 2) == pytest.approx(2 / 3)


def test_silog_ignores_global_scale_and_perfect_is_zero():
    gt = np.array([[1.0, 2.0, 5.0]])
    v = np.ones_like(gt, bool)
    assert silog(3 * gt, gt, v) == pytest.approx(0.0, abs=1e-9)
    m = compute_metrics(gt, gt, v)
    assert m["abs_rel"] == 0 and m["delta1"] == 1 and m["rmse"] == 0


def test_metric_input_errors():
    with pytest.raises(ValueError, match="no valid pixels"):
        compute_metrics(np.ones((2, 2)), np.ones((2, 2)), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="same shape"):
        compute_metrics(np.ones((2, 2)), np.ones((2, 3)), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="positive"):
        compute_metrics(np.zeros((2, 2)), np.ones((2, 2)), np.ones((2, 2), bool))


def test_depth_alignment_recovers_scale_and_shift():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 1, (30, 40))
    gt = 3.0 * pred + 0.5
    valid = rng.uniform(size=pred.shape) > 0.3
    gt_corrupt = np.where(valid, gt, 1e6)  # outside the mask: must not influence the fit
    aligned, s, b = align(pred, gt_corrupt, valid, alignment="depth")
    assert (s, b) == pytest.approx((3.0, 0.5), abs=1e-9)
    np.testing.assert_allclose(aligned, gt, rtol=1e-9)
    # same answer when fitted on a downsampled copy (the relation is exact)
    assert fit_scale_shift(pred, gt, valid, max_resolution=10) == pytest.approx((3.0, 0.5), abs=1e-9)


def test_disparity_alignment_recovers_scale_and_shift():
    rng = np.random.default_rng(1)
    pred = rng.uniform(0.05, 1, (20, 20))
    gt = 1.0 / (2.0 * pred + 0.1)
    valid = np.ones_like(pred, bool)
    aligned, s, b = align(pred, gt, valid, alignment="disparity")
    assert (s, b) == pytest.approx((2.0, 0.1), abs=1e-9)
    np.testing.assert_allclose(aligned, gt, rtol=1e-9)


def test_alignment_clips_to_valid_range():
    pred = np.array([[0.0, 0.5, 1.0]])
    gt = np.array([[1.0, 6.0, 11.0]])
    aligned, _, _ = align(pred, gt, np.array([[True, True, False]]), min_depth=2.0, max_depth=8.0)
    np.testing.assert_allclose(aligned, [[2.0, 6.0, 8.0]])  # 1 -> 2, 11 -> 8
    with pytest.raises(ValueError, match="alignment must be one of"):
        align(pred, gt, np.ones_like(pred, bool), alignment="log")
    with pytest.raises(ValueError, match="at least 2 valid"):
        align(pred, gt, np.array([[True, False, False]]))


def _scene():
    gt = np.full((40, 40), 10.0)
    gt[10:30, 12:28] = 2.0  # a near box in front of a far wall
    gt[5:8, 30:38] = 5.0
    return gt


def test_boundary_f1_perfect_scaled_and_blurred():
    gt = _scene()
    assert boundary_f1(gt, gt) == pytest.approx(1.0)
    assert boundary_f1(3.7 * gt, gt) == pytest.approx(1.0)  # scale-invariant
    # blur: average over a 5x5 window smears each edge over several pixels
    pad = np.pad(gt, 2, mode="edge")
    blurred = sum(pad[i : i + 40, j : j + 40] for i in range(5) for j in range(5)) / 25
    f_blur = boundary_f1(blurred, gt)
    assert 0.0 < f_blur < 0.8
    assert boundary_f1(np.full_like(gt, 4.0), gt) == 0.0  # no edges predicted


def test_boundary_f1_wrong_occlusion_order_scores_zero():
    gt = _scene()
    inverted = 1.0 / gt  # near and far swapped: same edge positions, opposite foreground
    assert boundary_f1(inverted, gt) == 0.0


def test_boundary_f1_valid_mask_drops_pairs():
    gt = _scene()
    pred = gt.copy()
    pred[:, 35:] = 0.5  # spurious edge inside a region marked invalid
    valid = np.ones_like(gt, bool)
    valid[:, 34:] = False
    assert boundary_f1(pred, gt) < 1.0
    assert boundary_f1(pred, gt, valid) == pytest.approx(1.0)


def test_thresholds_and_weights():
    ts, ws = thresholds_and_weights()
    np.testing.assert_allclose(ts, np.linspace(1.05, 1.25, 10))
    assert ws.sum() == pytest.approx(1.0) and ws[-1] / ws[0] == pytest.approx(1.25 / 1.05)


def test_boundary_recall_against_mask():
    mask = np.zeros((30, 30), bool)
    mask[8:20, 5:25] = True
    depth = np.where(mask, 1.0, 3.0)
    assert boundary_recall(depth, mask) == pytest.approx(1.0)
    assert boundary_recall(np.full((30, 30), 2.0), mask) == 0.0
    # a soft ramp across the left border: thinning keeps one pixel per run, at the largest jump
    ramp = depth.copy()
    ramp[8:20, 3] = 1.2
    ramp[8:20, 4] = 1.1
    r = boundary_recall(ramp, mask)
    assert 0.0 < r < 1.0
    assert boundary_recall(depth, mask.astype(np.float32) * 0.9) == pytest.approx(1.0)  # matte input
