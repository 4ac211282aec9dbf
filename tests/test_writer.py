"""The one writer: lossless fast PNGs, umask-respecting atomic files, stale temp files, non-finite depth,
the bounded writer pool."""

from __future__ import annotations

import io
import os
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apdepth import writer
from apdepth.visualize import colorize_depth
from apdepth.writer import (
    NonFiniteDepthError,
    WriterPool,
    atomic_write,
    colour_depth01,
    encode_png,
    remove_stale_temps,
    save_depth_outputs,
)


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im)


@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_round_trips_every_kind_exactly(level):
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 65536, (37, 23), dtype=np.uint16),
        np.array([[0, 65535, 1, 256], [65535, 0, 255, 257]], np.uint16),  # byte wrap-around of the Up filter
        rng.integers(0, 256, (19, 31), dtype=np.uint8),
        rng.integers(0, 256, (17, 29, 3), dtype=np.uint8),
        np.full((1, 1), 7, np.uint8),
    ]
    for a in arrays:
        for rle in (False, True):
            back = _decode(encode_png(a, level=level, rle=rle))
            assert back.shape == a.shape
            np.testing.assert_array_equal(back.astype(np.int64), a.astype(np.int64))


def test_png_text_chunks_are_read_back():
    with Image.open(io.BytesIO(encode_png(np.zeros((3, 4), np.uint16), text={"apdepth-output": "depth"}))) as im:
        assert im.info["apdepth-output"] == "depth" and im.mode.startswith("I")


def test_png_rejects_other_kinds():
    for bad in (
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.uint16),
        np.zeros((0, 4), np.uint8),
    ):
        with pytest.raises(ValueError):
            encode_png(bad)
    with pytest.raises(ValueError, match="level"):
        encode_png(np.zeros((2, 2), np.uint8), level=10)


def test_16bit_depth_png_is_smaller_than_pillows_default_on_smooth_depth():
    y, x = np.mgrid[0:192, 0:256].astype(np.float32)
    depth = (0.3 + 0.4 * np.sin(x / 40.0) * np.cos(y / 55.0) + 0.2 * y / 192).clip(0, 1)
    u16 = writer.to_uint16_png_array(depth)
    ours = encode_png(u16)
    buf = io.BytesIO()
    Image.fromarray(u16).save(buf, format="PNG")
    assert len(ours) < len(buf.getvalue())
    np.testing.assert_array_equal(_decode(ours), u16)


def test_colour_lookup_equals_the_visualiser():
    rng = np.random.default_rng(1)
    depth = rng.random((41, 37), dtype=np.float32)
    depth[0, :4] = [0.0, 1.0, np.nextafter(np.float32(1), np.float32(0)), 0.5]
    for cmap in ("Spectral", "viridis", "gray"):
        np.testing.assert_array_equal(colour_depth01(depth, cmap), colorize_depth(depth, cmap=cmap))
    depth[3, 3] = np.nan
    assert (colour_depth01(depth)[3, 3] == 0).all()
    with pytest.raises(ValueError, match="colour map"):
        colour_depth01(depth, "no-such-map")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a.bin") as fh:
            fh.write(b"x")
        with open(tmp_path / "plain.bin", "wb") as fh:  # what an ordinary open() gives
            fh.write(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)


def test_depth_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        paths = save_depth_outputs(tmp_path, "img", np.full((8, 9), 0.5, np.float32))
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [0o644] * 3


def test_stale_temps_of_the_given_outputs_are_removed_and_nothing_else(tmp_path):
    target = tmp_path / "img_depth.npy"
    stale = [tmp_path / ".img_depth.npy.k3j_x9a1.tmp", tmp_path / ".img_depth.npy.zz.tmp"]
    keep = [
        tmp_path / ".other_depth.npy.k3j_x9a1.tmp",
        tmp_path / ".img_depth.npy.k3j.tmp.keep",
        tmp_path / "img_depth.npy.k3j.tmp",
        tmp_path / ".img_depth.npy.a b.tmp",
        tmp_path / "user.tmp",
    ]
    for p in stale + keep:
        p.write_bytes(b"partial")
    removed = remove_stale_temps([target, tmp_path / "missing" / "x.png"])
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_a_killed_atomic_write_leaves_only_a_hidden_temp_that_matches(tmp_path):
    target = tmp_path / "d_depth.png"

    class Killed(BaseException):
        pass

    # simulate the state a kill -9 leaves: the temp file exists, the rename never happened
    orig = os.replace
    try:
        os.replace = lambda *a: (_ for _ in ()).throw(Killed())
        with pytest.raises(Killed):
            with atomic_write(target) as fh:
                fh.write(b"partial")
    finally:
        os.replace = orig
    assert not target.exists() and os.listdir(tmp_path) == []  # the error path cleans up itself
    leftover = tmp_path / f".{target.name}.abc_123.tmp"
    leftover.write_bytes(b"partial")
    assert writer.temp_pattern(target.name).match(leftover.name)
    assert remove_stale_temps([target]) == [leftover]


