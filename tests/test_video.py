"""Video: decoding/encoding round trips, rotation and VFR, bad files, co-alignment exactness, predict on clips."""

from __future__ import annotations

import json

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("cv2")

from apdepth.cli import main  # noqa: E402
from apdepth.temporal import CoAligner, solve_coalignment  # noqa: E402
from apdepth.video import StackWriter, VideoReadError, VideoSource, VideoWriter, read_video  # noqa: E402


def moving_frames(n: int = 12, h: int = 48, w: int = 64) -> np.ndarray:
    """A textured pattern translating 2 px per frame, plus a frame-index ramp: (n, h, w, 3) uint8."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(n):
        x = xx + 2 * t
        r = 128 + 100 * np.sin(x / 5.0) * np.cos(yy / 7.0)
        g = 128 + 100 * np.cos(x / 9.0 + yy / 11.0)
        b = np.full_like(r, 10 + 15 * t)
        out.append(np.clip(np.dstack([r, g, b]), 0, 255).astype(np.uint8))
    return np.stack(out)


def write_clip(path, frames, fps=24.0, times=None, rotation=None):
    with VideoWriter(path, fps) as vw:
        for k, f in enumerate(frames):
            vw.write(f, None if times is None else times[k])
    if rotation is not None:  # re-mux with a display matrix
        src = av.open(str(path))
        dst_path = path.with_name("rot_" + path.name)
        dst = av.open(str(dst_path), "w")
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        s_out.set_display_rotation(rotation)
        for pkt in src.demux(s_in):
            if pkt.dts is None:
                continue
            pkt.stream = s_out
            dst.mux(pkt)
        dst.close()
        src.close()
        return dst_path
    return path


def test_round_trip_frame_count_size_fps(tmp_path):
    frames = moving_frames(12, 48, 64)
    clip = write_clip(tmp_path / "clip.mp4", frames, fps=24.0)
    got, times, info = read_video(clip)
    assert got.shape == (12, 48, 64, 3) and got.dtype == np.uint8
    assert info.fps == pytest.approx(24.0) and (info.width, info.height) == (64, 48) and info.num_frames == 12
    np.testing.assert_allclose(times, np.arange(12) / 24.0, atol=1e-4)
    # H.264 with 4:2:0 chroma is lossy on this busy pattern, but close, and the frames keep their order
    assert np.abs(got.astype(float) - frames).mean() < 8.0
    np.testing.assert_allclose(got[..., 2].mean(axis=(1, 2)), frames[..., 2].mean(axis=(1, 2)), atol=4.0)


def test_odd_size_is_padded_and_vfr_timing_kept(tmp_path):
    frames = moving_frames(6, 33, 41)
    times = [0.0, 0.04, 0.1, 0.12, 0.3, 0.31]
    clip = write_clip(tmp_path / "vfr.mp4", frames, times=times)
    got, t, info = read_video(clip)
    assert got.shape == (6, 34, 42, 3)  # one replicated row and column for 4:2:0 chroma
    np.testing.assert_allclose(t, times, atol=1e-4)
    assert info.fps == pytest.approx(6 / 0.31 * (0.31 / 0.31), rel=0.5)  # average rate, not a fixed 24


@pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
    reason="writing a display matrix (the fixture) needs PyAV >= 18; reading it works from the floor, 14.1",
)
def test_rotation_metadata_is_applied(tmp_path):
    frames = np.zeros((3, 32, 48, 3), np.uint8)
    frames[:, :8, :8] = 255  # a white block in the top-left corner of the stored frame
    clip = write_clip(tmp_path / "c.mp4", frames, rotation=90)
    got, _, info = read_video(clip)
    assert info.rotation == 90 and (info.width, info.height) == (32, 48)
    assert got.shape == (3, 48, 32, 3)
    # 90 degrees counter-clockwise: the stored top-left corner ends up bottom-left
    assert got[0, -8:, :8].mean() > 200 and got[0, :8, :8].mean() < 50


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"this is not a video at all" * 40, "not a readable video"),
    ],
)
def test_bad_video_files_fail_with_one_clear_error(tmp_path, content, reason):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(VideoReadError, match=reason) as info:
        VideoSource(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_truncated_and_audio_only_files(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(12))
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])  # moov atom at the end is lost: unreadable
    with pytest.raises(VideoReadError, match="cut.mp4"):
        read_video(cut)
    audio = tmp_path / "tone.m4a"
    with av.open(str(audio), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(VideoReadError, match="no video stream"):
        VideoSource(audio)


def test_stack_writer_npy_and_npz(tmp_path):
    data = np.random.default_rng(0).random((5, 7, 9)).astype(np.float32)
    for name in ("s.npy", "s.npz"):
        with StackWriter(tmp_path / name) as sw:
            for d in data:
                sw.write(d)
        loaded = np.load(tmp_path / name)
        arr = loaded if name.endswith(".npy") else loaded["depth"]
        np.testing.assert_array_equal(arr, data)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def _affine_residual(out: np.ndarray, truth: np.ndarray) -> float:
    """Largest error after ONE least-squares affine map of the whole clip onto the truth."""
    A = np.stack([out.ravel(), np.ones(out.size)], 1)
    coef, *_ = np.linalg.lstsq(A, truth.ravel(), rcond=None)
    return float(np.abs(A @ coef - truth.ravel()).max())


@pytest.mark.parametrize("dense_limit", [4000, 0])  # direct solve and conjugate gradients
def test_coalignment_recovers_known_per_frame_scale_shift_exactly(dense_limit):
    rng = np.random.default_rng(0)
    T, H, W = 40, 40, 56
    yy, xx = np.mgrid[0:H, 0:W]
    truth = np.stack([1.0 + 2.0 * yy / H + 0.5 * np.sin(xx / 6.0) for _ in range(T)])
    for t in range(T):  # a moving object whose depth follows no affine law: must be ignored
        truth[t, 8:22, t : t + 12] = 1.2 + rng.random()
    s, b = rng.uniform(0.3, 3.0, T), rng.uniform(-1.0, 1.0, T)
    pred = s[:, None, None] * truth + b[:, None, None]
    pred = (pred - pred.min()) / (pred.max() - pred.min()) * 0.9 + 0.05  # inside the model's (0, 1)
    assert _affine_residual(pred, truth) > 0.3  # per-frame scale/shift really differ
    al = CoAligner(flow=None, gaps=(1, 2, 4, 8))
    for d in pred:
        al.add_frame(d)
    p = al._pairs
    a, c = solve_coalignment(
        T,
        np.concatenate(p.i),
        np.concatenate(p.j),
        np.concatenate(p.x),
        np.concatenate(p.y),
        level=np.asarray(al.level),
        spread=np.asarray(al.spread),
        dense_limit=dense_limit,
    )
    aligned = a[:, None, None] * pred + c[:, None, None]
    assert _affine_residual(aligned, truth) < 1e-6
    # the recovered per-frame scales are the true ones up to one common factor
    ratio = a / (1.0 / s)
    np.testing.assert_allclose(ratio / ratio[0], 1.0, rtol=1e-6)


def test_coalignment_memory_stays_within_its_budget_on_a_long_clip():
    rng = np.random.default_rng(0)
    T, H, W = 300, 24, 32
    yy, xx = np.mgrid[0:H, 0:W]
    truth = 1.0 + 2.0 * yy / H + 0.5 * np.sin(xx / 6.0)
    s, b = rng.uniform(0.5, 2.0, T), rng.uniform(-0.5, 0.5, T)
    pred = s[:, None, None] * truth + b[:, None, None]
    pred = (pred - pred.min()) / (pred.max() - pred.min()) * 0.9 + 0.05
    al = CoAligner(flow=None, gaps=(1, 2, 4, 8, 16), samples_per_pair=500, max_samples=20_000)
    stored = []
    for d in pred:
        al.add_frame(d)
        stored.append(sum(x.size for x in al._pairs.x))
    # 300 frames x 5 pairs x 500 samples would be 745,000; the budget holds all along (each pair keeps >= 8)
    assert max(stored) <= 20_000 + 500 and min(x.size for x in al._pairs.x) >= 8
    assert stored[7] == 17 * 500  # nothing is thinned before the budget is reached (17 pairs by frame 7)
    a, c = al.solve()
    aligned = a[:, None, None] * pred + c[:, None, None]
    assert _affine_residual(aligned, np.broadcast_to(truth, pred.shape)) < 1e-6  # exact data: still exact
    with pytest.raises(ValueError, match="max_samples"):
        CoAligner(flow=None, max_samples=10)


def test_coalignment_with_flow_on_a_panning_clip():
    frames = moving_frames(16, 48, 64)
    rng = np.random.default_rng(1)
    truth = []
    yy, xx = np.mgrid[0:48, 0:64]
    for t in range(16):
        truth.append(0.3 + 0.4 * yy / 48 + 0.1 * np.sin((xx + 2 * t) / 5.0) * np.cos(yy / 7.0))
    truth = np.stack(truth)
    s, b = rng.uniform(0.6, 1.5, 16), rng.uniform(-0.1, 0.1, 16)
    pred = s[:, None, None] * truth + b[:, None, None]
    import cv2

    al = CoAligner(flow="dis", gaps=(1, 2, 4))
    for f, d in zip(frames, pred):
        al.add_frame(d, cv2.cvtColor(f, cv2.COLOR_RGB2GRAY))
    a, c = al.solve()
    aligned = a[:, None, None] * pred + c[:, None, None]
    # sub-pixel flow and bilinear sampling are not exact: close, and far better than per frame
    assert _affine_residual(aligned[:, 4:-4, 4:-12], truth[:, 4:-4, 4:-12]) < 0.1 * _affine_residual(pred, truth)


def test_predict_video_python_api(tiny_pipeline):
    frames = moving_frames(10, 40, 56)
    out = tiny_pipeline.predict_video(frames, processing_resolution=32, batch_size=4, fps=12)
    assert out.depth.shape == (10, 40, 56) and out.depth.dtype == np.float32
    assert 0.0 <= out.depth.min() and out.depth.max() <= 1.0
    np.testing.assert_allclose(out.times, np.arange(10) / 12)
    naive = tiny_pipeline.predict_video(frames, processing_resolution=32, batch_size=4, consistent=False)
    single = tiny_pipeline(frames[3], processing_resolution=32).depth[0]
    np.testing.assert_allclose(naive.depth[3], single, atol=1e-4)  # naive = the image pipeline frame by frame
    # the co-alignment step alone, on the same per-frame predictions, gives the same clip
    from apdepth.video_depth import coalign_clip

    raw = tiny_pipeline(list(frames), processing_resolution=32, match_input_resolution=False, batch_size=4).depth
    np.testing.assert_allclose(coalign_clip(raw, frames).depth, out.depth, atol=1e-4)


def test_predict_cli_clip(tmp_path, tiny_checkpoint, capsys):
    clip = write_clip(tmp_path / "walk.mp4", moving_frames(10, 48, 64), fps=10.0)
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".walk.k1l2.spill.raw", out / ".walk_depth.x9y8.tmp.mp4", out / ".walk_depth.q7.stack.raw"]
    for f in stale:  # what a killed run leaves behind
        f.write_bytes(b"x")
    (out / ".other.k1l2.spill.raw").write_bytes(b"x")  # another clip's: not ours to remove
    frames_dir = out / "walk_depth_frames"
    frames_dir.mkdir()
    (frames_dir / ".000003.png.a1b2.tmp").write_bytes(b"x")  # a frame PNG cut off by the kill
    (frames_dir / ".notes.txt.a1b2.tmp").write_bytes(b"x")  # not a frame: left alone
    code = main(
        [
            "predict",
            str(clip),
            "--output",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--processing-res",
            "32",
            "--batch-size",
            "4",
            "--side-by-side",
            "--png-frames",
            "--quiet",
        ]
    )
    assert code == 0
    stack = np.load(out / "walk_depth.npy")
    assert stack.shape == (10, 48, 64) and stack.dtype == np.float32 and 0 <= stack.min() and stack.max() <= 1
    depth_video, times, info = read_video(out / "walk_depth.mp4")
    assert depth_video.shape == (10, 48, 64, 3) and info.fps == pytest.approx(10.0)
    sbs, _, _ = read_video(out / "walk_depth_sbs.mp4")
    assert sbs.shape == (10, 48, 128, 3)
    from apdepth.image_io import read_depth_png16

    np.testing.assert_allclose(
        read_depth_png16(out / "walk_depth_frames" / "000004.png"), stack[4], atol=1 / 65535 + 1e-6
    )
    record = json.loads((out / "walk_video.json").read_text())
    assert record["frames"] == 10 and record["consistent"] and len(record["scale"]) == 10
    assert "10 frames 64x48" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob(".*")) == [".other.k1l2.spill.raw"]
    assert sorted(p.name for p in frames_dir.glob(".*")) == [".notes.txt.a1b2.tmp"]
    assert len(list(frames_dir.glob("*.png"))) == 10


def test_predict_cli_frame_folder_and_bad_clip(tmp_path, tiny_checkpoint, capsys):
    from PIL import Image

    folder = tmp_path / "shots"
    folder.mkdir()
    for k, f in enumerate(moving_frames(5, 32, 40)):
        Image.fromarray(f).save(folder / f"f{k + 1}.png")  # f1..f5: natural order, not f1, f10, f2
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 500)
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(folder),
            str(bad),
            "--video",
            "--fps",
            "5",
            "--output",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--processing-res",
            "32",
            "--stack",
            "npz",
            "--quiet",
        ]
    )
    assert code == 1
    assert np.load(out / "shots_depth.npz")["depth"].shape == (5, 32, 40)
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["done"] == [str(folder)] and "not a readable video" in summary["failed"][str(bad)]
    assert not (out / "broken_depth.mp4").exists()
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "Traceback" not in err


def test_synth_video_sequences_reproject_exactly(tmp_path):
    from apdepth.data.synthetic.video import reproject

    out = tmp_path / "seqs"
    assert (
        main(
            [
                "synth",
                "--video",
                "--out",
                str(out),
                "--num",
                "2",
                "--frames",
                "5",
                "--size",
                "30x40",
                "--seed",
                "950000",
                "--trajectory",
                "walk",
                "--fps",
                "12",
            ]
        )
        == 0
    )
    assert (out / "sequences.txt").read_text().split() == ["00950000", "00950001"]
    seq = out / "00950000"
    meta = json.loads((seq / "meta.json").read_text())
    assert meta["trajectory"] == "walk" and meta["frames"] == 5 and meta["fps"] == 12
    gt = np.load(seq / "gt.npz")
    assert gt["depth"].shape == (5, 30, 40) and gt["valid"].shape == (5, 30, 40) and gt["poses"].shape == (5, 4, 4)
    frames, times, info = read_video(seq / "frames", fps=12)
    assert frames.shape == (5, 30, 40, 3) and info.fps == 12
    assert not np.allclose(gt["poses"][0], gt["poses"][-1])  # the camera moved
    # the exact GT of frame t, moved with the true poses, lands on frame t+1's GT
    for t in range(4):
        u, v, z, _ = reproject(gt["depth"][t], gt["K"], gt["poses"][t], gt["poses"][t + 1])
        ui, vi = np.round(u).astype(int), np.round(v).astype(int)
        ok = (ui >= 0) & (ui < 40) & (vi >= 0) & (vi < 30) & (z > 0)
        d1 = gt["depth"][t + 1][vi[ok], ui[ok]]
        assert np.median(np.abs(z[ok] - d1)[d1 > 0] / d1[d1 > 0]) < 0.01


def test_video_metrics_on_ground_truth_and_jitter(tmp_path):
    from apdepth.data.synthetic.video import render_sequence
    from apdepth.evaluation.video_metrics import video_metrics

    s = render_sequence(950002, 6, 30, 40, "indoor", "pan")
    g, v, K, P = s["depth"], s["valid"], s["intrinsics"], s["poses"]
    perfect = video_metrics(0.5 * g + 3.0, g, v, K, P)  # an affine image of GT: one alignment undoes it
    assert (
        perfect["abs_rel"] < 1e-6 and perfect["delta1"] == 1.0 and perfect["tae"] < 0.01 and perfect["flicker"] < 0.005
    )
    rng = np.random.default_rng(0)
    jitter = g * rng.uniform(0.8, 1.2, (6, 1, 1)) + rng.uniform(-0.3, 0.3, (6, 1, 1))
    seq = video_metrics(jitter, g, v, K, P)
    per_frame = video_metrics(jitter, g, v, K, P, per_frame_alignment=True)
    assert seq["tae"] > 5 * perfect["tae"] and seq["abs_rel"] > 0.02
    assert per_frame["abs_rel"] < 1e-6  # per-frame alignment hides exactly what one alignment per clip shows


def test_demo_video_core(tiny_pipeline, tmp_path):
    from apdepth.demo_video import process_clip

    clip = write_clip(tmp_path / "my clip.mp4", moving_frames(6, 32, 48), fps=6.0)
    res = process_clip(tiny_pipeline, clip, tmp_path / "out", processing_resolution=32)
    sbs, _, info = read_video(res["side_by_side"])
    assert sbs.shape == (6, 32, 96, 3) and info.fps == pytest.approx(6.0)
    assert np.load(res["stack"])["depth"].shape == (6, 32, 48)
    with pytest.raises(ValueError, match="up to 0.5 s"):
        process_clip(tiny_pipeline, clip, tmp_path / "out2", processing_resolution=32, max_seconds=0.5)
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"nope" * 100)
    with pytest.raises(ValueError, match="x.mp4"):
        process_clip(tiny_pipeline, bad, tmp_path / "out3")


def test_eval_synthetic_video(tmp_path, tiny_checkpoint, capsys):
    seqs = tmp_path / "seqs"
    assert (
        main(
            [
                "synth",
                "--video",
                "--out",
                str(seqs),
                "--num",
                "2",
                "--frames",
                "6",
                "--size",
                "24x32",
                "--seed",
                "950000",
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    args = [
        "eval",
        "--dataset",
        "synthetic-video",
        "--data-dir",
        str(seqs),
        "--output",
        str(out),
        "--checkpoint",
        str(tiny_checkpoint),
        "--processing-res",
        "32",
        "--no-progress",
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["method"], r["alignment"]): r for r in summary["rows"]}
    assert set(rows) == {
        ("naive", "per frame"),
        ("naive", "per sequence"),
        ("consistent", "per sequence"),
        ("consistent + smoothing", "per sequence"),
        ("ground truth", "-"),
    }
    assert (
        rows[("ground truth", "-")]["tae"] < 0.01
        and rows[("naive", "per sequence")]["tae"] > rows[("ground truth", "-")]["tae"]
    )
    assert summary["smoothing"] == "bidirectional" and summary["smoothing_strength"] == 0.95
    assert rows[("consistent + smoothing", "per sequence")]["tae"] < rows[("consistent", "per sequence")]["tae"]
    assert np.load(out / "raw" / "00950000.npy").shape == (6, 24, 32)
    assert "| consistent | per sequence |" in capsys.readouterr().out
    assert (out / "per_sequence.csv").read_text().count("\n") == 1 + 2 * 5
    # rescoring reuses the cached per-frame predictions: same numbers; another model's cache is refused
    assert main(args) == 0
    assert json.loads((out / "summary.json").read_text())["rows"] == summary["rows"]
    assert main(args[:-3] + ["--no-progress"]) == 2  # another processing resolution
    assert "use another output folder" in capsys.readouterr().err
    assert main(["eval", "--dataset", "synthetic-video", "--data-dir", str(tmp_path), "--output", str(out)]) == 2
    assert "no sequences.txt" in capsys.readouterr().err


def test_rerun_into_the_input_folder_skips_earlier_outputs(tmp_path, tiny_checkpoint, capsys):
    """``apdepth predict clips/*.mp4 --output clips`` run twice: the second glob also matches the first run's
    depth videos, which were read as new clips (``pan_depth_depth.mp4`` ...)."""
    write_clip(tmp_path / "pan.mp4", moving_frames(4, 32, 40))
    base = ["--output", str(tmp_path), "--checkpoint", str(tiny_checkpoint), "--processing-res", "32", "--quiet"]
    assert main(["predict", str(tmp_path / "pan.mp4"), "--side-by-side", *base]) == 0
    again = sorted(str(p) for p in tmp_path.glob("*.mp4"))
    assert len(again) == 3  # pan, pan_depth, pan_depth_sbs
    assert main(["predict", *again, "--side-by-side", *base]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["pan.mp4", "pan_depth.mp4", "pan_depth_sbs.mp4"]
    summary = json.loads((tmp_path / "predict_summary.json").read_text())
    assert summary["done"] == [str(tmp_path / "pan.mp4")] and not summary["failed"]
    assert sorted(summary["ignored"]) == again[1:]
    assert all("an earlier run's output" in why for why in summary["ignored"].values())
    assert "Traceback" not in capsys.readouterr().err


def test_non_finite_float_frames_are_refused(tiny_pipeline):
    """Float frames with NaN/inf passed the [0, 1] check (nanmin/nanmax skip NaN) and were cast to arbitrary
    uint8 values, so the depth of an undefined image came back without a word."""
    frames = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32)
    for bad in (np.nan, np.inf):
        broken = frames.copy()
        broken[1, 3:6, 3:6] = bad
        with pytest.raises(ValueError, match="frame 1: float frames must be finite"):
            tiny_pipeline.predict_video(broken, processing_resolution=32)
