"""What a user must not see: loading bars on every start, a false fp16 warning, docstring markup in --help,
a --help that pays for torch; and what they must see: the cost of --processing-res 0 on a huge image."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import random_rgb

HELP_SCRIPT = """
import sys
from apdepth.cli import main
for argv in ([], ["predict"], ["eval"], ["train"], ["synth"], ["demo"]):
    try:
        main(argv + ["--help"])
    except SystemExit:
        pass
print("HEAVY", sorted(m for m in ("torch", "diffusers", "transformers", "gradio", "matplotlib") if m in sys.modules))
"""


def test_help_is_plain_text_and_never_imports_the_model_stack():
    res = subprocess.run([sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("HEAVY []")  # `apdepth --help` costs no torch/diffusers import
    assert "usage: apdepth predict" in res.stdout and "--processing-res" in res.stdout
    assert "``" not in res.stdout and ":class:" not in res.stdout  # docstring markup made plain
    assert "\napdepth predict: depth maps for files, folders" in res.stdout  # was ``apdepth predict``


def test_no_loading_bars_and_no_false_fp16_warning(tmp_path, tiny_checkpoint):
    Image.fromarray(random_rgb(16, 16)).save(tmp_path / "q.png")
    cmd = [
        sys.executable,
        "-m",
        "apdepth",
        "predict",
        str(tmp_path / "q.png"),
        "-o",
        str(tmp_path / "o"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--dtype",
        "fp16",
        "--device",
        "cpu",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "Loading weights" not in res.stderr
    assert "cannot run with `cpu`" not in res.stderr
    assert np.isfinite(np.load(tmp_path / "o" / "q_depth.npy")).all()  # fp16 on a CPU does work


def test_loading_leaves_the_users_progress_bar_settings_alone(tiny_checkpoint):
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from apdepth.pipeline import ApDepthPipeline

    before = transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled()
    try:
        for enabled in (True, False):
            for module in (transformers_logging, diffusers_logging):
                module.enable_progress_bar() if enabled else module.disable_progress_bar()
            ApDepthPipeline.from_pretrained(tiny_checkpoint)
            assert transformers_logging.is_progress_bar_enabled() is enabled
            assert diffusers_logging.is_progress_bar_enabled() is enabled
    finally:
        for module, on in zip((transformers_logging, diffusers_logging), before):
            module.enable_progress_bar() if on else module.disable_progress_bar()


def test_native_resolution_warns_about_the_cost(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    from apdepth import predict
    from apdepth.cli import main

    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(big)  # 6 MP
    note = predict.native_size_note([predict.InputItem(big, big.with_suffix(""))])
    assert note.startswith(
        f"note: --processing-res 0 runs at native size; 1 input(s) exceed 4 MP, the largest {big} "
        "at 3000x2000 (6.0 MP, 15x the pixels of --processing-res 768)."
    )
    assert predict.native_size_note([predict.InputItem(big, big)], megapixels=10) is None

    # the command prints it before the model loads, unless --quiet
    monkeypatch.setattr(predict, "NATIVE_NOTE_MEGAPIXELS", 0.0001)
    Image.fromarray(random_rgb(16, 16)).save(tmp_path / "s.png")
    args = [
        "predict",
        str(tmp_path / "s.png"),
        "-o",
        str(tmp_path / "o"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--processing-res",
        "0",
    ]
    assert main(args) == 0
    assert "note: --processing-res 0 runs at native size; 1 input(s) exceed 0.0001 MP" in capsys.readouterr().err
    assert main(args + ["--quiet"]) == 0
    assert capsys.readouterr().err == ""
