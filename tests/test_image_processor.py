"""Input handling (apdepth.image_processor) and its faults: extreme aspect ratios stay bounded at every stage,
same-aspect images of different sizes batch together, PIL images keep their EXIF orientation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from apdepth.image_processor import ApDepthImageProcessor, processing_size, to_tensor
from apdepth.prior import MAX_PRIOR_ASPECT, prior_input_size
from conftest import random_rgb


def test_processing_size_bounds_both_sides():
    assert processing_size(768, 1024, 768) == (576, 768)
    assert processing_size(8, 1024, 768) == (6, 768)
    assert processing_size(1024, 8, 768) == (768, 6)
    assert processing_size(37, 51, 0) == (37, 51)
    with pytest.raises(ValueError, match="processing_resolution must be >= 0"):
        processing_size(10, 10, -1)


def test_prior_input_is_bounded_for_extreme_aspect_ratios():
    # A usual photo keeps the shorter side at the prior's input size...
    assert prior_input_size(576, 768, "quantile", 518) == (518, 686)
    # ...an 8x1024 strip (6x768 at processing size) no longer becomes 518x66304 px.
    h, w = prior_input_size(6, 768, "quantile", 518)
    assert (h, w) == (14, MAX_PRIOR_ASPECT * 518 // 14 * 14)
    assert max(prior_input_size(768, 6, "quantile", 518)) <= MAX_PRIOR_ASPECT * 518
    assert prior_input_size(6, 768, "raw", 518) == (14, 770)


def test_extreme_aspect_ratio_runs_with_bounded_stages(tiny_pipeline):
    seen = {}
    hooks = [
        tiny_pipeline.prior.register_forward_pre_hook(
            lambda m, a, k: seen.__setitem__("prior", tuple(k["pixel_values"].shape)), with_kwargs=True
        ),
        tiny_pipeline.unet.register_forward_pre_hook(lambda m, a: seen.__setitem__("unet", tuple(a[0].shape))),
    ]
    try:
        out = tiny_pipeline(random_rgb(8, 1024), processing_resolution=64)
    finally:
        for h in hooks:
            h.remove()
    p = tiny_pipeline.config.prior_input_size
    assert seen["prior"][-1] <= MAX_PRIOR_ASPECT * p and seen["prior"][-2] <= p  # was 56x7168 px before the bound
    assert seen["unet"] == (1, 8, 1, 8)  # 1x64 px at processing size, padded to 8x64: one latent row
    assert out.depth.shape == (1, 8, 1024) and np.isfinite(out.depth).all()


def test_same_aspect_different_sizes_share_a_batch(tiny_pipeline):
    big, small = random_rgb(300, 400, seed=1), random_rgb(150, 200, seed=2)
    calls = []
    hook = tiny_pipeline.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        both = tiny_pipeline([big, small], batch_size=2).depth  # was: "stack expects each tensor to be equal size"
    finally:
        hook.remove()
    assert calls == [2]  # one U-Net call for both
    assert [d.shape for d in both] == [(300, 400), (150, 200)]
    np.testing.assert_allclose(both[0], tiny_pipeline(big).depth[0], atol=1e-4)
    np.testing.assert_allclose(both[1], tiny_pipeline(small).depth[0], atol=1e-4)


def test_pil_exif_orientation_is_applied(tiny_pipeline):
    upright = random_rgb(40, 64, seed=4)  # what the camera saw: 40 rows, 64 columns
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))  # stored sideways (turned left), 64x40
    exif = stored.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored = Image.open(io.BytesIO(_save(stored, exif)))
    t = to_tensor(stored)
    assert tuple(t.shape) == (3, 40, 64)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), upright / 255.0, atol=1e-6)
    a = tiny_pipeline(stored).depth[0]
    b = tiny_pipeline(upright).depth[0]
    assert a.shape == (40, 64)
    np.testing.assert_allclose(a, b, atol=1e-6)


def _save(im: Image.Image, exif) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", exif=exif)
    return buf.getvalue()


def test_preprocess_forms_and_errors():
    proc = ApDepthImageProcessor(8)
    u8 = random_rgb(16, 24)
    assert len(proc.preprocess(u8)) == 1 and len(proc.preprocess([u8, u8])) == 2
    assert len(proc.preprocess(np.stack([u8, u8]))) == 2
    assert len(proc.preprocess(torch.rand(3, 3, 16, 24))) == 3
    with pytest.raises(ValueError, match="no images given"):
        proc.preprocess([])
    with pytest.raises(ValueError, match="image 1: too small"):
        proc.preprocess([u8, u8[:4]])
    padded, pads = ApDepthImageProcessor(4).pad(torch.rand(2, 3, 30, 41))
    assert padded.shape == (2, 3, 32, 44) and pads == (2, 3)
    assert torch.equal(padded[..., 30:, :41], padded[..., 29:30, :41].expand(-1, -1, 2, -1))  # replicated border


def test_check_inputs_names_the_argument(tiny_pipeline):
    assert tiny_pipeline.check_inputs(None, 1, "np", False, 1, False) == tiny_pipeline.config.processing_resolution
    for kwargs, msg in [
        (dict(output_type="pil"), "output_type"),
        (dict(batch_size=0), "batch_size"),
        (dict(processing_resolution=-1), "processing_resolution"),
        (dict(ensemble_size=9), "ensemble_size"),
        (dict(output_uncertainty=True), "output_uncertainty"),
    ]:
        with pytest.raises(ValueError, match=msg):
            tiny_pipeline(random_rgb(16, 16), **kwargs)


def test_prior_condition_is_what_the_unet_sees(tiny_pipeline):
    rgb = torch.rand(2, 3, 32, 48)
    cond = tiny_pipeline.prior_condition(rgb)
    assert cond.shape == (2, 32, 48) and cond.min() >= -1 and cond.max() <= 1  # quantile normalisation
    cond2, disp = tiny_pipeline.prior_condition(rgb, return_disparity=True)
    torch.testing.assert_close(cond, cond2)
    assert disp.shape == (2, 32, 48)
