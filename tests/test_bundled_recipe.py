"""The bundled model's training recipe: photometric domain randomisation, model packing, the chain script."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from apdepth.data.transforms import PhotometricConfig, photometric_augment

ROOT = Path(__file__).resolve().parents[1]


def _image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 48, 64, generator=g)


def test_photometric_off_returns_the_input_unchanged():
    rgb = _image()
    out = photometric_augment(rgb, np.random.default_rng(0), PhotometricConfig(probability=0.0))
    assert out is rgb


def test_photometric_is_a_function_of_the_generator_and_stays_in_range():
    cfg = PhotometricConfig(probability=1.0, p_blur=1.0, p_noise=1.0, p_jpeg=1.0)
    rgb = _image()
    a = photometric_augment(rgb, np.random.default_rng(7), cfg)
    b = photometric_augment(rgb, np.random.default_rng(7), cfg)
    c = photometric_augment(rgb, np.random.default_rng(8), cfg)
    assert a.shape == rgb.shape and a.dtype == torch.float32
    assert torch.equal(a, b)  # resumed training reproduces the same augmentation
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float((a - rgb).abs().mean()) > 0.01  # it really changes the image


def test_photometric_exposure_alone_scales_intensities():
    # Only exposure (+1 stop exactly): every other effect is the identity.
    cfg = PhotometricConfig(
        probability=1.0,
        exposure_stops=[1.0, 1.0],
        white_balance=0.0,
        gamma=[1.0, 1.0],
        contrast=[1.0, 1.0],
        saturation=[1.0, 1.0],
        p_blur=0.0,
        p_noise=0.0,
        p_jpeg=0.0,
    )
    rgb = _image() * 0.4  # stays below 0.5: doubling does not clip
    out = photometric_augment(rgb, np.random.default_rng(0), cfg)
    torch.testing.assert_close(out, rgb * 2.0, atol=1e-5, rtol=1e-5)


def test_photometric_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"rgb must be \(3, H, W\)"):
        photometric_augment(torch.zeros(1, 3, 8, 8), np.random.default_rng(0), PhotometricConfig(probability=1.0))


def test_training_batches_augment_rgb_only():
    from apdepth.training.config import DatasetConfig
    from apdepth.training.data import StepBatches

    ds = [DatasetConfig(name="synthetic_stream", size=[32, 32], scene="indoor")]
    plain = StepBatches(ds, micro_batch=2, seed=3, hflip=0.0)[0]
    aug = StepBatches(ds, micro_batch=2, seed=3, hflip=0.0, photometric=PhotometricConfig(probability=1.0))[0]
    assert torch.equal(plain["depth"], aug["depth"]) and torch.equal(plain["valid"], aug["valid"])
    assert not torch.equal(plain["rgb"], aug["rgb"])


def test_photometric_config_key_is_checked(tmp_path, capsys):
    from apdepth.cli import main

    code = main(
        [
            "train",
            "--config",
            str(ROOT / "configs/train/tiny_synthetic.yaml"),
            "--output",
            str(tmp_path),
            "data.photometric.probabilty=0.5",
        ]
    )
    assert code != 0
    assert "probabilty" in capsys.readouterr().err


def test_pack_round_trip_casts_large_files_to_fp16_and_back(tmp_path, tiny_pipeline):
    from apdepth.pipeline import ApDepthPipeline
    from apdepth.training.pack import pack, unpack

    src = tmp_path / "model"
    tiny_pipeline.save_pretrained(src)
    unet_file = next((src / "unet").glob("*.safetensors"))
    size_mib = unet_file.stat().st_size / 2**20
    cast = pack(src, tmp_path / "m.tar", fp16_above_mib=size_mib * 0.5)
    assert f"unet/{unet_file.name}" in cast
    with tarfile.open(tmp_path / "m.tar") as tar:
        assert json.loads(tar.extractfile("PACKED.json").read())["float16"] == cast
    back = unpack(tmp_path / "m.tar", tmp_path / "back")
    loaded = ApDepthPipeline.from_pretrained(back)
    assert loaded.unet.dtype == torch.float32
    for (name, a), (_, b) in zip(tiny_pipeline.unet.state_dict().items(), loaded.unet.state_dict().items()):
        # float16 storage: relative rounding 2**-11, plus the absolute floor of subnormals
        torch.testing.assert_close(b, a, rtol=2**-10, atol=1e-7, msg=name)
    for a, b in zip(tiny_pipeline.vae.state_dict().values(), loaded.vae.state_dict().values()):
        assert torch.equal(a, b)  # small files are stored as they are


def test_unpack_refuses_a_non_empty_folder_and_foreign_tars(tmp_path):
    from apdepth.training.pack import unpack

    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("user file")
    foreign = tmp_path / "f.tar"
    with tarfile.open(foreign, "w") as tar:
        tar.add(tmp_path / "dst" / "keep.txt", arcname="keep.txt")
    with pytest.raises(ValueError, match="not empty"):
        unpack(foreign, tmp_path / "dst")
    with pytest.raises(ValueError, match="not a packed model"):
        unpack(foreign, tmp_path / "new")
    assert (tmp_path / "dst" / "keep.txt").read_text() == "user file"


def test_bundled_configs_name_known_keys():
    from apdepth.training.config import load_config

    for name in ("vae", "prior", "apdepth", "noprior", "apdepth_e2e", "noprior_e2e"):
        cfg = load_config(ROOT / "configs/train/bundled" / f"{name}.yaml", [])
        assert cfg.data.photometric.probability > 0
        assert cfg.data.datasets[0].path == "data/bundled_train"


@pytest.mark.slow
def test_train_bundled_chain_dry_run(tmp_path):
    """The chain script end to end at toy budgets: every model trained, packed, and the pipeline loads."""
    env = dict(
        os.environ,
        OUT_ROOT=str(tmp_path / "runs"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    venv_bin = Path(os.sys.executable).parent
    env["APDEPTH"] = str(venv_bin / "apdepth") if (venv_bin / "apdepth").exists() else "apdepth"
    env["PYTHON"] = os.sys.executable
    res = subprocess.run(
        ["bash", str(ROOT / "scripts/train_bundled.sh"), "dry"], env=env, capture_output=True, text=True, timeout=1500
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    packed = tmp_path / "runs" / "packed"
    assert sorted(p.name for p in packed.iterdir()) == [
        "apdepth.tar",
        "apdepth_e2e.tar",
        "noprior.tar",
        "noprior_e2e.tar",
        "prior.tar",
        "vae.tar",
    ]
    from apdepth.pipeline import ApDepthPipeline
    from apdepth.training.pack import unpack

    pipe = ApDepthPipeline.from_pretrained(unpack(packed / "apdepth_e2e.tar", tmp_path / "unpacked"))
    depth = pipe(np.zeros((40, 56, 3), np.uint8)).depth
    assert depth.shape == (1, 40, 56) and np.isfinite(depth).all()
    # A second run finds every model finished and only re-packs.
    again = subprocess.run(
        ["bash", str(ROOT / "scripts/train_bundled.sh"), "dry"], env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0
    assert again.stdout.count("already finished") == 6
