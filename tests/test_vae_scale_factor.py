"""A VAE that downsamples by 4 (three blocks) instead of Stable Diffusion's 8 works end to end: inference pads
to multiples of 4, training masks latents in 4x4 cells, evaluation runs through the same pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_rgb


def _factor4_preset():
    from apdepth.models import _vae, get_preset

    preset = get_preset("tiny")
    preset.vae = _vae((8, 8, 16), layers=1, groups=4, sample_size=64)
    return preset


@pytest.fixture(scope="module")
def pipe4():
    from apdepth.models import build_pipeline

    return build_pipeline(_factor4_preset(), seed=0)


def test_scale_factor_follows_the_vae_config(pipe4, tiny_pipeline):
    assert tiny_pipeline.vae_scale_factor == 8
    assert pipe4.vae_scale_factor == 4


def test_factor4_inference_pads_to_multiples_of_4(pipe4):
    seen = []
    handle = pipe4.unet.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    try:
        # 30x42 at processing resolution 42: padded to 32x44, i.e. latents of 8x11 (a factor-8 pad would give 32x48).
        out = pipe4(random_rgb(30, 42), processing_resolution=42)
    finally:
        handle.remove()
    assert seen == [(1, 8, 8, 11)]
    assert out.depth.shape == (1, 30, 42)
    assert np.isfinite(out.depth).all() and out.depth.min() >= 0 and out.depth.max() <= 1
    # Batched inputs of one size and the ensemble go through the same padding.
    two = pipe4([random_rgb(30, 42, seed=1), random_rgb(30, 42, seed=2)], processing_resolution=42, batch_size=2)
    assert two.depth.shape == (2, 30, 42)
    ens = pipe4(random_rgb(30, 42), processing_resolution=42, ensemble_size=3)
    assert ens.depth.shape == (1, 30, 42) and np.isfinite(ens.depth).all()


def test_factor4_pipeline_round_trips_and_evaluates(pipe4, tmp_path):
    from apdepth.data.synthetic import SyntheticStream
    from apdepth.evaluation.evaluate import evaluate
    from apdepth.pipeline import ApDepthPipeline

    pipe4.save_pretrained(tmp_path / "p4")
    vae_cfg = json.loads((tmp_path / "p4" / "vae" / "config.json").read_text())
    assert len(vae_cfg["block_out_channels"]) == 3
    loaded = ApDepthPipeline.from_pretrained(tmp_path / "p4")
    assert loaded.vae_scale_factor == 4
    image = random_rgb(36, 28, seed=3)
    a = pipe4(image, processing_resolution=36).depth
    b = loaded(image, processing_resolution=36).depth
    np.testing.assert_allclose(a, b, atol=1e-4)

    dataset = list(SyntheticStream(36, 44, scene="indoor", seed=5, length=2))
    result = evaluate(loaded, dataset, processing_resolution=44, progress=False)
    assert len(result["per_sample"]) == 2
    assert 0 < result["metrics"]["abs_rel"] < 10 and np.isfinite(result["metrics"]["delta1"])


def test_factor4_training_step_masks_4x4_latent_cells(tmp_path, capsys):
    from apdepth.cli import main
    from apdepth.models import build_vae

    torch.manual_seed(0)
    build_vae(_factor4_preset().vae).save_pretrained(tmp_path / "vae4")
    out = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(Path(__file__).resolve().parents[1] / "configs" / "train" / "tiny_synthetic.yaml"),
        "--output",
        str(out),
        f"model.vae={tmp_path / 'vae4'}",
        # 36 is a multiple of 4 but not of 8: accepted because this VAE downsamples by 4
        "data.datasets.0.size=[36,36]",
        "optim.micro_batch=2",
        "optim.max_steps=1",
        "optim.warmup_steps=0",
        "stages=[{until: 1, losses: {mse: 1.0, freq: 0.5, pixel_l1: 0.1}}]",
        "validation.every=0",
        "checkpointing.every=0",
        "logging.every=1",
    ]
    from accelerate.state import AcceleratorState, GradientState

    try:
        assert main(args) == 0
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line]
        steps = [r for r in log if "loss" in r]
        assert len(steps) == 1 and np.isfinite(steps[0]["loss"]) and steps[0]["loss"] > 0
        exported = json.loads((out / "pipeline" / "vae" / "config.json").read_text())
        assert len(exported["block_out_channels"]) == 3
        # A size the VAE cannot encode is refused with the key and the factor named.
        bad = [a if not a.startswith("data.datasets.0.size") else "data.datasets.0.size=[34,34]" for a in args]
        bad[bad.index("--output") + 1] = str(tmp_path / "bad")
        capsys.readouterr()
        assert main(bad) == 2
        assert "data.datasets.0.size must be multiples of 4" in capsys.readouterr().err
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
