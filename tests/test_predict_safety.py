"""`apdepth predict` never writes over an input, never reads its own outputs back, takes every file once,
keeps going past name collisions and reports every problem in one line (issue: user-data safety)."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from apdepth.cli import main
from conftest import random_rgb


def _hashes(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _summary(out) -> dict:
    return json.loads((out / "predict_summary.json").read_text())


def _predict(*args, ckpt):
    return main(["predict", *map(str, args), "--checkpoint", str(ckpt), "--quiet"])


def test_output_folder_equal_to_input_never_overwrites_a_user_file(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "inplace"
    folder.mkdir()
    Image.fromarray(random_rgb(20, 24, 1)).save(folder / "scene.png")
    Image.fromarray(random_rgb(18, 16, 2)).save(folder / "scene_depth.png")  # the user's own file, same name
    user_file = (folder / "scene_depth.png").read_bytes()

    assert _predict(folder, "--output", folder, ckpt=tiny_checkpoint) == 0
    assert (folder / "scene_depth.png").read_bytes() == user_file
    out = capsys.readouterr().out
    assert out.startswith("done: 2  skipped: 0  failed: 0  ->  ")
    assert f"renamed: {folder / 'scene.png'} -> scene_png_depth.*" in out
    assert np.load(folder / "scene_png_depth.npy").shape == (20, 24)  # scene.png's map, under its new name
    assert np.load(folder / "scene_depth_depth.npy").shape == (18, 16)  # the user's file is an input too
    assert _summary(folder)["renamed"] == {str(folder / "scene.png"): "scene_png"}

    # A second run over the same folder must not take its own outputs (4 PNGs) as new inputs.
    before = _hashes(folder)
    assert _predict(folder, "--output", folder, "--skip-existing", ckpt=tiny_checkpoint) == 0
    out = capsys.readouterr().out
    assert out.startswith("done: 0  skipped: 2  failed: 0  ignored: 4  ->  ")
    after = _hashes(folder)
    assert {k: v for k, v in after.items() if k != "predict_summary.json"} == {
        k: v for k, v in before.items() if k != "predict_summary.json"
    }
    ignored = _summary(folder)["ignored"]
    assert sorted(os.path.basename(k) for k in ignored) == [
        "scene_depth_depth.png",
        "scene_depth_depth_colored.png",
        "scene_png_depth.png",
        "scene_png_depth_colored.png",
    ]
    assert set(ignored.values()) == {"written by apdepth (an earlier run's output), not an input"}


@pytest.mark.parametrize("as_glob", [False, True])
def test_output_tree_inside_the_input_is_never_read(tmp_path, tiny_checkpoint, as_glob):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(random_rgb(16, 16, 1)).save(src / "a.png")
    Image.fromarray(random_rgb(16, 20, 2)).save(src / "sub" / "b.png")
    out = src / "depth"
    spec = str(src / "**" / "*.png") if as_glob else str(src)
    for _ in range(2):  # the second run finds the first run's outputs under photos/depth
        assert _predict(spec, "--output", out, ckpt=tiny_checkpoint) == 0
        summary = _summary(out)
        assert sorted(os.path.basename(p) for p in summary["done"]) == ["a.png", "b.png"]
    assert summary["ignored"] == {str(out): "the output folder: never read as input"}


def test_symlink_loop_and_links_give_each_file_once(tmp_path, tiny_checkpoint, capsys):
    src = tmp_path / "in"
    (src / "loop").mkdir(parents=True)
    Image.fromarray(random_rgb(16, 16, 1)).save(src / "a.png")
    Image.fromarray(random_rgb(16, 20, 2)).save(src / "loop" / "b.png")
    os.symlink("..", src / "loop" / "up")  # in/loop/up -> in: an endless tree for a naive walk
    os.symlink("a.png", src / "same.png")  # a second name for a.png
    for spec in (str(src / "**" / "*.png"), str(src)):
        out = tmp_path / ("o_glob" if "*" in spec else "o_dir")
        assert _predict(spec, "--output", out, ckpt=tiny_checkpoint) == 0
        summary = _summary(out)
        assert sorted(summary["done"]) == [str(src / "a.png"), str(src / "loop" / "b.png")]
        assert summary["ignored"] == {
            str(src / "loop" / "up"): "folder already visited through another path (symlink loop or second link)",
            str(src / "same.png"): f"same file as {src / 'a.png'}",
        }
        assert "done: 2  skipped: 0  failed: 0  ignored: 2" in capsys.readouterr().out


def test_name_collision_gets_distinct_outputs_instead_of_aborting(tmp_path, tiny_checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(random_rgb(16, 24, 1)).save(src / "a.jpg")
    Image.fromarray(random_rgb(20, 20, 2)).save(src / "a.png")
    Image.fromarray(random_rgb(12, 12, 3)).save(src / "b.png")
    out = tmp_path / "out"
    assert _predict(src, "--output", out, ckpt=tiny_checkpoint) == 0
    assert np.load(out / "a_jpg_depth.npy").shape == (16, 24)
    assert np.load(out / "a_png_depth.npy").shape == (20, 20)
    assert np.load(out / "b_depth.npy").shape == (12, 12) and not (out / "a_depth.npy").exists()
    assert _summary(out)["renamed"] == {str(src / "a.jpg"): "a_jpg", str(src / "a.png"): "a_png"}
    assert "done: 3  skipped: 0  failed: 0" in capsys.readouterr().out
    # the renaming is stable, so --skip-existing resumes it
    assert _predict(src, "--output", out, "--skip-existing", ckpt=tiny_checkpoint) == 0
    assert "done: 0  skipped: 3  failed: 0" in capsys.readouterr().out


def test_failed_names_are_kept_whole_and_stderr_agrees_with_the_summary(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "bad.png").write_text("not an image")
    out = tmp_path / "out"
    missing, windows = "missing:dir/x.jpg", r"C:\photos\y.jpg"
    assert _predict(missing, windows, tmp_path / "dir" / "bad.png", "--output", out, ckpt=tiny_checkpoint) == 1
    failed = _summary(out)["failed"]
    assert failed == {
        missing: "no such file or folder",
        windows: "no such file or folder",
        str(tmp_path / "dir" / "bad.png"): "not a recognised image format",
    }
    captured = capsys.readouterr()
    assert f"failed: {tmp_path / 'dir' / 'bad.png'}: not a recognised image format" in captured.err
    assert "skipped" not in captured.err


def test_unwritable_output_fails_before_the_model_loads(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    from apdepth.pipeline import ApDepthPipeline

    def no_load(*a, **k):
        raise AssertionError("the model must not be loaded for an unwritable --output")

    monkeypatch.setattr(ApDepthPipeline, "from_pretrained", no_load)
    Image.fromarray(random_rgb(16, 16)).save(tmp_path / "x.png")
    (tmp_path / "file").write_text("a file, not a folder")
    assert _predict(tmp_path / "x.png", "--output", tmp_path / "file" / "out", ckpt=tiny_checkpoint) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write to --output {tmp_path / 'file' / 'out'}: Not a directory\n"


def test_full_disk_stops_with_one_line_and_a_summary(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    import apdepth.image_io as image_io
    import apdepth.writer as writer

    for i in range(3):
        Image.fromarray(random_rgb(16, 16, i)).save(tmp_path / f"x{i}.png")
    calls = []

    def full_disk(path, array):
        calls.append(path)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer, "write_bytes", full_disk)  # every depth output goes through it
    out = tmp_path / "out"
    assert _predict(*(tmp_path / f"x{i}.png" for i in range(3)), "--output", out, ckpt=tiny_checkpoint) == 1
    captured = capsys.readouterr()
    assert captured.err == f"error: run stopped: cannot write to {out}: No space left on device\n"
    summary = _summary(out)
    assert summary["done"] == [] and summary["stopped"] == f"cannot write to {out}: No space left on device"
    # Writes run in a pool of threads: one already running when the first ENOSPC came may fail the same way;
    # no write starts after it, and every other input is listed as not processed.
    reasons = [summary["failed"][str(tmp_path / f"x{i}.png")] for i in range(3)]
    assert reasons[0] == "cannot write its outputs: No space left on device"
    assert reasons.count("cannot write its outputs: No space left on device") == len(calls)
    assert set(reasons[len(calls) :]) <= {"not processed: the run stopped (output not writable)"}
    assert captured.out.startswith("done: 0  skipped: 0  failed: 3")

    # not even the summary fits: the printed summary stands, one error line says so
    def no_summary(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(image_io, "atomic_write", no_summary)
    assert _predict(tmp_path / "x0.png", "--output", tmp_path / "out2", ckpt=tiny_checkpoint) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("done: 0  skipped: 0  failed: 1")
    assert captured.err.splitlines() == [
        f"error: cannot write to {tmp_path / 'out2'}: No space left on device; predict_summary.json not written "
        "(the lines above are the summary)"
    ]
