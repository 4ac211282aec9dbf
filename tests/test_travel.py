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


def test_travel_path_refuses_bad_input_and_joins_long_clips_continuously():
    one = (np.array([0, 1]), np.array([1, 2]))
    for kwargs, message in (
        (dict(travel=np.array([0.1, np.nan])), "finite"),
        (dict(travel=np.array([0.1, np.inf])), "finite"),
        (dict(i=np.array([0, 2])), "two different frames"),
        (dict(i=np.array([0.5, 1.0])), "integers"),
        (dict(smoothness=float("nan")), "non-negative"),
        (dict(smoothness=-1.0), "non-negative"),
        (dict(window=1), "window"),
        (dict(num_frames=-1), "num_frames"),
    ):
        args = dict(num_frames=5, i=one[0], j=one[1], travel=np.array([0.1, 0.1])) | kwargs
        with pytest.raises(ValueError, match=message):
            travel_path(**args)
    assert travel_path(0, np.zeros(0, int), np.zeros(0, int), np.zeros(0)).shape == (0,)

    # 1,500 frames (two windows of 1,024 overlapping by 512) with estimation noise and a cut in the middle: the
    # join used to shift the path by one step of ~4e-4 (31x the typical second difference); it is blended now
    rng = np.random.default_rng(1)
    n = 1500
    phi = 0.002 * np.arange(n) + 0.05 * np.sin(np.arange(n) / 50.0)
    i = np.concatenate([np.arange(n - g) for g in (1, 2, 4, 8, 16)])
    j = np.concatenate([np.arange(g, n) for g in (1, 2, 4, 8, 16)])
    travel = phi[j] - phi[i] + rng.normal(0, 2e-4, i.size)
    cross = (i < 757) & (j >= 757)
    travel[cross] += rng.normal(0, 0.05, cross.sum())
    path = travel_path(n, i, j, travel)
    second = np.abs(np.diff(path, 2))
    assert second.max() < 3 * np.median(second)
    assert np.abs(path - phi).max() < 0.01


def test_travel_path_stays_put_across_a_cut():
    # two shots, no pair across the cut after frame 9: each shot keeps its own exact path, the second continues
    # where the first ended (no jump, no smooth bend forced across the cut)
    n = 20
    phi = np.r_[0.01 * np.arange(10), 0.5 - 0.02 * np.arange(10)]
    pairs = [(a, a + g) for g in (1, 2, 4) for a in range(n - g) if (a < 10) == (a + g < 10)]
    i, j = np.array(pairs).T
    path = travel_path(n, i, j, phi[j] - phi[i], smoothness=100.0)
    np.testing.assert_allclose(path[:10], phi[:10], atol=1e-9)
    np.testing.assert_allclose(path[10:], 0.09 - 0.02 * np.arange(10), atol=1e-9)
    # frames with no pair at all at the start keep the first frame's position
    later = travel_path(8, np.array([3, 4, 5]), np.array([4, 5, 6]), np.full(3, 0.1), smoothness=0.0)
    np.testing.assert_allclose(later, [0, 0, 0, 0, 0.1, 0.2, 0.3, 0.3], atol=1e-9)


def test_axial_travel_refuses_bad_focal_and_skips_non_finite_samples():
    rng = np.random.default_rng(0)
    size, focal = (48, 64), 55.0
    pixel = np.stack([rng.uniform(0, 63, 400), rng.uniform(0, 47, 400)], 1)
    Z = rng.uniform(1.0, 6.0, 400)
    flow = rigid_flow(pixel, Z, np.array([0.0, 0.0, 0.1]), np.zeros(3), focal, size)
    clean = axial_travel(pixel, flow, Z, size, focal)
    assert clean == pytest.approx(0.1, rel=1e-6)
    for bad in (0.0, -55.0, float("inf"), float("nan"), None):
        with pytest.raises(ValueError, match="focal"):
            axial_travel(pixel, flow, Z, size, bad)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        axial_travel(pixel[:, 0], flow, Z, size, focal)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        axial_travel(pixel[:100], flow, Z, size, focal)
    # NaN/inf in a sample's position, flow or depth: that sample is left out, the estimate stays exact
    p2, f2, z2 = pixel.copy(), flow.copy(), Z.copy()
    p2[0, 0], f2[1, 1], z2[2], z2[3] = np.nan, np.inf, np.inf, np.nan
    assert axial_travel(p2, f2, z2, size, focal) == pytest.approx(0.1, rel=1e-6)


