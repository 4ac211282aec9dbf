"""The trainer end to end on the tiny preset and 32x32 synthetic scenes (CPU, a few steps each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from apdepth.cli import main
from conftest import accelerate_cpu_launch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny_synthetic.yaml"
# 32x32 scenes, 6 steps: stage 1 (MSE) for steps 1-3, stage 2 (MSE + 0.5 freq) for steps 4-6.
BASE = [
    "data.datasets.0.size=[32,32]",
    "optim.micro_batch=2",
    "optim.max_steps=6",
    "optim.decay_steps=6",
    "optim.warmup_steps=2",
    "stages=[{until: 3, losses: {mse: 1.0}}, {until: 6, losses: {mse: 1.0, freq: 0.5}}]",
    "validation.every=0",
    "checkpointing.every=2",
    "checkpointing.keep_last=2",
    "logging.every=1",
]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # several processes on a 2-core CPU: threads would only contend
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def _train_in_process(out: Path, *extra: str, base: bool = True, config: Path = TINY) -> int:
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(["train", "--config", str(config), "--output", str(out), *(BASE if base else []), *extra])
    finally:
        torch.set_num_threads(threads)
        # Accelerate keeps process-wide singletons; a later run in this process starts clean.
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def _log(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines() if ln]


def _unet_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "ref"
    assert _train_in_process(out) == 0
    return out


def test_unknown_config_key_fails_with_its_name(tmp_path, capsys):
    rc = main(["train", "--config", str(TINY), "--output", str(tmp_path / "x"), "optim.lrr=1e-4"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown config key 'optim.lrr'" in err and "did you mean 'lr'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("  grad_accum: 1\n", "  grad_acum: 1\n"))
    assert main(["train", "--config", str(bad)]) == 2
    assert "optim.grad_acum" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_run_layout_and_resolved_config(reference_run):
    out = reference_run
    info = json.loads((out / "run_info.json").read_text())
    assert info["num_processes"] == 1 and info["effective_batch"] == 2 and info["total_steps"] == 6
    from apdepth.training.config import load_config

    saved = load_config(out / "config.yaml")  # the saved config is complete and valid on its own
    assert saved.optim.max_steps == 6 and saved.data.datasets[0].size == [32, 32]
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["latest", "step_000004", "step_000006"]  # keep_last=2
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000006"
    assert (out / "checkpoints" / "step_000006" / "state").is_dir()
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    # The exported pipeline holds the trained weights.
    final, last = _unet_state(out / "pipeline"), _unet_state(out / "checkpoints" / "step_000006")
    assert all(torch.equal(final[k], last[k]) for k in final)


def test_stage_switch_adds_the_frequency_term(reference_run):
    steps = [r for r in _log(reference_run) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    for r in steps[:3]:
        assert r["stage"] == 0 and "freq" not in r and r["loss"] == pytest.approx(r["mse"])
    for r in steps[3:]:
        assert r["stage"] == 1 and r["freq"] > 0
        assert r["loss"] == pytest.approx(r["mse"] + 0.5 * r["freq"], rel=1e-5)
    # Warm-up (2 steps) then exponential decay to 1% at step 6.
    assert steps[0]["lr"] == pytest.approx(0.5e-3) and steps[1]["lr"] == pytest.approx(1e-3)
    assert steps[-1]["lr"] < steps[2]["lr"]
    # The model at the end of stage 1 is kept as a complete pipeline folder, and differs from the final one.
    from apdepth.pipeline import ApDepthPipeline

    stage1 = ApDepthPipeline.from_pretrained(reference_run / "pipeline_stage1")
    final = ApDepthPipeline.from_pretrained(reference_run / "pipeline")
    w1, w2 = stage1.unet.conv_out.weight, final.unet.conv_out.weight
    assert w1.shape == w2.shape and not torch.equal(w1, w2)


def test_checkpoint_loads_in_predict(reference_run, tmp_path):
    from PIL import Image

    from conftest import random_rgb

    Image.fromarray(random_rgb(40, 48)).save(tmp_path / "img.png")
    ckpt = reference_run / "checkpoints" / "step_000004"
    rc = main(
        [
            "predict",
            str(tmp_path / "img.png"),
            "--output",
            str(tmp_path / "pred"),
            "--checkpoint",
            str(ckpt),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert rc == 0
    import numpy as np

    depth = np.load(tmp_path / "pred" / "img_depth.npy")
    assert depth.shape == (40, 48) and 0.0 <= depth.min() <= depth.max() <= 1.0
    assert (tmp_path / "pred" / "img_depth_colored.png").is_file()


def test_killed_run_resumes_to_the_same_weights(reference_run, tmp_path):
    out = tmp_path / "killed"
    # The same run, but aimed at many more steps (same schedule: decay_steps is fixed), killed with
    # SIGKILL right after its first checkpoint appears.
    cmd = [
        sys.executable,
        "-m",
        "apdepth",
        "train",
        "--config",
        str(TINY),
        "--output",
        str(out),
        *BASE,
        "optim.max_steps=10000",
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 120
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    resumed_from = latest.read_text().strip()
    assert int(resumed_from.split("_")[1]) < 6
    assert _train_in_process(out, "--resume", "latest") == 0
    assert json.loads((out / "run_info.json").read_text())["start_step"] == int(resumed_from.split("_")[1])
    ref, got = _unet_state(reference_run / "pipeline"), _unet_state(out / "pipeline")
    assert ref.keys() == got.keys()
    max_diff = max((ref[k] - got[k]).abs().max().item() for k in ref)
    print(f"resumed from {resumed_from}; max abs weight difference to the uninterrupted run: {max_diff}")
    assert max_diff <= 1e-6, f"resumed weights differ from the uninterrupted run by {max_diff}"
    # The log continues seamlessly: one line per step 1..6, losses equal to the reference's.
    ref_log = {r["step"]: r for r in _log(reference_run) if "loss" in r}
    got_log = {r["step"]: r for r in _log(out) if "loss" in r}
    assert sorted(got_log) == [1, 2, 3, 4, 5, 6]
    assert all(got_log[s]["loss"] == pytest.approx(ref_log[s]["loss"], rel=1e-6) for s in ref_log)


def test_batches_are_a_function_of_step_and_rank():
    from apdepth.training.config import DatasetConfig
    from apdepth.training.data import StepBatches

    ds = [
        DatasetConfig(name="synthetic_stream", size=[32, 32], probability=0.7),
        DatasetConfig(name="synthetic_stream", size=[16, 16], probability=0.3),
    ]
    a0, a1 = StepBatches(ds, 2, seed=1, rank=0, world_size=2), StepBatches(ds, 2, seed=1, rank=1, world_size=2)
    again = StepBatches(ds, 2, seed=1, rank=0, world_size=2)
    assert torch.equal(a0[5]["rgb"], again[5]["rgb"])  # reproducible
    assert not torch.equal(a0[5]["rgb"], a1[5]["rgb"])  # ranks see different samples
    picks = [a0.dataset_for(k) for k in range(400)]
    assert picks == [a1.dataset_for(k) for k in range(400)]  # one dataset per batch, on every rank
    assert 0.6 < picks.count(0) / 400 < 0.8
    assert {tuple(a0[k]["rgb"].shape[-2:]) for k in range(6)} <= {(32, 32), (16, 16)}


def test_two_process_run_keeps_replicas_identical(tmp_path):
    out = tmp_path / "ddp"
    env = _env()
    env["ACCELERATE_USE_CPU"] = "1"
    cmd = [
        *accelerate_cpu_launch(),
        "-m",
        "apdepth",
        "train",
        "--config",
        str(TINY),
        "--output",
        str(out),
        *BASE,
        "optim.max_steps=3",
        "checkpointing.every=0",
        "logging.tensorboard=false",
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((out / "run_info.json").read_text())
    assert info["num_processes"] == 2 and info["effective_batch"] == 4
    sums = [(out / f"weights_checksum_rank{r}.txt").read_text().strip() for r in (0, 1)]
    assert sums[0] == sums[1]
    # ... and the replicas did train (the weights moved away from the initialisation).
    from apdepth.models import build_pipeline
    from apdepth.training.trainer import weights_checksum

    init = build_pipeline("tiny", seed=0)
    from apdepth.training.tasks import LatentPredictor

    assert weights_checksum(LatentPredictor(init)) != sums[0]


@pytest.mark.slow
def test_tiny_training_lowers_validation_absrel(tmp_path):
    # A random VAE cannot decode anything meaningful, so first train the tiny VAE (200 steps), then the
    # U-Net on top of it (150 steps: 120 MSE + 30 MSE + freq), validating before and during training.
    size = [
        "data.datasets.0.size=[32,32]",
        "validation.dataset.size=[32,32]",
        "checkpointing.every=0",
        "logging.tensorboard=false",
    ]
    vae = tmp_path / "vae"
    assert (
        _train_in_process(
            vae,
            *size,
            "model.task=vae",
            "optim.lr=2e-3",
            "optim.max_steps=200",
            "optim.decay_steps=200",
            "stages=[{until: 200, losses: {l1: 1.0, kl: 1e-4}}]",
            "validation.every=0",
            base=False,
        )
        == 0
    )
    out = tmp_path / "apdepth"
    assert (
        _train_in_process(
            out,
            *size,
            f"model.vae={vae}",
            "optim.max_steps=150",
            "optim.decay_steps=150",
            "stages=[{until: 120, losses: {mse: 1.0}}, {until: 150, losses: {mse: 1.0, freq: 0.5}}]",
            "validation.at_start=true",
            "validation.every=75",
            base=False,
        )
        == 0
    )
    vals = [r["validation"] for r in _log(out) if "validation" in r]
    print(
        "validation AbsRel / delta1 at steps 0, 75, 150:",
        [(round(v["abs_rel"], 4), round(v["delta1"], 4)) for v in vals],
    )
    assert len(vals) == 3
    assert vals[-1]["abs_rel"] < 0.9 * vals[0]["abs_rel"]
    assert json.loads((out / "best" / "best.json").read_text())["step"] > 0


def _tiny_sd2_folder(root: Path) -> Path:
    """A Stable Diffusion 2-shaped folder (4-channel U-Net, VAE, CLIP text encoder + tokenizer) at tiny size."""
    from apdepth.models import build_unet, build_vae, get_preset
    from conftest import write_tiny_clip

    preset = get_preset("tiny")
    torch.manual_seed(0)
    build_unet(preset.unet, in_channels=4).save_pretrained(root / "unet")
    build_vae(preset.vae).save_pretrained(root / "vae")
    write_tiny_clip(root, hidden=preset.unet["cross_attention_dim"])
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


def _tiny_depth_sets(root: Path) -> tuple[Path, Path]:
    import numpy as np

    from _dataset_layouts import jpg, png8, png16, rgb_pattern, write_tree

    rng = np.random.default_rng(0)
    hs, vk = {}, {}
    for i in range(3):
        hs[f"ai_001_00{i}/rgb_cam_00_fr0000.png"] = png8(rgb_pattern(40, 48, i))
        hs[f"ai_001_00{i}/depth_plane_cam_00_fr0000.png"] = png16(rng.integers(500, 20000, (40, 48)))
        # Virtual KITTI frames must cover the 352x1216 KITTI-benchmark crop the loader applies.
        vk[f"Scene01/clone/frames/rgb/Camera_0/rgb_0000{i}.jpg"] = jpg(rgb_pattern(360, 1220, 10 + i))
        vk[f"Scene01/clone/frames/depth/Camera_0/depth_0000{i}.png"] = png16(rng.integers(100, 8000, (360, 1220)))
    return write_tree(root / "hypersim", hs), write_tree(root / "vkitti", vk)


def test_sd2_recipe_widens_conv_in_and_trains(tmp_path):
    from diffusers import UNet2DConditionModel

    from apdepth.models import build_prior, get_preset
    from apdepth.pipeline import ApDepthPipeline
    from apdepth.training.config import load_config
    from apdepth.training.tasks import build_apdepth_pipeline

    sd2 = _tiny_sd2_folder(tmp_path / "sd2")
    build_prior(get_preset("tiny").prior).save_pretrained(tmp_path / "da")
    hypersim, vkitti = _tiny_depth_sets(tmp_path)
    recipe = ROOT / "configs" / "train" / "apdepth_sd2.yaml"
    overrides = [
        f"model.init_from={sd2}",
        f"model.prior={tmp_path / 'da'}",
        f"data.datasets.0.path={hypersim}",
        f"data.datasets.1.path={vkitti}",
        f"validation.dataset.path={hypersim}",
        "model.processing_resolution=32",
        "model.prior_input_size=28",
        "data.datasets.0.size=[32,32]",
        "data.datasets.1.size=[32,32]",
        "data.num_workers=0",
        "optim.micro_batch=1",
        "optim.grad_accum=2",
        "optim.max_steps=2",
        "validation.every=2",
        "validation.max_samples=1",
        "validation.num_images=1",
        "checkpointing.every=2",
        "logging.tensorboard=false",
    ]
    # The widened conv_in: kernel repeated along the input axis and halved, bias unchanged.
    pipe = build_apdepth_pipeline(load_config(recipe, overrides))
    orig = UNet2DConditionModel.from_pretrained(sd2, subfolder="unet").conv_in
    assert pipe.unet.conv_in.in_channels == 8 and pipe.config.prior_normalization == "quantile"
    assert torch.allclose(pipe.unet.conv_in.weight, orig.weight.repeat(1, 2, 1, 1) / 2)
    assert torch.equal(pipe.unet.conv_in.bias, orig.bias)

    out = tmp_path / "run"
    assert _train_in_process(out, *overrides, base=False, config=recipe) == 0
    assert json.loads((out / "run_info.json").read_text())["effective_batch"] == 2
    loaded = ApDepthPipeline.from_pretrained(out / "checkpoints" / "step_000002")
    assert loaded.unet.config.in_channels == 8 and loaded.config.processing_resolution == 32
    assert (out / "best" / "best.json").is_file()


def test_tasks_declare_their_losses_and_unknown_ones_fail_before_training(tmp_path, capsys):
    from apdepth.training.tasks import TASK_CLASSES, Task

    assert {k: v.loss_names for k, v in TASK_CLASSES.items()} == {
        "apdepth": ("mse", "freq", "pixel_l1"),
        "vae": ("l1", "mse", "kl"),
        "prior": ("ssi", "mse"),
    }
    with pytest.raises(TypeError, match="must declare its loss_names"):
        type("NoLosses", (Task,), {"build": None, "losses": None, "export": None, "validate": None})
    with pytest.raises(TypeError, match="abstract"):
        Task(None, torch.device("cpu"), torch.float32)
    rc = main(
        [
            "train",
            "--config",
            str(TINY),
            "--output",
            str(tmp_path / "x"),
            *BASE,
            "stages=[{until: 6, losses: {ssi: 1.0}}]",
        ]
    )
    assert rc == 2
    assert (
        "stages.0.losses: unknown loss 'ssi' for task 'apdepth'; known: ['mse', 'freq', 'pixel_l1']"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "x" / "checkpoints").exists()
