"""Camera travel along the optical axis, from optical flow: the rigid-motion fit, the path, and the video output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apdepth.temporal import axial_travel, travel_path


def rigid_flow(pixel, Z, t, w, focal, size):
    """The exact flow (pixels) of points at distance ``Z`` for a camera rotation ``w`` (rotation vector; points
    turn by ``-w``) followed by a translation ``t``."""
    from apdepth.temporal import _rotation

    h, wd = size
    rays = np.stack([(pixel[:, 0] - (wd - 1) / 2) / focal, (pixel[:, 1] - (h - 1) / 2) / focal, np.ones(len(Z))], 1)
    X = (rays * Z[:, None]) @ _rotation(-w).T - t
    return (X[:, :2] / X[:, 2:] - rays[:, :2]) * focal


def test_axial_travel_is_exact_on_rigid_motion_in_affine_units():
    rng = np.random.default_rng(0)
    size, focal = (96, 128), 110.0
    pixel = np.stack([rng.uniform(0, 127, 3000), rng.uniform(0, 95, 3000)], 1)
    Z = rng.uniform(1.0, 6.0, 3000)
    t, w = np.array([0.02, -0.01, 0.05]), np.array([0.03, -0.12, 0.01])  # a 7-degree turn
    flow = rigid_flow(pixel, Z, t, w, focal, size)
    # depth in affine units: 0.25 per metre, zero distance at 0.1; the travel comes back in those units
    depth = 0.25 * Z + 0.1
    assert axial_travel(pixel, flow, depth, size, focal, zero=0.1) == pytest.approx(0.25 * 0.05, rel=1e-6)
    # a backward move is negative
    back = rigid_flow(pixel, Z, -t, w, focal, size)
    assert axial_travel(pixel, back, depth, size, focal, zero=0.1) == pytest.approx(-0.25 * 0.05, rel=1e-6)
    # 10% of the samples on a moving object (random flow) lose their weight
    bad = rng.random(3000) < 0.1
    noisy = flow.copy()
    noisy[bad] += rng.normal(0, 3.0, (bad.sum(), 2))
    assert axial_travel(pixel, noisy, depth, size, focal, zero=0.1) == pytest.approx(0.25 * 0.05, rel=0.03)
    # nothing usable: all depths at or below the zero point
    assert axial_travel(pixel, flow, np.full(3000, 0.1), size, focal, zero=0.1) is None


def test_axial_travel_on_exact_reprojection_of_a_rendered_dolly_and_pan():
    from apdepth.data.synthetic.video import render_sequence, reproject

    for traj, seed in (("dolly", 950001), ("pan", 950002)):
        s = render_sequence(seed, 9, 60, 80, "mixed", traj)
        g, K, P = s["depth"], s["intrinsics"], s["poses"]
        # frames 3 -> 5 of 9: 0.2 m here, about 4% of the median depth (the model is first order in travel / depth)
        u, v, _, used = reproject(g[3], K, P[3], P[5])
        vv, uu = np.mgrid[0:60, 0:80]
        pixel = np.stack([uu[used], vv[used]], 1).astype(np.float64)
        flow = np.stack([u - pixel[:, 0], v - pixel[:, 1]], 1)
        tz = axial_travel(pixel, flow, g[3][used], (60, 80), float(K[0, 0]))
        true = (np.linalg.inv(P[3]) @ P[5])[2, 3]  # camera 5's centre along camera 3's axis, metres
        if traj == "dolly":
            assert true > 0.1 and tz == pytest.approx(true, rel=0.1)
        else:
            assert true == 0.0 and abs(tz) < 0.005 * np.median(g[3][used])


def test_travel_path_recovers_pairwise_travel_and_drops_an_outlier():
    n = 40
    phi = 0.3 * (np.arange(n) / (n - 1)) ** 2  # an accelerating camera
    i = np.concatenate([np.arange(n - g) for g in (1, 2, 4, 8)])
    j = np.concatenate([np.arange(g, n) for g in (1, 2, 4, 8)])
    # consistent data and no smoothness prior: exact
    np.testing.assert_allclose(travel_path(n, i, j, phi[j] - phi[i], smoothness=0.0), phi, atol=1e-10)
    # a constant speed has no second differences: exact under any smoothness
    lin = 0.01 * np.arange(n)
    np.testing.assert_allclose(travel_path(n, i, j, lin[j] - lin[i], smoothness=100.0), lin, atol=1e-10)
    # one pair across a cut says nonsense: its weight drops to 0
    d = phi[j] - phi[i]
    d[5] += 0.5
    np.testing.assert_allclose(travel_path(n, i, j, d, smoothness=0.0), phi, atol=1e-8)
    # the same with estimation noise: the outlier still drops out (plain least squares moves frames 5-6 by ~0.06)
    noisy = d + np.random.default_rng(0).normal(0, 1e-4, d.size)
    assert np.abs(travel_path(n, i, j, noisy, smoothness=0.0) - phi).max() < 2e-4
    # long clips are solved in overlapping windows, joined exactly where the data agree
    n = 300
    phi = 0.5 * np.sin(np.arange(n) / 40.0)
    i = np.concatenate([np.arange(n - g) for g in (1, 2, 4)])
    j = np.concatenate([np.arange(g, n) for g in (1, 2, 4)])
    np.testing.assert_allclose(travel_path(n, i, j, phi[j] - phi[i], 0.0, window=64), phi - phi[0], atol=1e-9)
    # no pairs: no travel; bad inputs: clear errors
    assert not travel_path(5, np.zeros(0), np.zeros(0), np.zeros(0)).any()
    with pytest.raises(ValueError, match="one length"):
        travel_path(5, np.array([0]), np.array([1, 2]), np.array([0.1]))
    with pytest.raises(ValueError, match="out of range"):
        travel_path(5, np.array([0]), np.array([5]), np.array([0.1]))


def normalised_gt(s):
    """What a perfect affine-invariant model returns: each frame's true depth mapped to [0, 1] on its own."""
    raw = []
    for g, v in zip(s["depth"], s["valid"]):
        lo, hi = g[v].min(), g[v].max()
        raw.append(np.where(v, (g - lo) / (hi - lo), 1.0).astype(np.float32))
    return np.stack(raw)


