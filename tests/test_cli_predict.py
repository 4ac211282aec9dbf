"""`apdepth predict` end to end on a tiny checkpoint: folders, globs, bad files, skip-existing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from apdepth.cli import main
from conftest import random_rgb


@pytest.fixture()
def input_tree(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(random_rgb(30, 40, 1)).save(root / "a.png")
    Image.fromarray(random_rgb(33, 21, 2)).convert("L").save(root / "sub" / "grey.png")
    Image.fromarray(random_rgb(24, 24, 3)).save(root / "sub" / "photo.jpg")
    Image.fromarray(np.dstack([random_rgb(20, 28, 4), np.full((20, 28), 200, np.uint8)])).save(root / "rgba.png")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("not an image")
    good = (root / "a.png").read_bytes()
    (root / "sub" / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


def test_predict_folder_with_bad_files(input_tree, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(input_tree),
            "--output",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--batch-size",
            "2",
            "--quiet",
        ]
    )
    assert code == 1  # some inputs failed
    for rel, shape in [("a", (30, 40)), ("sub/grey", (33, 21)), ("sub/photo", (24, 24)), ("rgba", (20, 28))]:
        d = np.load(out / f"{rel}_depth.npy")
        assert d.shape == shape and d.dtype == np.float32 and 0 <= d.min() and d.max() <= 1
        with Image.open(out / f"{rel}_depth.png") as im:
            assert im.mode.startswith("I") and im.size == shape[::-1]
        assert (out / f"{rel}_depth_colored.png").is_file()
    assert not (out / "empty_depth.npy").exists() and not (out / "sub" / "truncated_depth.npy").exists()
    text = capsys.readouterr()
    assert "done: 4  skipped: 0  failed: 3" in text.out
    for name in ("empty.png", "notes.jpg", "truncated.png"):
        assert name in text.out
    summary = json.loads((out / "predict_summary.json").read_text())
    assert len(summary["done"]) == 4 and len(summary["failed"]) == 3
    assert not list(out.rglob("*.tmp"))  # no temporary leftovers

    # --skip-existing: nothing recomputed, outputs untouched.
    mtime = (out / "a_depth.npy").stat().st_mtime_ns
    code = main(
        [
            "predict",
            str(input_tree / "a.png"),
            str(input_tree / "sub"),
            "--output",
            str(out / "sub2"),
            "--checkpoint",
            str(tiny_checkpoint),
            "--color-map",
            "none",
            "--quiet",
        ]
    )
    assert code == 1  # the truncated file in sub/ still fails
    assert not (out / "sub2" / "a_depth_colored.png").exists()
    code = main(
        [
            "predict",
            str(input_tree / "a.png"),
            "--output",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--skip-existing",
            "--quiet",
        ]
    )
    assert code == 0 and (out / "a_depth.npy").stat().st_mtime_ns == mtime
    assert "done: 0  skipped: 1  failed: 0" in capsys.readouterr().out


def test_predict_glob_and_processing_res(input_tree, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(input_tree / "**" / "*.jpg"),
            "--output",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--processing-res",
            "16",
            "--quiet",
        ]
    )
    assert code == 1  # the glob also matches notes.jpg, which is not an image
    assert np.load(out / "sub" / "photo_depth.npy").shape == (24, 24)  # sub-folder kept relative to the glob base
    summary = json.loads((out / "predict_summary.json").read_text())
    assert [k.endswith("notes.jpg") for k in summary["failed"]] == [True]


def test_predict_same_result_as_python_api(tmp_path, tiny_pipeline, tiny_checkpoint):
    img = random_rgb(40, 52, 9)
    Image.fromarray(img).save(tmp_path / "x.png")
    assert (
        main(
            [
                "predict",
                str(tmp_path / "x.png"),
                "-o",
                str(tmp_path / "o"),
                "--checkpoint",
                str(tiny_checkpoint),
                "--quiet",
            ]
        )
        == 0
    )
    # The CLI runs channels_last on a CPU (different oneDNN kernels): equal up to float rounding.
    np.testing.assert_allclose(np.load(tmp_path / "o" / "x_depth.npy"), tiny_pipeline(img).depth[0], atol=2e-4)


def test_predict_argument_errors(tmp_path, tiny_checkpoint, capsys):
    assert (
        main(
            [
                "predict",
                str(tmp_path / "nope.png"),
                "-o",
                str(tmp_path / "o"),
                "--checkpoint",
                str(tiny_checkpoint),
                "--quiet",
            ]
        )
        == 1
    )
    assert "nope.png: no such file or folder" in capsys.readouterr().out
    assert main(["predict", str(tmp_path), "-o", str(tmp_path / "o"), "--color-map", "nocmap"]) == 2
    assert "unknown --color-map" in capsys.readouterr().err
    Image.fromarray(random_rgb(16, 16)).save(tmp_path / "y.png")
    assert (
        main(["predict", str(tmp_path / "y.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "missing")])
        == 2
    )
    assert "no such folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "y.png"), "-o", str(tmp_path / "o"), "--cuda-graphs"]) == 2
    assert "--cuda-graphs needs --compile" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                str(tmp_path / "y.png"),
                "-o",
                str(tmp_path / "o"),
                "--compile",
                "--cuda-graphs",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "--cuda-graphs needs a CUDA device (running on cpu)" in capsys.readouterr().err
    assert not (tmp_path / "o" / "y_depth.npy").exists()


def test_predict_ensemble_option(tmp_path, tiny_checkpoint, tiny_pipeline, capsys):
    img = random_rgb(32, 40, 4)
    Image.fromarray(img).save(tmp_path / "e.png")
    args = [
        "predict",
        str(tmp_path / "e.png"),
        "-o",
        str(tmp_path / "o"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--quiet",
    ]
    assert main(args + ["--ensemble-size", "3"]) == 0
    ens = np.load(tmp_path / "o" / "e_depth.npy")
    assert ens.shape == (32, 40)
    np.testing.assert_allclose(ens, tiny_pipeline(img, ensemble_size=3).depth[0], atol=2e-4)
    assert main(args + ["--ensemble-size", "9"]) == 2
    assert "--ensemble-size must be between 1 and 8" in capsys.readouterr().err


def test_quiet_prints_only_the_summary(tmp_path, tiny_checkpoint):
    import subprocess
    import sys

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
    ]
    loud = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    quiet = subprocess.run(cmd + ["--quiet"], capture_output=True, text=True, timeout=120)
    assert loud.returncode == quiet.returncode == 0
    assert "1/1" in loud.stderr  # the images' progress bar, which --quiet silences
    assert quiet.stderr == "" and quiet.stdout.startswith("done: 1  skipped: 0  failed: 0")
