"""Synthetic scene renderer: exact geometry, determinism, dataset round trips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from apdepth.data import synthetic as syn
from apdepth.data.synthetic import Camera, Lighting, Material, SceneBuilder, render, render_scene


def _front_camera(hfov=60.0):
    """At the origin looking along +z (world +y up), so camera-frame x is world -x and y is world -y."""
    cam = Camera.look_at(eye=(0, 0, 0), target=(0, 0, 1), hfov_deg=hfov)
    np.testing.assert_allclose(cam.rotation, np.diag([-1.0, -1.0, 1.0]), atol=1e-12)
    return cam


def test_plane_facing_camera_has_constant_planar_depth():
    b = SceneBuilder().add_plane(point=(0, 0, 4.25), normal=(0, 0, -1), material=Material(pattern="checker"))
    out = render(b.build(max_depth=20), _front_camera(70), 30, 41)
    assert out["depth"].shape == (30, 41) and out["depth"].dtype == np.float32
    assert out["rgb"].shape == (30, 41, 3) and out["rgb"].dtype == np.uint8
    assert out["valid"].all()
    np.testing.assert_allclose(out["depth"], 4.25, rtol=1e-6)
    # z-depth, not ray length: at a corner the ray is much longer than 4.25 m
    K = out["intrinsics"]
    x, y = (0 - K[0, 2]) / K[0, 0], (0 - K[1, 2]) / K[1, 1]
    ray_len = 4.25 * math.sqrt(1 + x * x + y * y)
    assert ray_len > 4.25 * 1.2
    assert abs(out["depth"][0, 0] - 4.25) < 1e-5 and abs(out["depth"][-1, -1] - 4.25) < 1e-5


def test_intrinsics_pinhole_with_centred_principal_point():
    K = _front_camera(90).intrinsics(40, 60)
    np.testing.assert_allclose(K, [[30, 0, 29.5], [0, 30, 19.5], [0, 0, 1]], rtol=1e-6)


def test_depth_backprojects_onto_ground_plane():
    """A pitched, rolled camera over a ground plane: every pixel unprojected with K and its depth lands on y=0."""
    b = SceneBuilder().add_plane(point=(0, 0, 0), normal=(0, 1, 0))
    cam = Camera.from_angles((0.3, 1.7, -2.0), yaw=0.4, pitch=math.radians(-55), roll=math.radians(5), hfov_deg=75)
    out = render(b.build(max_depth=1000), cam, 24, 32)
    assert out["valid"].all()
    K = out["intrinsics"].astype(np.float64)
    v, u = np.mgrid[0:24, 0:32]
    z = out["depth"].astype(np.float64)
    pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    world = pc @ cam.rotation.T + np.asarray(cam.position)
    np.testing.assert_allclose(world[..., 1], 0.0, atol=2e-5 * z.max())


def test_box_edge_is_a_depth_step_at_the_projected_pixel():
    b = SceneBuilder()
    b.add_plane(point=(0, 0, 10), normal=(0, 0, -1))
    x0 = -0.37  # left face of the box; rays left of it diverge away from the box's side face
    b.add_box(center=(-(x0 + 2.0), 0, 3.5), size=(4.0, 2.0, 1.0))  # camera x in [x0, x0 + 4]: right end out of view
    H, W = 32, 48
    out = render(b.build(max_depth=50), _front_camera(60), H, W)
    K = out["intrinsics"]
    u_edge = K[0, 0] * x0 / 3.0 + K[0, 2]
    assert abs(u_edge - round(u_edge)) > 0.05  # the edge falls between pixel centres
    row = out["depth"][H // 2]
    u = np.arange(W)
    expected = np.where(u > u_edge, 3.0, 10.0)
    np.testing.assert_allclose(row, expected, rtol=1e-5)
    assert row[int(math.floor(u_edge))] == pytest.approx(10.0) and row[int(math.ceil(u_edge))] == pytest.approx(3.0)


def test_sphere_and_cylinder_depth_match_analytic_hits():
    b = SceneBuilder()
    b.add_sphere(center=(0, 0, 5), radius=1.0)
    b.add_cylinder(base=(-3, -2, 8), height=4, radius=0.5)  # camera x = 3
    out = render(b.build(max_depth=50), _front_camera(60), 31, 61)
    K = out["intrinsics"]
    assert out["depth"][15, 30] == pytest.approx(4.0, abs=1e-5)  # centre pixel hits the sphere's front pole
    # the cylinder's nearest point (x=3, z=7.5) seen through the pixel column it projects to
    uc = K[0, 0] * 3 / 7.5 + K[0, 2]
    assert out["depth"][15, int(round(uc))] == pytest.approx(7.5, abs=0.02)
    assert not out["valid"][0, 0]  # nothing but empty space (no sky colour needed) -> invalid


def test_same_seed_is_bit_identical_across_thread_counts_and_seeds_differ():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = render_scene(11, 40, 56, "mixed")
        torch.set_num_threads(2)
        b = render_scene(11, 40, 56, "mixed")
    finally:
        torch.set_num_threads(old)
    for k in ("rgb", "depth", "valid", "intrinsics"):
        assert np.array_equal(a[k], b[k]), k
    c = render_scene(12, 40, 56, "mixed")
    assert not np.array_equal(a["depth"], c["depth"])
    assert not np.array_equal(a["rgb"], c["rgb"])


def test_scenes_match_stored_renders():
    # tests/golden/synthetic_scenes.npz holds four scenes rendered before the renderer was optimised: the
    # training data and the example images depend on a seed always giving the same scene. Depth comes from
    # IEEE basic operations and sqrt only (exactly rounded on every CPU): it must match bit for bit. Colours
    # also go through pow/sin, vectorised per CPU instruction set, where one ulp can move a value across
    # a rounding boundary of the 8-bit output: at most 1 level, on at most 0.1% of the values.
    ref = np.load(Path(__file__).parent / "golden" / "synthetic_scenes.npz")
    for seed, scene in ((3, "indoor"), (4, "outdoor"), (17, "mixed"), (18, "mixed")):
        out = render_scene(seed, 48, 64, scene)
        assert np.array_equal(out["valid"], ref[f"{scene}_{seed}_valid"]), (seed, scene)
        assert np.array_equal(out["depth"], ref[f"{scene}_{seed}_depth"]), (seed, scene)
        diff = np.abs(out["rgb"].astype(int) - ref[f"{scene}_{seed}_rgb"])
        assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (seed, scene, diff.max(), (diff > 0).mean())
    assert ref["outdoor_4_valid"].mean() < 1 and ref["indoor_3_valid"].all()  # sky outdoors, a closed room


def test_outline_culling_drops_pairs_but_no_hit(monkeypatch):
    """The camera rays' (tile, primitive) pairs culled by the primitives' outlines hold no hit: renders with
    and without that culling are bit-identical, and it does remove pairs."""
    from apdepth.data.synthetic import raycast

    real, removed = raycast._outline_cull, []

    def counting(pc, fin, rect, tw):
        before = int(fin.sum())
        real(pc, fin, rect, tw)
        removed.append((before, before - int(fin.sum())))

    scenes = [syn.make_scene(seed, kind) for seed, kind in ((2, "mixed"), (5, "outdoor"), (9, "indoor"))]
    monkeypatch.setattr(raycast, "_outline_cull", counting)
    culled = [render(*sc, 96, 128) for sc in scenes]
    monkeypatch.setattr(raycast, "_outline_cull", lambda *args: None)
    for sc, a in zip(scenes, culled, strict=True):
        b = render(*sc, 96, 128)
        for k in ("rgb", "depth", "valid"):
            assert np.array_equal(a[k], b[k]), k
    assert sum(r for _, r in removed) > 0.2 * sum(n for n, _ in removed), removed


def test_scene_spec_is_torch_free_pickles_and_renders_the_same_scene():
    import pickle

    from apdepth.data.synthetic.shading import _srgb_to_linear

    for seed, family in ((3, "indoor"), (4, "outdoor")):
        spec, cam = pickle.loads(pickle.dumps(syn.make_scene_spec(seed, family)))
        assert isinstance(spec.box_center, np.ndarray) and spec.box_center.dtype == np.float64
        scene, _ = syn.make_scene(seed, family)
        assert torch.equal(spec.to_scene().box_axes, scene.box_axes) and spec.to_scene().counts == scene.counts
        out, ref = render(spec.to_scene(), cam, 24, 32), render_scene(seed, 24, 32, family)
        for k in ("rgb", "depth", "valid", "intrinsics"):
            assert np.array_equal(out[k], ref[k]), (seed, k)
    # drawing a scene needs no torch: the sky's linear zenith colours are stored, as torch computes them
    from apdepth.data.synthetic.scenes import _SKIES, _SKY_ZENITH_LINEAR

    for (_, zenith), stored in zip(_SKIES, _SKY_ZENITH_LINEAR, strict=True):
        np.testing.assert_allclose(stored, _srgb_to_linear(torch.tensor(zenith)).tolist(), rtol=1e-6)


def test_write_samples_renders_scenes_drawn_elsewhere(tmp_path):
    from PIL import Image

    from apdepth.data.synthetic_cli import write_samples

    specs = [syn.make_scene_spec(s, "mixed") for s in (8, 9)]
    lines = write_samples(tmp_path, [8, 9], 16, 20, "mixed", specs=specs)
    assert sorted(lines) == [f"rgb/0000000{s}.png depth/0000000{s}.png mask/0000000{s}.png" for s in (8, 9)]
    with Image.open(tmp_path / "rgb" / "00000009.png") as im:
        assert np.array_equal(np.asarray(im), render_scene(9, 16, 20)["rgb"])
    with pytest.raises(ValueError, match="2 drawn scenes for 1 seeds"):
        write_samples(tmp_path, [8], 16, 20, "mixed", specs=specs)


def test_worker_runs_use_scenes_drawn_ahead_and_draw_the_rest_themselves(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from apdepth.data.synthetic_cli import _render_in_workers

    # a pool whose first worker is ready at once: few runs (maybe none) are drawn ahead, the rest in the workers
    counts = []
    with ThreadPoolExecutor(2) as pool:
        lines = _render_in_workers(pool, 2, tmp_path, list(range(5, 45)), 8, 12, "mixed", "png", counts.append)
    assert sum(counts) == 40 and sorted(lines) == [
        f"rgb/{s:08d}.png depth/{s:08d}.png mask/{s:08d}.png" for s in range(5, 45)
    ]
    for s in (5, 44):
        with Image.open(tmp_path / "rgb" / f"{s:08d}.png") as im:
            assert np.array_equal(np.asarray(im), render_scene(s, 8, 12)["rgb"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outdoor_sky_is_invalid_and_mask_matches_depth(seed):
    out = render_scene(seed, 48, 64, "outdoor")
    depth, valid = out["depth"], out["valid"]
    assert np.array_equal(valid, depth > 0)
    assert depth.max() <= syn.MAX_DEPTH["outdoor"]
    assert (~valid).any(), "a street scene should show some sky"
    # rays that reach the (infinite) ground within range always hit something: never invalid
    scene, cam = syn.make_scene(seed, "outdoor")
    K = out["intrinsics"]
    v, u = np.mgrid[0:48, 0:64]
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1) @ cam.rotation.T
    with np.errstate(divide="ignore"):
        t_ground = np.where(d[..., 1] < 0, -cam.position[1] / d[..., 1], np.inf)
    assert valid[t_ground < 0.95 * scene.max_depth].all()
    # invalid sky pixels look up into the sky
    assert (d[..., 1][~valid & ~np.isfinite(t_ground)] > 0).all()


def test_indoor_rooms_are_closed():
    for seed in (0, 1):
        out = render_scene(seed, 32, 40, "indoor")
        assert out["valid"].all() and out["depth"].min() > 0 and out["depth"].max() < syn.MAX_DEPTH["indoor"]


def test_render_batch_stacks_and_bad_inputs_raise():
    batch = syn.render_batch([3, 4], 16, 24, "indoor")
    assert batch["rgb"].shape == (2, 16, 24, 3) and batch["intrinsics"].shape == (2, 3, 3)
    assert np.array_equal(batch["depth"][1], render_scene(4, 16, 24, "indoor")["depth"])
    with pytest.raises(ValueError, match="unknown scene family"):
        render_scene(0, 16, 16, "forest")
    with pytest.raises(ValueError, match="non-negative"):
        render_scene(-1, 16, 16)
    with pytest.raises(ValueError, match="pattern"):
        Material(pattern="zebra")
    with pytest.raises(ValueError, match="orthonormal"):
        SceneBuilder().add_box((0, 0, 3), (1, 1, 1), rotation=np.ones((3, 3)))
    with pytest.raises(ValueError, match="positive extents"):
        SceneBuilder().add_box((0, 0, 3), (1, 0, 1))


def _synth(args):
    from apdepth.cli import main

    return main(["synth", *args])


def test_cli_dataset_round_trip(tmp_path):
    root = tmp_path / "ds"
    assert _synth(["--out", str(root), "--num", "3", "--size", "24x32", "--seed", "40", "--scene", "mixed"]) == 0
    lines = (root / "split.txt").read_text().split("\n")
    assert lines[0] == "rgb/00000040.png depth/00000040.png mask/00000040.png"
    ds = syn.SyntheticDataset(root, "split.txt")
    assert len(ds) == 3 and len(syn.SyntheticDataset(root)) == 3
    for i, sample in enumerate(ds):
        ref = render_scene(40 + i, 24, 32, "mixed")
        assert sample["rgb"].shape == (3, 24, 32) and sample["rgb"].dtype == torch.float32
        assert sample["rgb_relpath"] == f"rgb/{40 + i:08d}.png"
        assert np.array_equal(sample["valid"].numpy(), ref["valid"])
        assert np.abs(sample["depth"].numpy() - ref["depth"]).max() <= 0.0005 + 1e-6
        assert np.array_equal((sample["rgb"].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8), ref["rgb"])
        np.testing.assert_allclose(sample["intrinsics"].numpy(), ref["intrinsics"])

    # resuming keeps finished samples untouched and extends the split file
    before = (root / "rgb" / "00000040.png").stat().st_mtime_ns
    assert _synth(["--out", str(root), "--num", "4", "--size", "24x32", "--seed", "40", "--skip-existing"]) == 0
    assert (root / "rgb" / "00000040.png").stat().st_mtime_ns == before
    assert len(syn.SyntheticDataset(root, root / "split.txt")) == 4


@pytest.mark.slow  # spawns two interpreters that import torch: several seconds
def test_cli_worker_processes_write_identical_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--num", "2", "--size", "16x20", "--seed", "3"]
    assert _synth(["--out", str(a), *common]) == 0
    assert _synth(["--out", str(b), "--workers", "2", *common]) == 0
    for rel in ("rgb/00000004.png", "depth/00000004.png", "mask/00000003.png", "split.txt"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_worker_seed_runs_cover_every_seed_once_and_shrink_towards_the_end():
    from apdepth.data.synthetic_cli import _seed_runs

    todo = list(range(7, 207))
    runs = _seed_runs(todo, 2)
    assert [s for r in runs for s in r] == todo  # consecutive, in order, each seed once
    sizes = [len(r) for r in runs]
    assert sizes[:20] == [8] * 20 and sizes[-6:] == [1] * 6  # long runs first, single seeds last
    assert sizes == sorted(sizes, reverse=True)
    assert [len(r) for r in _seed_runs([3, 4], 2)] == [1, 1]
    assert _seed_runs([], 2) == []


@pytest.mark.slow  # a fresh interpreter and a worker server that imports torch: several seconds
def test_worker_runs_keep_torch_out_of_the_parent(tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    import apdepth

    # the parent of a multi-process run only hands out seeds: importing torch there (~2 s) would be paid
    # on top of the workers' start-up in every run
    code = (
        "import sys; from apdepth.data.synthetic_cli import write_dataset, write_video_dataset; "
        f"write_dataset({str(tmp_path / 'a')!r}, 3, 16, 20, seed=5, workers=2, progress=False); "
        f"write_video_dataset({str(tmp_path / 'v')!r}, 2, 2, 16, 20, seed=5, workers=2, progress=False); "
        "print('torch' in sys.modules); "
        # nor may rendering pull in heavy lazy imports (torch.broadcast_shapes imports sympy: ~0.5 s a process)
        "from apdepth.data.synthetic import render_scene; render_scene(3, 16, 20); print('sympy' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(apdepth.__file__).parents[1])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "False"], res.stderr
    for s in (5, 6, 7):
        with Image.open(tmp_path / "a" / "rgb" / f"{s:08d}.png") as im:
            assert np.array_equal(np.asarray(im), render_scene(s, 16, 20)["rgb"])
    gt = np.load(tmp_path / "v" / "00000006" / "gt.npz")
    assert gt["depth"].shape == (2, 16, 20)


def test_cli_npy_depth_is_exact_and_errors_are_reported(tmp_path, capsys):
    root = tmp_path / "npy"
    assert _synth(["--out", str(root), "--num", "1", "--size", "16x20", "--seed", "7", "--depth-format", "npy"]) == 0
    sample = syn.SyntheticDataset(root)[0]
    assert np.array_equal(sample["depth"].numpy(), render_scene(7, 16, 20)["depth"])
    assert _synth(["--out", str(root), "--size", "16by20"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no samples"):
        syn.SyntheticDataset(tmp_path)


def test_contact_sheet_command(tmp_path):
    from PIL import Image

    out = tmp_path / "sheet.png"
    assert _synth(["--contact-sheet", str(out), "--num", "2", "--size", "16x20", "--columns", "2"]) == 0
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size[1] == 16 + 8 and im.size[0] > 4 * 20


def test_stream_ranks_and_workers_get_disjoint_seeds():
    s0 = syn.SyntheticStream(16, 16, seed=100, rank=0, world_size=2, length=10)
    s1 = syn.SyntheticStream(16, 16, seed=100, rank=1, world_size=2, length=10)
    a, b = list(s0.seeds()), list(s1.seeds())
    assert not set(a) & set(b) and sorted(a + b) == list(range(100, 110))
    assert len(s0) == 5
    w = [list(s1.seeds(worker_id=k, num_workers=3)) for k in range(3)]
    assert sorted(sum(w, [])) == b and all(not set(w[i]) & set(w[j]) for i in range(3) for j in range(i))
    inf = syn.SyntheticStream(16, 16, seed=0, rank=1, world_size=3)
    it = iter(inf)
    first = next(it)
    assert first["seed"] == 1 and first["depth"].shape == (16, 16) and first["valid"].dtype == torch.bool
    assert np.array_equal(first["depth"].numpy(), render_scene(1, 16, 16)["depth"])
    with pytest.raises(ValueError, match="rank"):
        syn.SyntheticStream(16, 16, rank=2, world_size=2)


def test_cast_shadow_darkens_the_ground_behind_a_box():
    white = Material(color_a=(0.8, 0.8, 0.8), pattern="plain")
    b = SceneBuilder().add_plane((0, 0, 0), (0, 1, 0), white)
    b.add_box(center=(0, 1, 0), size=(1, 0.2, 1), material=white)
    light = Lighting(kind="sun", direction=(1, 1, 0), color=(1, 1, 1), ambient=(0.2, 0.2, 0.2))
    cam = Camera.look_at(eye=(0, 6, 0.01), target=(0, 0, 0), hfov_deg=70)
    H = W = 64
    out = render(b.build(lighting=light, max_depth=50), cam, H, W)

    def pixel(p):
        pc = cam.rotation.T @ (np.asarray(p, float) - np.asarray(cam.position))
        uv = out["intrinsics"] @ (pc / pc[2])
        return int(round(uv[1])), int(round(uv[0]))

    # the sun shifts the box's shadow 1 m towards -x: (-1, 0, 0) lies in it, (2, 0, 0) is lit
    shade = out["rgb"][pixel((-1, 0, 0))].astype(int)
    lit = out["rgb"][pixel((2, 0, 0))].astype(int)
    assert (lit - shade).min() > 60, (lit, shade)
    assert out["depth"][pixel((2, 0, 0))] == pytest.approx(6.0, rel=0.02)
