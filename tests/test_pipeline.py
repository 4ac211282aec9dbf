"""ApDepthPipeline on tiny random components: shapes, ranges, determinism, batching, loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from apdepth.hub import CheckpointNotFoundError
from apdepth.models import build_pipeline, widen_conv_in
from apdepth.pipeline import ApDepthOutput, ApDepthPipeline
from conftest import random_rgb, write_tiny_clip


def test_output_shape_range_and_types(tiny_pipeline):
    img = random_rgb(37, 51)
    out = tiny_pipeline(img, output_prior=True)
    assert isinstance(out, ApDepthOutput)
    assert out.depth.shape == (1, 37, 51) and out.depth.dtype == np.float32
    assert out.prior_depth.shape == (1, 37, 51)
    assert 0.0 <= out.depth.min() and out.depth.max() <= 1.0
    assert out.depth.std() > 0  # not a constant map
    pt = tiny_pipeline(img, output_type="pt")
    assert isinstance(pt.depth, torch.Tensor) and pt.depth.shape == (1, 37, 51)
    np.testing.assert_allclose(pt.depth.numpy(), out.depth, atol=1e-6)


def test_processing_size_and_padding_for_odd_sizes(tiny_pipeline):
    # 37x51 at processing resolution 45 -> 33x45 (longer side 45, aspect kept), padded to 40x48 internally.
    out = tiny_pipeline(random_rgb(37, 51), processing_resolution=45, match_input_resolution=False)
    assert out.depth.shape == (1, 33, 45)
    native = tiny_pipeline(random_rgb(37, 51), processing_resolution=0, match_input_resolution=False)
    assert native.depth.shape == (1, 37, 51)


def test_deterministic(tiny_pipeline):
    img = random_rgb(40, 56, seed=3)
    a = tiny_pipeline(img).depth
    b = tiny_pipeline(img).depth
    np.testing.assert_array_equal(a, b)


def test_batch_equals_single_and_mixed_sizes(tiny_pipeline):
    imgs = [random_rgb(40, 56, seed=s) for s in range(3)]
    singles = [tiny_pipeline(im).depth[0] for im in imgs]
    batched = tiny_pipeline(imgs, batch_size=3).depth
    assert batched.shape == (3, 40, 56)
    for s, b in zip(singles, batched):
        np.testing.assert_allclose(s, b, atol=1e-4)
    mixed = tiny_pipeline([imgs[0], random_rgb(30, 30), imgs[1]], batch_size=2).depth
    assert isinstance(mixed, list) and [m.shape for m in mixed] == [(40, 56), (30, 30), (40, 56)]
    np.testing.assert_allclose(mixed[2], singles[1], atol=1e-4)


def test_input_types_agree(tiny_pipeline):
    u8 = random_rgb(32, 48)
    ref = tiny_pipeline(u8).depth[0]
    as_float = tiny_pipeline(u8.astype(np.float32) / 255).depth[0]
    as_pil = tiny_pipeline(Image.fromarray(u8)).depth[0]
    as_tensor = tiny_pipeline(torch.from_numpy(u8).permute(2, 0, 1)).depth[0]
    as_batch = tiny_pipeline(torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255).depth[0]
    grey = tiny_pipeline(Image.fromarray(u8).convert("L")).depth[0]
    for other in (as_float, as_pil, as_tensor, as_batch):
        np.testing.assert_allclose(other, ref, atol=1e-4)
    assert grey.shape == ref.shape


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 4, 3), np.uint8), "too small"),
        (np.full((16, 16, 3), 2.0, np.float32), "must be in \\[0, 1\\]"),
        (np.zeros((16, 16, 5), np.float32), "numpy images must be"),
        ("not an image", "unsupported type"),
        ([], "no images"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny_pipeline, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(bad)


def test_bad_arguments(tiny_pipeline):
    img = random_rgb(16, 16)
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipeline(img, output_type="pil")
    with pytest.raises(ValueError, match="processing_resolution"):
        tiny_pipeline(img, processing_resolution=-1)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_pipeline(img, batch_size=0)


def test_save_load_round_trip(tiny_pipeline, tiny_checkpoint):
    loaded = ApDepthPipeline.from_pretrained(tiny_checkpoint)
    assert loaded.config.processing_resolution == tiny_pipeline.config.processing_resolution
    assert loaded.config.prior_normalization == "quantile"
    for a, b in zip(tiny_pipeline.unet.state_dict().values(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b)
    torch.testing.assert_close(loaded.text_embedding.embedding, tiny_pipeline.text_embedding.embedding)
    img = random_rgb(40, 40, seed=7)
    np.testing.assert_allclose(loaded(img).depth, tiny_pipeline(img).depth, atol=1e-4)
    # Weights are safetensors only: nothing pickled was written.
    assert not list(tiny_checkpoint.rglob("*.bin")) and list(tiny_checkpoint.rglob("*.safetensors"))


def test_overrides_and_unknown_setting(tiny_checkpoint):
    p = ApDepthPipeline.from_pretrained(tiny_checkpoint, processing_resolution=32)
    assert p.config.processing_resolution == 32
    assert p(random_rgb(48, 64), match_input_resolution=False).depth.shape == (1, 24, 32)
    with pytest.raises(ValueError, match="unknown pipeline setting 'procesing_resolution'"):
        ApDepthPipeline.from_pretrained(tiny_checkpoint, procesing_resolution=32)


def test_dtype_loading(tiny_checkpoint):
    p = ApDepthPipeline.from_pretrained(tiny_checkpoint, torch_dtype=torch.bfloat16)
    assert p.unet.dtype == torch.bfloat16 and p.vae.dtype == torch.bfloat16 and p.prior.dtype == torch.bfloat16
    out = p(random_rgb(32, 32)).depth
    assert out.dtype == np.float32 and np.isfinite(out).all()


def _write_published_layout(root, pipe, with_clip=True):
    """Write `pipe`'s weights exactly as the published ApDepth / Marigold checkpoints are laid out."""
    root.mkdir(parents=True)
    pipe.unet.save_pretrained(root / "unet")
    pipe.vae.save_pretrained(root / "vae")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDIMScheduler", "num_train_timesteps": 1000})
    )
    if with_clip:
        write_tiny_clip(root)
    (root / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "MarigoldDepthPipeline",
                "_diffusers_version": "0.25.0",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "prediction_type": "depth",
                "default_processing_resolution": 48,
            }
        )
    )


