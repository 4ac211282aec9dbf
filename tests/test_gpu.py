"""GPU checks of the fast paths (marked ``gpu``; run on demand with ``make test-gpu``, skipped without CUDA).

They check what the CPU suite cannot: CUDA against CPU, fp16/bf16 on CUDA, torch.compile with CUDA graphs
(results equal eager, and one call's result is not overwritten by the next), that VAE tiling bounds peak GPU
memory, ``apdepth predict`` on a GPU, and a few bf16 training steps. ``APDEPTH_TEST_DEVICE=cpu`` runs the
device-neutral ones on a CPU (to check the tests themselves).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from apdepth.image_io import read_image
from apdepth.pipeline import ApDepthPipeline

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
DEVICE = torch.device(os.environ.get("APDEPTH_TEST_DEVICE", "cuda"))
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)
cuda_only = pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA only")


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).mean() / np.abs(b).mean())


@pytest.fixture(scope="module")
def rgb():
    return read_image(EXAMPLES / "synthetic_street_a.png")


@pytest.fixture(scope="module")
def fp32_on_device():
    return ApDepthPipeline.from_pretrained().to(DEVICE)


@cuda_only
def test_cuda_matches_cpu(fp32_on_device, rgb):
    cpu = ApDepthPipeline.from_pretrained()(rgb).depth[0]
    gpu = fp32_on_device(rgb).depth[0]
    # cuDNN may use TF32 for convolutions: agreement to ~1e-3, not bit-exact.
    assert gpu.shape == cpu.shape and _rel(gpu, cpu) < 1e-2


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_matches_fp32(fp32_on_device, rgb, dtype):
    if dtype == "fp16" and DEVICE.type != "cuda":
        pytest.skip("fp16 is a CUDA path")
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    half = ApDepthPipeline.from_pretrained(torch_dtype=torch_dtype).to(DEVICE)
    assert half.prior.dtype == torch_dtype  # end to end, prior included
    ref = fp32_on_device(rgb).depth[0]
    out = half(rgb).depth[0]
    assert np.isfinite(out).all() and _rel(out, ref) < 1e-2, f"{dtype}: relative error {_rel(out, ref):.4f}"


@cuda_only
def test_compiled_with_cuda_graphs_matches_eager(fp32_on_device):
    a = read_image(EXAMPLES / "synthetic_room_a.png")
    b = read_image(EXAMPLES / "synthetic_room_b.png")  # same size: one compiled shape (batch 2), the graphs replay
    ref_a, ref_b = fp32_on_device(a, output_type="pt").depth[0], fp32_on_device(b, output_type="pt").depth[0]
    pipe = ApDepthPipeline.from_pretrained().to(DEVICE)
    pipe.enable_compile(mode="default", cuda_graphs=True)
    first = pipe([a, b], batch_size=2, output_type="pt").depth
    kept = first.clone()
    second = pipe([b, a], batch_size=2, output_type="pt").depth
    torch.testing.assert_close(first, kept, rtol=0, atol=0)  # not overwritten by the later replay
    # Three images in batches of 2: the short last batch is padded to the compiled shape.
    trio = pipe([a, b, a], batch_size=2, output_type="pt").depth
    for out, ref in zip([*first, *second, *trio], (ref_a, ref_b, ref_b, ref_a, ref_a, ref_b, ref_a)):
        assert _rel(out.cpu(), ref.cpu()) < 1e-3


@cuda_only
def test_vae_tiling_bounds_peak_memory(fp32_on_device):
    pipe = fp32_on_device
    x = torch.rand(1, 3, 4096, 4096, device=DEVICE) * 2 - 1
    peaks, depth = {}, {}
    for tiled in (False, True):
        pipe.enable_vae_tiling(tile_size=512) if tiled else pipe.disable_vae_tiling()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad():
            depth[tiled] = pipe.decode_depth(pipe.encode(torch.cat([x, x.flip(-1)])).chunk(2)[0])
        torch.cuda.synchronize()
        peaks[tiled] = torch.cuda.max_memory_allocated() - base
    pipe.disable_vae_tiling()
    assert depth[True].shape == depth[False].shape == (1, 4096, 4096)
    assert peaks[True] < 0.25 * peaks[False], (
        f"tiled {peaks[True] / 2**30:.2f} GiB vs untiled {peaks[False] / 2**30:.2f} GiB"
    )
    assert _rel(depth[True].cpu(), depth[False].cpu()) < 5e-2


def test_predict_cli_bf16(tmp_path):
    from apdepth.cli import main

    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(EXAMPLES),
                "--output",
                str(out),
                "--device",
                str(DEVICE),
                "--dtype",
                "bf16",
                "--batch-size",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads((out / "predict_summary.json").read_text())
    n = len([p for p in EXAMPLES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")])
    assert len(summary["done"]) == n and not summary["failed"]
    assert len(list(out.rglob("*_depth.npy"))) == n


def test_training_steps_bf16(tmp_path):
    from accelerate.state import AcceleratorState, GradientState

    from apdepth.cli import main

    out = tmp_path / "run"
    overrides = [
        "data.datasets.0.size=[64,64]",
        "optim.micro_batch=4",
        "optim.max_steps=6",
        "optim.decay_steps=6",
        "optim.warmup_steps=2",
        "stages=[{until: 3, losses: {mse: 1.0}}, {until: 6, losses: {mse: 1.0, freq: 0.5}}]",
        "validation.every=0",
        "checkpointing.every=6",
        "logging.every=1",
        "mixed_precision=bf16",
    ]
    try:
        assert (
            main(
                ["train", "--config", str(ROOT / "configs/train/tiny_synthetic.yaml"), "--output", str(out), *overrides]
            )
            == 0
        )
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines() if ln]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) for r in steps)
    assert all(np.isfinite(r["loss"]) and "freq" in r for r in steps[3:])  # stage 2 reached
    run = json.loads((out / "run_info.json").read_text())
    assert run["device"].startswith(DEVICE.type) and run["mixed_precision"] == "bf16"


@cuda_only
def test_model_cpu_offload_matches_plain(fp32_on_device, rgb):
    plain = fp32_on_device(rgb).depth[0]
    offloaded = ApDepthPipeline.from_pretrained()
    offloaded.enable_model_cpu_offload(device=DEVICE)
    out = offloaded(rgb).depth[0]
    assert _rel(out, plain) < 1e-3
    # After the call every model is back on the CPU; a second call runs again on the GPU.
    assert offloaded.unet.device.type == "cpu" and offloaded.vae.device.type == "cpu"
    assert _rel(offloaded(rgb).depth[0], plain) < 1e-3