def test_travel_correction_restores_a_dolly_and_leaves_a_pan_alone():
    pytest.importorskip("cv2")
    from apdepth.data.synthetic.video import render_sequence
    from apdepth.evaluation.video_metrics import video_metrics
    from apdepth.video_depth import coalign_clip

    s = render_sequence(950001, 16, 60, 80, "mixed", "dolly")
    raw = normalised_gt(s)
    args = (s["depth"], s["valid"], s["intrinsics"], s["poses"])
    frozen = coalign_clip(raw, s["rgb"], smoothing="none", travel_correction=False)
    moving = coalign_clip(raw, s["rgb"], smoothing="none", travel_correction=True)
    assert not frozen.stats["travel"].any()
    # the camera moves forward: the distance travelled, -travel / (hi - lo), grows frame after frame
    lo, hi = moving.clip_range
    dist = -moving.stats["travel"] / (hi - lo)
    assert dist[0] == 0.0 and np.all(np.diff(dist) > 0)
    np.testing.assert_allclose(moving.shift - frozen.shift, moving.stats["travel"], atol=1e-12)
    # per-frame normalisation froze every static depth; the correction lets them fall: TAE 0.0132 -> 0.0076 here
    tae_frozen = video_metrics(frozen.depth, *args)["tae"]
    tae_moving = video_metrics(moving.depth, *args)["tae"]
    assert tae_moving < 0.75 * tae_frozen
    # the same with the temporal filter, whose carried history follows the travel
    _, smooth_frozen = coalign_clip(raw, s["rgb"], travel_correction=False, output_smoothed=True)
    _, smooth_moving = coalign_clip(raw, s["rgb"], travel_correction=True, output_smoothed=True)
    assert video_metrics(smooth_moving, *args)["tae"] < 0.75 * video_metrics(smooth_frozen, *args)["tae"]

    # a pan has no travel to find: the output hardly changes
    s = render_sequence(950002, 16, 60, 80, "mixed", "pan")
    raw = normalised_gt(s)
    pan = coalign_clip(raw, s["rgb"], smoothing="none", travel_correction=True)
    lo, hi = pan.clip_range
    assert np.abs(pan.stats["travel"]).max() / (hi - lo) < 0.03
    # a static camera (pixels paired with themselves) has no flow to measure travel with
    static = coalign_clip(raw, s["rgb"], flow=None, smoothing="none")
    assert not static.stats["travel"].any()


def test_cli_records_travel_and_refuses_meaningless_flags(tmp_path, tiny_checkpoint, capsys):
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from apdepth.cli import main
    from apdepth.data.synthetic.video import render_sequence
    from apdepth.video import VideoWriter

    s = render_sequence(950001, 8, 48, 64, "mixed", "dolly")
    clip = tmp_path / "dolly.mp4"
    with VideoWriter(clip, 12.0) as vw:
        for f in s["rgb"]:
            vw.write(f)
    base = ["predict", str(clip), "--checkpoint", str(tiny_checkpoint), "--processing-res", "64", "--quiet"]
    assert main(base + ["--output", str(tmp_path / "on")]) == 0
    rec = json.loads((tmp_path / "on" / "dolly_video.json").read_text())
    assert rec["travel_correction"] is True and len(rec["travel"]) == 8 and rec["travel"][0] == 0.0
    assert main(base + ["--output", str(tmp_path / "off"), "--no-travel-correction"]) == 0
    rec = json.loads((tmp_path / "off" / "dolly_video.json").read_text())
    assert rec["travel_correction"] is False and rec["travel"] == [0.0] * 8
    capsys.readouterr()
    assert main(base + ["--output", str(tmp_path / "x"), "--per-frame", "--no-travel-correction"]) == 2
    assert "--no-travel-correction has no effect with --per-frame" in capsys.readouterr().err
    assert main(base + ["--output", str(tmp_path / "x"), "--flow", "none", "--no-travel-correction"]) == 2
    assert "--no-travel-correction has no effect with --flow none" in capsys.readouterr().err
    # a clip-only option on image inputs is refused, not ignored
    img = tmp_path / "im.png"
    from PIL import Image

    Image.fromarray(s["rgb"][0]).save(img)
    assert main(["predict", str(img), "--output", str(tmp_path / "im"), "--no-travel-correction"]) == 2
    assert "--no-travel-correction" in capsys.readouterr().err