def test_coalignment_keeps_each_side_of_a_cut_and_its_travel():
    """A hard cut (a backward dolly, then a pan of another scene): the pan used to come out flat (scale 0,
    every pixel one value) and the dolly's travel was lost (the path bent to fit pairs across the cut)."""
    pytest.importorskip("cv2")
    from apdepth.data.synthetic.video import render_sequence
    from apdepth.temporal import CoAligner
    from apdepth.video_depth import _gray, coalign_clip

    dolly = render_sequence(950005, 16, 60, 80, "mixed", "dolly")  # one of the backward dollies
    pan = render_sequence(950002, 16, 60, 80, "mixed", "pan")
    raw = np.concatenate([normalised_gt(dolly), normalised_gt(pan)])
    rgb = np.concatenate([dolly["rgb"], pan["rgb"]])
    aligner = CoAligner()
    for d, f in zip(raw, rgb):
        aligner.add_frame(d, _gray(f, d.shape))
    assert aligner.cuts == [16]
    assert all((i < 16) == (j < 16) for i, j in zip(*(np.concatenate(x) for x in (aligner._pairs.i, aligner._pairs.j))))
    assert {(15, 16), (0, 16), (15, 31)} <= set(aligner.dropped_pairs)

    out = coalign_clip(raw, rgb, smoothing="none")
    assert np.isfinite(out.depth).all() and out.depth.min() >= 0.0 and out.depth.max() <= 1.0
    assert out.scale.min() > 0.5  # no shot shrinks towards a constant
    assert out.depth[16:].std(axis=(1, 2)).min() > 0.1
    # the dolly's travel as on its own (backward: the distance travelled falls)
    alone = coalign_clip(raw[:16], rgb[:16], smoothing="none")
    lo, hi = out.clip_range
    dist = -out.stats["travel"] / (hi - lo)
    lo1, hi1 = alone.clip_range
    dist_alone = -alone.stats["travel"] / (hi1 - lo1)
    assert np.all(np.diff(dist[:16]) < 0) and dist[15] < -0.05 and dist_alone[15] < -0.1
    # in the raw predictions' units (travel / scale): about the travel of the dolly alone (17% less with OpenCV
    # 5.0, 20% less with 4.10, the floor version; before the cut handling 98% of it was lost)
    in_raw = out.stats["travel"][15] / out.scale[:16].mean()
    assert in_raw == pytest.approx(alone.stats["travel"][15] / alone.scale.mean(), rel=0.35)
    assert dist[16] == 0.0  # the second shot's travel starts from its own first frame
    assert json.dumps([float(v) for v in out.stats["travel"][[0, 16]]]) == "[0.0, 0.0]"  # not -0.0 in a record
    # the smoothed output restarts at the cut and is just as sane
    smooth = coalign_clip(raw, rgb)
    assert np.isfinite(smooth.depth).all() and smooth.depth[16:].std(axis=(1, 2)).min() > 0.1


