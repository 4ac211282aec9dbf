"""Loading contract: strict keys, diffusers' loading options (variant, revision, cache, token), model CPU offload,
and the command layer (device/dtype choice, load_pipeline) with an import graph that never points back at the
dispatcher and has no cycles."""

from __future__ import annotations

import ast
import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from apdepth.checkpoint import CheckpointMismatchError, LoadOptions
from apdepth.hub import CheckpointNotFoundError
from apdepth.pipeline import ApDepthPipeline
from conftest import random_rgb

SRC = Path(__file__).resolve().parents[1] / "src" / "apdepth"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_weights(path: Path, drop: str | None = None, add: str | None = None) -> None:
    state = load_file(path)
    if drop is not None:
        del state[drop]
    if add is not None:
        state[add] = torch.zeros(3)
    save_file(state, path, metadata={"format": "pt"})


def test_a_removed_unet_weight_is_an_error_naming_it(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    _edit_weights(ckpt / "unet" / "diffusion_pytorch_model.safetensors", drop="conv_norm_out.weight")
    with pytest.raises(CheckpointMismatchError, match=r"U-Net .*1 missing \(conv_norm_out\.weight\)"):
        ApDepthPipeline.from_pretrained(ckpt)
    # The explicit opt-out loads it (the weight keeps its initial value).
    pipe = ApDepthPipeline.from_pretrained(ckpt, strict=False)
    assert torch.equal(pipe.unet.conv_norm_out.weight, torch.ones_like(pipe.unet.conv_norm_out.weight))


def test_an_extra_vae_weight_and_a_removed_prior_weight_are_errors(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    _edit_weights(ckpt / "vae" / "diffusion_pytorch_model.safetensors", add="decoder.renamed_layer.weight")
    with pytest.raises(CheckpointMismatchError, match=r"VAE .*1 unexpected \(decoder\.renamed_layer\.weight\)"):
        ApDepthPipeline.from_pretrained(ckpt)

    ckpt2 = _copy(tiny_checkpoint, tmp_path / "ckpt2")
    prior_file = ckpt2 / "prior" / "model.safetensors"
    key = sorted(load_file(prior_file))[0]
    _edit_weights(prior_file, drop=key)
    with pytest.raises(CheckpointMismatchError, match=rf"depth prior .*1 missing \({key}\)"):
        ApDepthPipeline.from_pretrained(ckpt2)
    # A CheckpointMismatchError is a ValueError: the commands report it in one line.
    assert issubclass(CheckpointMismatchError, ValueError)


def test_fp16_variant_beside_the_fp32_files(tiny_pipeline, tmp_path):
    root = tmp_path / "ckpt"
    tiny_pipeline.save_pretrained(root)
    copy.deepcopy(tiny_pipeline).to(torch.float16).save_pretrained(root, variant="fp16")
    assert (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (root / "prior" / "model.fp16.safetensors").is_file()
    # Without a variant the fp32 files load; with it every component reads its fp16 file.
    full = ApDepthPipeline.from_pretrained(root)
    half = ApDepthPipeline.from_pretrained(root, variant="fp16")
    for name in ("unet", "vae", "prior", "text_embedding"):
        ref = dict(getattr(tiny_pipeline, name).named_parameters())
        for key, value in getattr(full, name).named_parameters():
            assert torch.equal(value, ref[key]), (name, key)
        rounded = {k: v.half().float() for k, v in ref.items()}
        mismatched = [k for k, v in getattr(half, name).named_parameters() if not torch.equal(v.float(), rounded[k])]
        assert not mismatched, (name, mismatched[:3])
    assert any(not torch.equal(v, v.half().float()) for v in tiny_pipeline.unet.parameters())  # the test can tell
    # A component without the variant falls back to its default weights, as in diffusers.
    for f in (root / "vae").glob("*.fp16.safetensors"):
        f.unlink()
    mixed = ApDepthPipeline.from_pretrained(root, variant="fp16")
    assert torch.equal(mixed.vae.encoder.conv_in.weight, tiny_pipeline.vae.encoder.conv_in.weight)


def test_hub_options_reach_the_download(tiny_checkpoint, monkeypatch, tmp_path):
    import huggingface_hub

    seen = {}

    def fake_snapshot_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(tiny_checkpoint)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    pipe = ApDepthPipeline.from_pretrained(
        "someone/model", revision="v1.2", cache_dir=tmp_path / "cache", token="hf_x", local_files_only=True
    )
    assert pipe.unet is not None
    assert seen["repo_id"] == "someone/model" and seen["revision"] == "v1.2" and seen["token"] == "hf_x"
    assert seen["cache_dir"] == str(tmp_path / "cache") and seen["local_files_only"] is True
    assert not any(p.endswith(".bin") for p in seen["allow_patterns"])


def test_pickled_weights_need_allow_pickle():
    with pytest.raises(ValueError, match="allow_pickle=True"):
        LoadOptions(use_safetensors=False)
    assert LoadOptions().safetensors_flag is True
    assert LoadOptions(allow_pickle=True).safetensors_flag is None


def test_model_cpu_offload_gives_the_same_depth(tiny_checkpoint):
    pipe = ApDepthPipeline.from_pretrained(tiny_checkpoint)
    images = [random_rgb(40, 56, seed=1), random_rgb(40, 56, seed=2)]
    ref = pipe(images, batch_size=2, output_prior=True)
    # On this CPU-only machine the offload target is the CPU itself: the accelerate hooks still wrap every model
    # (tests/test_gpu.py runs the same check with CUDA as the target).
    pipe.enable_model_cpu_offload(device="cpu")
    assert len(pipe._all_hooks) == 4
    out = pipe(images, batch_size=2, output_prior=True)
    np.testing.assert_allclose(out.depth, ref.depth, atol=1e-5)
    np.testing.assert_allclose(out.prior_depth, ref.prior_depth, atol=1e-5)
    again = pipe(images[0])  # hooks were reset after the first call and work again
    np.testing.assert_allclose(again.depth[0], ref.depth[0], atol=1e-4)


def test_pick_device_and_dtype_fail_with_one_line():
    from apdepth.runtime import pick_device, pick_dtype

    assert pick_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "0", "tpu"):
        with pytest.raises(ValueError, match=rf"unknown --device '{bad}': use auto, cpu, cuda, cuda:N or mps"):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available"):
            pick_device("cuda:0")
    assert pick_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'half'"):
        pick_dtype("half")


def test_load_pipeline_takes_values(tiny_checkpoint):
    from apdepth.runtime import load_pipeline

    pipe = load_pipeline(tiny_checkpoint, device="cpu", dtype="fp32")
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)  # the CPU fast path
    assert pipe._progress_bar_config == {"disable": True}
    plain = load_pipeline(tiny_checkpoint, device="cpu", fast_path=False)
    assert not plain.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    image = random_rgb(32, 48)
    np.testing.assert_allclose(pipe(image).depth, plain(image).depth, atol=1e-3)
    with pytest.raises(ValueError, match="CPU offload needs an accelerator"):
        load_pipeline(tiny_checkpoint, device="cpu", cpu_offload=True)
    with pytest.raises(CheckpointNotFoundError):
        load_pipeline(str(tiny_checkpoint) + "-missing", device="cpu")


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """apdepth modules imported by ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("apdepth")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.startswith("apdepth"):
                out.add(base)
                out |= {f"{base}.{a.name}" for a in node.names}
    return out


def test_import_graph_has_no_arrow_into_the_dispatcher_and_no_cycle():
    modules = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {m: {i for i in _imports(f, m, False) if i in modules and i != m} for m, f in modules.items()}
    assert [m for m, deps in graph.items() if "apdepth.cli" in deps] == ["apdepth.__main__"]
    commands = {
        "apdepth.predict",
        "apdepth.demo",
        "apdepth.evaluation.cli",
        "apdepth.training.cli",
        "apdepth.data.synthetic_cli",
    }
    assert {m: deps & commands for m, deps in graph.items() if deps & commands and m != "apdepth.cli"} == {}

    top_level = {m: {i for i in _imports(f, m, True) if i in modules and i != m} for m, f in modules.items()}

    def cycle_from(start, graph):
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    # no cycle, neither among module-level imports nor counting the deferred imports inside functions
    assert {m: c for m in top_level if (c := cycle_from(m, top_level))} == {}
    assert {m: c for m in graph if (c := cycle_from(m, graph))} == {}


class _MeanPrior(torch.nn.Module):
    """A stand-in second prior family: disparity = the image's channel mean (bright = near)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    @property
    def dtype(self):
        return self.scale.dtype

    @property
    def device(self):
        return self.scale.device

    def forward(self, pixel_values):
        return pixel_values.mean(dim=1) * self.scale


def test_a_second_prior_family_is_one_adapter(tiny_pipeline):
    from apdepth.priors import PriorAdapter, adapter_for, register_prior_adapter
    from apdepth.priors.base import _ADAPTERS

    class MeanPriorAdapter(PriorAdapter):
        class_name = "_MeanPrior"

        def model_class(self):
            return _MeanPrior

        def build(self, cfg):
            return _MeanPrior()

        def prepare_input(self, rgb, normalization, input_size, mean, std):
            return rgb

        def run(self, model, pixel_values):
            return model(pixel_values)

    register_prior_adapter(MeanPriorAdapter())
    try:
        pipe = ApDepthPipeline(
            unet=tiny_pipeline.unet,
            vae=tiny_pipeline.vae,
            prior=_MeanPrior(),
            text_embedding=tiny_pipeline.text_embedding,
            processing_resolution=32,
        )
        assert isinstance(adapter_for(pipe.prior), MeanPriorAdapter)
        rgb = torch.rand(1, 3, 32, 32)
        cond, disp = pipe.prior_condition(rgb, return_disparity=True)
        torch.testing.assert_close(disp, rgb.mean(dim=1))  # the adapter's prior is what the U-Net is conditioned on
        assert pipe(random_rgb(32, 32)).depth.shape == (1, 32, 32)
    finally:
        del _ADAPTERS["_MeanPrior"]


def test_an_unknown_recorded_prior_class_is_named(tiny_checkpoint, tmp_path):
    import json

    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    config = json.loads((ckpt / "prior" / "config.json").read_text())
    config["architectures"] = ["SomeOtherDepthModel"]
    (ckpt / "prior" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match="no prior adapter for 'SomeOtherDepthModel'; known prior classes: .*DepthAnythingForDepthEstimation",
    ):
        ApDepthPipeline.from_pretrained(ckpt)
