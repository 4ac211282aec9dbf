"""Every command fails in one clear line (exit code 2) instead of a traceback or a wrong hint: bad devices,
missing extras, missing or corrupt checkpoints, path typos and an offline Hub."""

from __future__ import annotations

import sys
import time

import pytest
from PIL import Image

from apdepth.cli import main
from apdepth.hub import CheckpointNotFoundError
from apdepth.pipeline import ApDepthPipeline
from conftest import random_rgb


@pytest.fixture()
def image(tmp_path):
    Image.fromarray(random_rgb(16, 16)).save(tmp_path / "x.png")
    return tmp_path / "x.png"


@pytest.fixture()
def no_hub(monkeypatch):
    """Any attempt to reach the Hub fails the test."""
    import huggingface_hub

    def forbidden(*a, **k):
        raise AssertionError("the Hub must not be contacted")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", forbidden)


@pytest.mark.parametrize(
    "device, line",
    [
        ("0", "error: unknown --device '0': use auto, cpu, cuda, cuda:N or mps (for GPU 0: cuda:0)"),
        ("gpu", "error: unknown --device 'gpu': use auto, cpu, cuda, cuda:N or mps (for a GPU: cuda)"),
        ("cuda:x", "error: unknown --device 'cuda:x': use auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_bad_device_is_one_line(image, tmp_path, tiny_checkpoint, capsys, device, line):
    rc = main(
        [
            "predict",
            str(image),
            "-o",
            str(tmp_path / "o"),
            "--checkpoint",
            str(tiny_checkpoint),
            "--device",
            device,
            "--quiet",
        ]
    )
    assert rc == 2 and capsys.readouterr().err == line + "\n"


def test_train_without_the_train_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    assert main(["train", "--config", "configs/train/does-not-matter.yaml"]) == 2
    assert capsys.readouterr().err == (
        "error: training needs the train extra: pip install 'apdepth[train]' (missing: tensorboard)\n"
    )


def test_demo_with_a_missing_checkpoint(capsys, no_hub):
    pytest.importorskip("gradio")
    assert main(["demo", "--checkpoint", "./nope", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: Checkpoint './nope': no such folder (it reads as a local path, so it is not looked up "
        "as a Hugging Face Hub id of the form 'owner/name').\n"
    )


def test_eval_with_a_missing_checkpoint(tmp_path, capsys, no_hub):
    from test_evaluate import _nyu_tar

    tar = _nyu_tar(tmp_path)
    rc = main(["eval", "--dataset", "nyu", "--data-dir", str(tar), "--checkpoint", "./nope", "--no-progress"])
    assert rc == 2
    assert capsys.readouterr().err.startswith("error: Checkpoint './nope': no such folder")


@pytest.mark.parametrize("name", ["./x", "models/foo", "a/b/c", r"C:\models\x", "nope", "~/models/x"])
def test_path_like_names_are_missing_paths_not_hub_ids(tmp_path, monkeypatch, no_hub, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # models/foo: "models" exists here, so models/foo is a path typo
    with pytest.raises(CheckpointNotFoundError, match=r"no such folder \(it reads as a local path"):
        ApDepthPipeline.from_pretrained(name)


def test_missing_path_on_the_command_line(image, tmp_path, capsys, no_hub, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert main(["predict", str(image), "-o", str(tmp_path / "o"), "--checkpoint", "models/foo", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Checkpoint 'models/foo': no such folder")


def test_offline_hub_id_fails_fast_with_the_current_cli_hint(monkeypatch):
    import huggingface_hub

    calls = []
    real = huggingface_hub.snapshot_download

    def spy(*a, **k):
        calls.append(k.get("local_files_only"))
        return real(*a, **k)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(CheckpointNotFoundError) as info:
        ApDepthPipeline.from_pretrained("someone/not-a-real-model")
    assert time.perf_counter() - t0 < 5 and calls == [True]
    msg = str(info.value)
    assert "offline mode (HF_HUB_OFFLINE or local_files_only)" in msg
    assert "`hf download someone/not-a-real-model --local-dir DIR`" in msg and "huggingface-cli" not in msg

    # Not marked offline, but the Hub cannot be reached: one quick connection check, then the cache only.
    import socket

    def unreachable(*a, **k):
        raise OSError(101, "Network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(socket, "create_connection", unreachable)
    calls.clear()
    t0 = time.perf_counter()
    with pytest.raises(
        CheckpointNotFoundError,
        match="cannot reach huggingface.co: Network is unreachable; not in the local cache either",
    ):
        ApDepthPipeline.from_pretrained(None, prior="someone/not-a-real-prior")
    assert time.perf_counter() - t0 < 5 and calls == [True]


def test_corrupt_local_weights_are_reported_as_corrupt(tmp_path, tiny_pipeline, no_hub):
    root = tmp_path / "ckpt"
    tiny_pipeline.save_pretrained(root)
    weights = next((root / "unet").glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(CheckpointNotFoundError) as info:
        ApDepthPipeline.from_pretrained(root)
    msg = str(info.value)
    assert msg.startswith(
        f"Could not load the U-Net from {root / 'unet'}: the weights file {weights} is corrupt or truncated ("
    )
    assert msg.endswith("copy or download it again.")
    assert "Hub" not in msg and "allow_pickle" not in msg and "download it on" not in msg


def test_every_command_checks_its_output_folder_first(tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    bad = tmp_path / "file" / "out"
    assert main(["synth", "--out", str(bad), "--num", "1", "--size", "32x32"]) == 2
    assert capsys.readouterr().err == f"error: cannot write to --out {bad}: Not a directory\n"
    # eval: before any sample is read (the data folder does not even exist)
    assert main(["eval", "--dataset", "nyu", "--data-dir", str(tmp_path / "none"), "--output", str(bad)]) == 2
    assert capsys.readouterr().err == f"error: cannot write to --output {bad}: Not a directory\n"


def test_unforeseen_file_system_errors_are_one_line(monkeypatch, capsys):
    import errno
    import os

    from apdepth import cli

    def disk_full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/x_depth.npy")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda only=None: parser)
    parser._subparsers._group_actions[0].choices["synth"].set_defaults(_run=disk_full)
    assert cli.main(["synth", "--out", "x"]) == 1
    assert capsys.readouterr().err == "error: No space left on device: /data/out/x_depth.npy\n"