def test_coalignment_pins_each_connected_group_of_frames_on_its_own():
    from apdepth.temporal import solve_coalignment

    # frames 0-2 and 3-5 are linked only among themselves (exact data: every frame a = 1 fits), and the second
    # group's correspondences cost more: one clip-wide condition let it shrink to a constant
    rng = np.random.default_rng(0)
    i, j, x, y = [], [], [], []
    for a, b, s in ((0, 1, 0.1), (1, 2, 0.1), (3, 4, 1.0), (4, 5, 1.0)):
        v = rng.uniform(0, 1, 50)
        noise = rng.normal(0, s * 0.01, 50)
        i.append(np.full(50, a)), j.append(np.full(50, b)), x.append(v), y.append(v + noise)
    a, c = solve_coalignment(6, *(np.concatenate(z) for z in (i, j, x, y)), iterations=1)
    np.testing.assert_allclose(a, 1.0, atol=0.05)
    np.testing.assert_allclose(c, 0.0, atol=0.05)


def test_flow_on_frames_too_small_fails_clearly():
    pytest.importorskip("cv2")
    from apdepth.temporal import CoAligner

    aligner = CoAligner()
    aligner.add_frame(np.full((8, 8), 0.5), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="cannot pair 8x8 frames.*flow=None"):
        aligner.add_frame(np.full((8, 8), 0.5), np.zeros((8, 8), np.uint8))


def test_flow_pairs_keep_motion_only_for_the_travel_estimate():
    """Each flow pair kept every sample's pixel and flow (16 bytes on top of the co-alignment's 16), of which
    the travel estimate uses about TRAVEL_SAMPLES; only those are kept now, and the estimate is unchanged."""
    pytest.importorskip("cv2")
    from apdepth.data.synthetic.video import render_sequence
    from apdepth.temporal import TRAVEL_SAMPLES, CoAligner
    from apdepth.video_depth import _gray

    s = render_sequence(950001, 6, 60, 80, "mixed", "dolly")
    raw = normalised_gt(s)
    aligner = CoAligner()
    for d, f in zip(raw, s["rgb"]):
        aligner.add_frame(d, _gray(f, d.shape))
    for x, pixel, flow in zip(aligner._pairs.x, aligner._pairs.pixel, aligner._pairs.flow):
        assert x.size == 2000 and len(pixel) == len(flow) == TRAVEL_SAMPLES
    a, c = aligner.solve()
    travel = aligner.travel_shift(a, c)
    assert travel[0] == 0.0 and np.all(np.diff(travel) < 0)  # a forward dolly: depths fall
    # any field of view in (0, 180) degrees gives a finite travel; others (and a, c of the wrong length) are refused
    assert all(np.isfinite(aligner.travel_shift(a, c, hfov_deg=f)).all() for f in (1e-3, 179.999))
    for bad in (0.0, 180.0, -5.0, float("nan"), "wide"):
        with pytest.raises(ValueError, match="hfov_deg"):
            aligner.travel_shift(a, c, hfov_deg=bad)
    with pytest.raises(ValueError, match="one value per frame"):
        aligner.travel_shift(a[:-1], c)


def test_axial_travel_is_not_pulled_to_zero_by_depth_errors():
    """The model's depth is noisy, and near points' 1 / Z most of all. With the depth in the translation's
    regressors (each equation in flow units), those errors biased t_z towards 0: by 1.8% here at 0.2 m of depth
    error, and to 1e-5 of the truth at 0.3 m, where a few near points' depth came out at almost 0. Multiplied by
    the distance, the errors go to the right-hand side and t_z stays within 0.5%."""
    rng = np.random.default_rng(0)
    size, focal, n = (96, 128), 110.0, 3000
    pixel = np.stack([rng.uniform(0, 127, n), rng.uniform(0, 95, n)], 1)
    Z = rng.uniform(0.5, 6.0, n)
    flow = rigid_flow(pixel, Z, np.array([0.01, -0.005, 0.1]), np.array([0.01, -0.03, 0.005]), focal, size)
    for error in (0.1, 0.2, 0.3):  # metres, on points 0.5 to 6 m away
        depth = Z + rng.normal(0.0, error, n)
        assert axial_travel(pixel, flow, depth, size, focal) == pytest.approx(0.1, rel=0.005)
