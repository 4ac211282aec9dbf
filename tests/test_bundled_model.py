"""The bundled default model: loads with no checkpoint, gives sane depth that follows the ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from apdepth.image_io import read_image
from apdepth.pipeline import BUNDLED_MODEL_DIR, ApDepthPipeline

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


@pytest.fixture(scope="module")
def bundled():
    return ApDepthPipeline.from_pretrained()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def test_bundled_model_is_shipped_as_safetensors_within_budget():
    files = [p for p in BUNDLED_MODEL_DIR.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert (BUNDLED_MODEL_DIR / "model_index.json").is_file()
    assert {p.parent.name for p in weights} == {"unet", "vae", "prior", "text_embedding"}
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20


def test_bundled_model_depth_follows_ground_truth(bundled):
    from apdepth.data.synthetic import render_scene

    # synthetic_room_a.png is scene 800001 (see assets/examples/README.md): its exact depth is known.
    gt = render_scene(800001, 480, 640, "indoor")
    rgb = read_image(EXAMPLES / "synthetic_room_a.png")
    np.testing.assert_allclose(rgb, gt["rgb"] / 255.0, atol=1 / 255)  # the example is that scene
    depth = bundled(rgb).depth[0]
    assert depth.shape == (480, 640) and 0.0 <= depth.min() and depth.max() <= 1.0
    assert depth.std() > 0.05  # not constant
    valid = gt["valid"]
    rho = _spearman(depth[valid][::7], gt["depth"][valid][::7])
    assert rho > 0.6, f"rank correlation with ground truth only {rho:.2f}"


def test_bundled_model_on_a_photograph(bundled):
    depth = bundled(read_image(EXAMPLES / "photo_coffee.jpg")).depth[0]
    assert depth.shape == (400, 600) and np.isfinite(depth).all() and depth.std() > 0.02


def test_bf16_matches_fp32_on_trained_weights(bundled):
    rgb = read_image(EXAMPLES / "synthetic_street_a.png")
    ref = bundled(rgb, processing_resolution=128).depth[0]
    half = ApDepthPipeline.from_pretrained(torch_dtype=torch.bfloat16)
    out = half(rgb, processing_resolution=128).depth[0]
    rel = np.abs(out - ref).mean() / np.abs(ref).mean()
    assert rel < 1e-2, f"bf16 relative error {rel:.4f}"


def test_attention_runs_on_sdpa(bundled):
    from diffusers.models.attention_processor import AttnProcessor2_0

    # flash / memory-efficient kernels on CUDA: the U-Net and the prior's ViT backbone both use SDPA
    assert {type(p) for p in bundled.unet.attn_processors.values()} == {AttnProcessor2_0}
    assert bundled.prior.backbone.config._attn_implementation == "sdpa"