def test_non_finite_depth_writes_nothing_and_names_the_input(tmp_path):
    for bad in (np.nan, np.inf, -np.inf):
        depth = np.full((6, 7), 0.4, np.float32)
        depth[2, 3] = bad
        with pytest.raises(NonFiniteDepthError, match=r"^img: .*non-finite depth \(1 of 42 pixels"):
            save_depth_outputs(tmp_path, "img", depth)
    assert os.listdir(tmp_path) == []


def test_writer_pool_bounds_pending_jobs_and_routes_errors():
    results, lock = {}, threading.Lock()
    running, peak = [0], [0]

    def on_done(tag, result, err):
        with lock:
            results[tag] = (result, None if err is None else str(err))

    def job(k):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        if k == 3:
            raise OSError(28, "No space left on device")
        if k == 4:
            raise NonFiniteDepthError("x: non-finite")
        return k * k

    pool = WriterPool(threads=2, max_pending=3, on_done=on_done)
    submitted_at_full = []
    for k in range(10):
        pool.submit(k, job, k)
        submitted_at_full.append(pool._slots._value)  # free slots right after a submit
    pool.close()
    assert peak[0] <= 2 and min(submitted_at_full) >= 0
    assert results[2] == (4, None) and results[9] == (81, None)
    assert "No space left" in results[3][1] and "non-finite" in results[4][1]

    pool = WriterPool(threads=1, on_done=on_done)
    pool.submit("bug", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        pool.close()


def test_synth_writes_through_the_pool_cleans_stale_temps_and_respects_the_umask(tmp_path):
    from apdepth.data.synthetic_cli import write_dataset, write_sample

    root = tmp_path / "ds"
    (root / "rgb").mkdir(parents=True)
    stale = root / "rgb" / ".00000003.png.k9x_2.tmp"  # a write a kill -9 cut short
    stale.write_bytes(b"partial")
    old = os.umask(0o022)
    try:
        write_dataset(root, 4, 32, 40, seed=1, progress=False, skip_existing=True)
    finally:
        os.umask(old)
    assert not stale.exists()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == 4 * 4 + 2 and not [p for p in files if p.name.startswith(".")]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
    # the pooled writes are the same bytes as writing one sample at a time
    write_sample(tmp_path / "one", 3, 32, 40, "mixed")
    for sub in ("rgb/00000003.png", "depth/00000003.png", "mask/00000003.png", "intrinsics/00000003.json"):
        assert (root / sub).read_bytes() == (tmp_path / "one" / sub).read_bytes(), sub


def test_output_format_table_drives_paths_and_files(tmp_path):
    """One table of per-image outputs: paths, written files and their content follow DEPTH_OUTPUT_FORMATS."""
    from apdepth.predict import output_paths
    from apdepth.writer import DEPTH_OUTPUT_FORMATS, depth_output_paths, save_depth_outputs

    depth = np.linspace(0, 1, 12 * 16, dtype=np.float32).reshape(12, 16)
    suffixes = [f.suffix for f in DEPTH_OUTPUT_FORMATS]
    assert suffixes == ["_depth.npy", "_depth.png", "_depth_colored.png"]
    written = save_depth_outputs(tmp_path, "a", depth)
    assert [p.name for p in written] == [f"a{s}" for s in suffixes]
    assert written == depth_output_paths(tmp_path, "a")
    np.testing.assert_array_equal(np.load(written[0]), depth)
    with Image.open(written[1]) as im:
        assert np.array_equal(np.asarray(im).astype(np.int64), np.round(depth * 65535).astype(np.int64))
    # no colour map: the coloured format is left out everywhere
    assert [p.name for p in save_depth_outputs(tmp_path, "b", depth, color_map=None)] == ["b_depth.npy", "b_depth.png"]
    assert not (tmp_path / "b_depth_colored.png").exists()
    # predict's paths are the table's, plus the optional point cloud
    rel = Path("sub") / "c"
    assert output_paths(tmp_path, rel, "Spectral", save_ply=True) == [
        *depth_output_paths(tmp_path / "sub", "c"),
        tmp_path / "sub" / "c.ply",
    ]