def test_published_layout_loads_with_separate_prior(tmp_path, tiny_pipeline):
    root = tmp_path / "published"
    _write_published_layout(root, tiny_pipeline)
    prior_dir = tmp_path / "prior"
    tiny_pipeline.prior.save_pretrained(prior_dir)

    with pytest.raises(CheckpointNotFoundError, match="does not include its depth prior.*Depth-Anything-V2-Small-hf"):
        ApDepthPipeline.from_pretrained(root)

    p = ApDepthPipeline.from_pretrained(root, prior=str(prior_dir))
    assert p.config.prior_normalization == "raw" and p.config.timestep == 1
    assert p.config.processing_resolution == 48
    assert not hasattr(p, "text_encoder")  # only the cached embedding is kept
    # The empty-prompt embedding matches what the text encoder produces.
    from transformers import CLIPTextModel, CLIPTokenizer

    enc = CLIPTextModel.from_pretrained(root / "text_encoder")
    tok = CLIPTokenizer.from_pretrained(root / "tokenizer")
    ids = tok("", padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    torch.testing.assert_close(p.text_embedding.embedding, enc(ids)[0])
    out = p(random_rgb(40, 40))
    assert out.depth.shape == (1, 40, 40) and np.isfinite(out.depth).all()
    # Saved again, it is a native ApDepth folder that reloads without the prior argument.
    p.save_pretrained(tmp_path / "converted")
    q = ApDepthPipeline.from_pretrained(tmp_path / "converted")
    assert q.config.prior_normalization == "raw"
    np.testing.assert_allclose(q(random_rgb(40, 40)).depth, out.depth, atol=1e-4)


def test_missing_checkpoint_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError, match="`hf download someone/not-a-real-model --local-dir DIR`"):
        ApDepthPipeline.from_pretrained("someone/not-a-real-model", local_files_only=True)
    with pytest.raises(CheckpointNotFoundError, match="no model_index.json"):
        ApDepthPipeline.from_pretrained(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="no such folder"):
        ApDepthPipeline.from_pretrained(str(tmp_path / "missing" / "deep" / "path"))


def test_pickle_refused_by_default(tmp_path, tiny_pipeline):
    root = tmp_path / "pickled"
    tiny_pipeline.save_pretrained(root, safe_serialization=False)
    with pytest.raises(CheckpointNotFoundError, match="allow_pickle"):
        ApDepthPipeline.from_pretrained(root)
    p = ApDepthPipeline.from_pretrained(root, allow_pickle=True)
    assert p.unet.config.in_channels == 8


