"""The streaming `apdepth predict`: kill -9 and resume, non-finite depth, failed writes, file modes, and
the order of the summary."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apdepth.cli import main
from conftest import random_rgb

SRC = Path(__file__).resolve().parents[1] / "src"


def _images(root: Path, n: int, h: int = 48, w: int = 64) -> Path:
    root.mkdir(parents=True)
    for k in range(n):
        Image.fromarray(random_rgb(h, w, k)).save(root / f"img{k:03d}.png")
    return root


def _visible_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and p.name != "predict_summary.json"
    }


def _predict_cmd(inp, out, ckpt, *extra):
    return [
        sys.executable,
        "-m",
        "apdepth",
        "predict",
        str(inp),
        "--output",
        str(out),
        "--checkpoint",
        str(ckpt),
        "--batch-size",
        "1",
        "--quiet",
        *extra,
    ]


def test_kill_9_mid_run_leaves_no_partial_files_and_skip_existing_completes_it(tmp_path, tiny_checkpoint):
    inp = _images(tmp_path / "in", 60)
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")

    reference = tmp_path / "reference"
    assert (
        main(
            [
                "predict",
                str(inp),
                "--output",
                str(reference),
                "--checkpoint",
                str(tiny_checkpoint),
                "--batch-size",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    expected = _visible_files(reference)
    assert len(expected) == 3 * 60

    out = tmp_path / "out"
    proc = subprocess.Popen(
        _predict_cmd(inp, out, tiny_checkpoint), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and len(list(out.glob("*_depth_colored.png"))) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _visible_files(out)
    assert 3 <= len(partial) < len(expected)  # killed in the middle
    for name, data in partial.items():  # every visible file is complete: identical to the uninterrupted run's
        assert data == expected[name], name

    # leftovers of a write cut short are hidden; plant one to be sure the resume removes them
    (out / ".img059_depth.npy.abc123.tmp").write_bytes(b"partial")
    res = subprocess.run(
        _predict_cmd(inp, out, tiny_checkpoint, "--skip-existing"), env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    n_complete = len({n.split("_depth")[0] for n in partial if n.endswith("_depth_colored.png")})
    assert f"skipped: {n_complete}" in res.stdout
    assert _visible_files(out) == expected
    assert [p.name for p in out.rglob(".*")] == []  # no temporary files left


def _nan_checkpoint(tmp_path) -> Path:
    from apdepth.models import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=0)
    with torch.no_grad():
        pipe.unet.conv_out.weight.fill_(float("nan"))
    path = tmp_path / "nan_ckpt"
    pipe.save_pretrained(path)
    return path


def test_non_finite_depth_fails_that_input_by_name(tmp_path, capsys):
    inp = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    code = main(["predict", str(inp), "--output", str(out), "--checkpoint", str(_nan_checkpoint(tmp_path)), "--quiet"])
    assert code == 1
    text = capsys.readouterr()
    assert "done: 0  skipped: 0  failed: 2" in text.out
    summary = json.loads((out / "predict_summary.json").read_text())
    assert sorted(summary["failed"]) == [str(inp / "img000.png"), str(inp / "img001.png")]
    assert all("non-finite depth (3072 of 3072 pixels" in r for r in summary["failed"].values())
    assert [p.name for p in out.iterdir()] == ["predict_summary.json"]  # no all-NaN npy, no black PNG


def test_infinite_decoder_output_becomes_nan_not_a_clamped_value(tiny_pipeline, monkeypatch):
    from types import SimpleNamespace

    sample = torch.zeros(1, 3, 16, 16)
    sample[0, :, 2, 3] = float("inf")
    sample[0, :, 5, 6] = -float("inf")
    monkeypatch.setattr(tiny_pipeline.vae, "decode", lambda z: SimpleNamespace(sample=sample))
    depth = tiny_pipeline.decode_depth(torch.zeros(1, 4, 2, 2))
    assert torch.isnan(depth[0, 2, 3]) and torch.isnan(depth[0, 5, 6])
    assert torch.isfinite(depth).sum() == 16 * 16 - 2 and float(depth[0, 0, 0]) == 0.5


def test_a_failed_write_fails_that_input_and_the_rest_are_written(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    import apdepth.writer as writer

    inp = _images(tmp_path / "in", 4)
    real = writer.save_depth_outputs

    def flaky(out_dir, stem, depth, color_map="Spectral"):
        if stem == "img002":
            raise OSError(5, "Input/output error")  # not a full disk: the run goes on
        return real(out_dir, stem, depth, color_map)

    monkeypatch.setattr(writer, "save_depth_outputs", flaky)
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        code = main(
            [
                "predict",
                str(inp),
                "--output",
                str(out),
                "--checkpoint",
                str(tiny_checkpoint),
                "--batch-size",
                "3",
                "--quiet",
            ]
        )
    finally:
        os.umask(old)
    assert code == 1
    assert "done: 3  skipped: 0  failed: 1" in capsys.readouterr().out
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["failed"] == {str(inp / "img002.png"): "cannot write its outputs: Input/output error"}
    assert summary["done"] == sorted(summary["done"]) and len(summary["done"]) == 3
    assert not (out / "img002_depth.npy").exists()
    modes = {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {0o644}  # umask respected: readable by others, like any file the user creates


@pytest.mark.parametrize("batch_size", [1, 3])
def test_streamed_outputs_equal_the_python_api(tmp_path, tiny_pipeline, tiny_checkpoint, batch_size):
    inp = _images(tmp_path / "in", 5, 40, 56)
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(inp),
                "--output",
                str(out),
                "--checkpoint",
                str(tiny_checkpoint),
                "--batch-size",
                str(batch_size),
                "--quiet",
            ]
        )
        == 0
    )
    from apdepth.image_io import read_image

    for k in range(5):
        ref = tiny_pipeline(read_image(inp / f"img{k:03d}.png")).depth[0]
        np.testing.assert_allclose(np.load(out / f"img{k:03d}_depth.npy"), ref, atol=1e-4)