def test_prior_free_control_model():
    p = build_pipeline("tiny", use_prior=False)
    assert p.prior is None and p.unet.config.in_channels == 4
    assert p(random_rgb(24, 24)).depth.shape == (1, 24, 24)
    with pytest.raises(ValueError, match="no prior"):
        p(random_rgb(24, 24), output_prior=True)


def test_unet_channel_mismatch_is_a_clear_error(tiny_pipeline):
    with pytest.raises(ValueError, match="4 input channels but 8"):
        ApDepthPipeline(
            unet=build_pipeline("tiny", use_prior=False).unet,
            vae=tiny_pipeline.vae,
            prior=tiny_pipeline.prior,
            text_embedding=tiny_pipeline.text_embedding,
        )


def test_widen_conv_in_preserves_output_for_duplicated_input():
    from apdepth.models import build_unet, get_preset

    unet = build_unet(get_preset("tiny").unet, in_channels=4).eval()
    x = torch.randn(1, 4, 8, 8)
    c = torch.randn(1, 4, 16)
    ref = unet(x, 1, encoder_hidden_states=c).sample
    widen_conv_in(unet, 8)
    assert unet.config.in_channels == 8 and unet.conv_in.weight.shape[1] == 8
    torch.testing.assert_close(unet(torch.cat([x, x], 1), 1, encoder_hidden_states=c).sample, ref, atol=1e-4, rtol=1e-4)


def test_fused_encode_matches_separate(tiny_pipeline):
    img = random_rgb(32, 40, seed=5)
    fused = tiny_pipeline(img).depth
    tiny_pipeline.fuse_vae_encode = False
    try:
        separate = tiny_pipeline(img).depth
    finally:
        tiny_pipeline.fuse_vae_encode = True
    # batch 2 (fused) and batch 1 (separate) pick different conv algorithms: 1.2e-5 apart was seen, so 1e-4
    np.testing.assert_allclose(fused, separate, atol=1e-4)


def test_channels_last_and_vae_tiling_match_plain_path(tiny_checkpoint):
    img = random_rgb(96, 128, seed=11)
    plain = ApDepthPipeline.from_pretrained(tiny_checkpoint)
    ref = plain(img, processing_resolution=128).depth
    fast = ApDepthPipeline.from_pretrained(tiny_checkpoint)
    fast.enable_channels_last()
    np.testing.assert_allclose(fast(img, processing_resolution=128).depth, ref, atol=1e-3)  # other conv algorithms
    fast.enable_vae_tiling(tile_size=64, overlap=0.25)  # 96x128 input -> several overlapping tiles
    tiled = fast(img, processing_resolution=128).depth
    rel = np.abs(tiled - ref).mean() / np.abs(ref).mean()
    assert tiled.shape == ref.shape and rel < 0.25  # seams blend; random weights make them visible
    with pytest.raises(ValueError, match="multiple of 64"):
        fast.enable_vae_tiling(tile_size=100)


def test_condition_prior_output_range_is_exact_under_quantile_normalisation(tiny_pipeline):
    import copy

    from apdepth.prior import condition_prior_output_range, normalize_prior_disparity, prepare_prior_input, run_prior

    prior = copy.deepcopy(tiny_pipeline.prior).eval()
    torch.manual_seed(0)
    for conv in (prior.head.conv1, prior.head.conv2, prior.head.conv3):
        conv.reset_parameters()  # an active head (the random tiny one outputs ~1e-7)
    with torch.no_grad():  # the failure mode seen in training: the signal rides on a large offset
        prior.head.conv3.weight.mul_(1e-1)
        prior.head.conv3.bias.fill_(1.0)
    x = prepare_prior_input(torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0)), "quantile", 56)
    with torch.no_grad():
        before = run_prior(prior, x)
        scale, _ = condition_prior_output_range(prior, x)
        after = run_prior(prior, x)
    assert scale > 1
    assert 0.9 < after.min().item() and after.max().item() < 2.1  # calibrated onto about [1, 2]
    torch.testing.assert_close(after, (before - before.min()) * scale + after.min(), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(
        normalize_prior_disparity(after, "quantile"), normalize_prior_disparity(before, "quantile"), atol=5e-3, rtol=0
    )


def test_test_time_ensemble(tiny_pipeline):
    img = random_rgb(40, 56, seed=21)
    single = tiny_pipeline(img).depth
    one = tiny_pipeline(img, ensemble_size=1).depth
    np.testing.assert_array_equal(one, single)  # ensemble_size=1 is the plain path
    out = tiny_pipeline([img, random_rgb(30, 30, seed=2)], ensemble_size=4, output_uncertainty=True)
    assert [d.shape for d in out.depth] == [(40, 56), (30, 30)]
    assert [u.shape for u in out.uncertainty] == [(40, 56), (30, 30)]
    assert all(0 <= d.min() and d.max() <= 1 for d in out.depth)
    assert all((u >= 0).all() and u.max() > 0 for u in out.uncertainty)
    # Two members (image + mirror image): the median of two is their mean, and the first member is the plain
    # prediction, so the ensemble lies between the plain prediction and the aligned mirrored one.
    two = tiny_pipeline(img, ensemble_size=2).depth[0]
    mirrored = tiny_pipeline(img[:, ::-1].copy()).depth[0][:, ::-1]
    assert np.abs(two - single[0]).mean() < np.abs(mirrored - single[0]).mean() + 1e-6
    assert tiny_pipeline(img, ensemble_size=3, processing_resolution=0, match_input_resolution=False).depth.shape == (
        1,
        40,
        56,
    )
    with pytest.raises(ValueError, match="ensemble_size must be between 1 and 8"):
        tiny_pipeline(img, ensemble_size=9)
    with pytest.raises(ValueError, match="output_uncertainty needs ensemble_size >= 2"):
        tiny_pipeline(img, output_uncertainty=True)


def test_compile_cache_folder(tmp_path):
    import subprocess
    import sys

    # enable_compile only marks modules for compilation (nothing compiles until a forward pass): cheap. The timeout
    # covers importing torch and diffusers in a fresh process on a busy 2-core machine (over 120 s was seen).
    code = (
        "import os, apdepth\n"
        "from torch._inductor.runtime.cache_dir_utils import cache_dir\n"
        "cache_dir()  # Inductor writes its default into the variable on first lookup\n"
        "from apdepth.models import build_tiny_pipeline\n"
        "from apdepth.runtime import configure_fast_path\n"
        "import torch\n"
        "configure_fast_path(build_tiny_pipeline(), torch.device('cpu'), compile=True)  # as the commands do\n"
        "print(os.environ['TORCHINDUCTOR_CACHE_DIR'])\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == str(tmp_path / ".cache" / "apdepth" / "inductor"), out.stderr[-2000:]
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == str(tmp_path / "mine"), out.stderr[-2000:]


def test_compile_modes():
    from apdepth.pipeline import _compile_mode

    assert _compile_mode("max-autotune", False) == "max-autotune-no-cudagraphs"
    assert _compile_mode("max-autotune", True) == "max-autotune"
    assert _compile_mode("default", False) == "default"  # enable_compile()'s default
    assert _compile_mode("default", True) == "reduce-overhead"
    assert _compile_mode("reduce-overhead", False) == "reduce-overhead"
    assert _compile_mode("max-autotune-no-cudagraphs", True) == "max-autotune"
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        _compile_mode("fast", False)


def test_enable_compile_rejects_unknown_mode_before_touching_modules(tiny_pipeline):
    forward = tiny_pipeline.unet._compiled_call_impl
    with pytest.raises(ValueError, match="unknown compile mode"):
        tiny_pipeline.enable_compile(mode="turbo")
    assert tiny_pipeline.unet._compiled_call_impl is forward


def test_compiled_pipeline_pads_a_short_batch_to_the_compiled_shape(tiny_pipeline):
    from apdepth.models import build_tiny_pipeline

    fresh = build_tiny_pipeline(seed=0)
    fresh.enable_compile()  # marks modules for compilation (nothing compiles before a forward pass)
    assert fresh._static_batches and not fresh._cuda_graphs
    fresh.enable_compile(dynamic=True)
    assert not fresh._static_batches

    imgs = [random_rgb(24, 32, seed=i) for i in range(3)]
    ref = tiny_pipeline(imgs, batch_size=4).depth
    seen = []
    hook = tiny_pipeline.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    tiny_pipeline._static_batches = True  # what enable_compile() sets, without paying for compiling here
    try:
        out = tiny_pipeline(imgs, batch_size=4).depth
    finally:
        tiny_pipeline._static_batches = False
        hook.remove()
    assert seen == [4]  # three images, padded to the batch size
    assert out.shape == (3, 24, 32)
    np.testing.assert_allclose(out, ref, atol=1e-4)  # padding does not change any image's result
