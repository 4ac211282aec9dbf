"""Point-cloud export: pinhole geometry, flying-pixel removal and the binary PLY format."""

from __future__ import annotations

import numpy as np
import pytest

from apdepth.pointcloud import (
    depth_to_points,
    flying_pixel_mask,
    focal_from_fov,
    read_ply,
    relative_to_metric,
    save_depth_ply,
    write_glb_points,
    write_ply,
)


def _plane_depth(h, w, f, normal, offset):
    """z-depth of the plane n·X = offset seen by a pinhole camera (principal point at the centre)."""
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    ray = np.stack([(cols + 0.5 - w / 2) / f, (rows + 0.5 - h / 2) / f, np.ones_like(rows)], axis=-1)
    return offset / (ray @ np.asarray(normal, np.float64))  # X = z·ray, so z = offset / (n·ray)


def test_tilted_plane_points_lie_on_the_plane():
    h, w, fov = 48, 64, 70.0
    f = focal_from_fov(w, fov)
    normal = np.array([0.3, -0.5, 1.0])
    normal /= np.linalg.norm(normal)
    offset = 3.0
    z = _plane_depth(h, w, f, normal, offset)
    assert z.min() > 0 and z.max() / z.min() > 1.5  # really tilted, not nearly fronto-parallel

    points, colors = depth_to_points(z.astype(np.float32), fov_deg=fov)
    assert points.shape == (h * w, 3) and colors.shape == (h * w, 3) and colors.dtype == np.uint8
    residual = np.abs(points.astype(np.float64) @ normal - offset) / offset
    assert residual.max() < 1e-4
    # the centre pixel's ray is the optical axis shifted half a pixel; corners spread with the FoV
    top_left = points[0]
    assert top_left[0] == pytest.approx((0.5 - w / 2) / f * z[0, 0], rel=1e-5)
    assert top_left[1] == pytest.approx((0.5 - h / 2) / f * z[0, 0], rel=1e-5)


def test_focal_given_matches_focal_from_fov():
    z = np.full((10, 20), 2.0, np.float32)
    a, _ = depth_to_points(z, fov_deg=90.0)
    b, _ = depth_to_points(z, focal=10.0)  # 90 deg over 20 px is a 10 px focal length
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # the x span of a fronto-parallel plane at z=2 seen at 90 deg is 2·z·tan(45°) minus one pixel
    assert a[:, 0].max() - a[:, 0].min() == pytest.approx(2 * 2.0 * (19 / 20), rel=1e-5)


def test_flying_pixels_at_a_step_edge_are_dropped():
    z = np.full((20, 30), 2.0, np.float32)
    z[:, 15:] = 5.0  # a wall behind a box: a 150 % jump between columns 14 and 15
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :, 0] = np.arange(30, dtype=np.uint8)[None, :]  # red channel = column index
    keep = flying_pixel_mask(z, threshold=0.05)
    assert not keep[:, 14].any() and not keep[:, 15].any()
    assert keep[:, :14].all() and keep[:, 16:].all()
    points, colors = depth_to_points(z, rgb, fov_deg=60)
    assert len(points) == 20 * 28
    assert not np.isin(colors[:, 0], [14, 15]).any()  # the seam's colours are gone with its points
    # with the filter off every pixel survives
    assert len(depth_to_points(z, rgb, flying_pixel_threshold=None)[0]) == 20 * 30


def test_smooth_ramp_is_kept_and_invalid_pixels_dropped():
    z = np.linspace(1.0, 1.5, 40, dtype=np.float32)[None, :].repeat(10, axis=0)  # ~1 % per pixel
    valid = np.ones_like(z, bool)
    valid[0, 0] = False
    z[5, 5] = np.nan
    z[6, 6] = 0.0
    keep = flying_pixel_mask(z, 0.05, valid)
    assert keep.sum() == z.size - 3
    assert len(depth_to_points(z, valid=valid)[0]) == z.size - 3


def test_relative_to_metric_maps_range_and_validates():
    d = np.array([[0.0, 0.5, 1.0, 2.0]], np.float32)
    np.testing.assert_allclose(relative_to_metric(d, near=2.0, far=4.0), [[2.0, 3.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="near < far"):
        relative_to_metric(d, near=3.0, far=1.0)
    with pytest.raises(ValueError, match="fov_deg"):
        depth_to_points(np.ones((4, 4), np.float32), fov_deg=180)
    with pytest.raises(ValueError, match="rgb must be"):
        depth_to_points(np.ones((4, 4), np.float32), rgb=np.zeros((4, 5, 3), np.uint8))


def test_binary_ply_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(257, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(257, 3), dtype=np.uint8)
    path = write_ply(tmp_path / "cloud.ply", points, colors)
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header\n")]
    assert b"format binary_little_endian 1.0" in header
    assert b"element vertex 257" in header
    assert len(raw) == len(header) + 257 * 15  # 3 float32 + 3 uchar per vertex, no padding
    # little-endian float32 x of the first vertex sits right after the header
    assert np.frombuffer(raw[len(header) : len(header) + 4], "<f4")[0] == points[0, 0]
    p2, c2 = read_ply(path)
    np.testing.assert_array_equal(p2, points)
    np.testing.assert_array_equal(c2, colors)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writer left nothing behind


def test_ply_without_colours_and_ascii_reader(tmp_path):
    pts = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    write_ply(tmp_path / "a.ply", pts)
    p, c = read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(p, pts)
    assert c is None
    (tmp_path / "b.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n1 2 3 10 20 30\n4 5 6 40 50 60\n"
    )
    p, c = read_ply(tmp_path / "b.ply")
    np.testing.assert_array_equal(p, pts)
    np.testing.assert_array_equal(c, [[10, 20, 30], [40, 50, 60]])
    (tmp_path / "c.ply").write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "c.ply")


def test_write_ply_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        write_ply(tmp_path / "x.ply", np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        write_ply(tmp_path / "x.ply", np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32))
    assert not (tmp_path / "x.ply").exists()


def test_save_depth_ply_from_relative_depth(tmp_path):
    d = np.full((8, 12), 0.5, np.float32)
    rgb = np.full((8, 12, 3), 0.25, np.float32)
    n = save_depth_ply(tmp_path / "s.ply", d, rgb, near=1.0, far=3.0, fov_deg=60)
    p, c = read_ply(tmp_path / "s.ply")
    assert n == len(p) == 96
    np.testing.assert_allclose(p[:, 2], 2.0)  # d = 0.5 halfway between near 1 and far 3
    assert (c == 64).all()  # 0.25 * 255 rounded


def test_glb_is_valid_gltf_binary(tmp_path):
    import json
    import struct

    pts = np.array([[1, 2, 3], [-1, 0, 5]], np.float32)
    cols = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    raw = write_glb_points(tmp_path / "v.glb", pts, cols).read_bytes()
    magic, version, total = struct.unpack("<4sII", raw[:12])
    assert (magic, version, total) == (b"glTF", 2, len(raw))
    jlen, jtype = struct.unpack("<I4s", raw[12:20])
    gltf = json.loads(raw[20 : 20 + jlen])
    assert jtype == b"JSON" and gltf["meshes"][0]["primitives"][0]["mode"] == 0  # POINTS
    blen, btype = struct.unpack("<I4s", raw[20 + jlen : 28 + jlen])
    binary = raw[28 + jlen : 28 + jlen + blen]
    pos = np.frombuffer(binary[:24], "<f4").reshape(2, 3)
    np.testing.assert_array_equal(pos, pts * [1, -1, -1])  # OpenCV camera frame -> glTF (y up, z back)
    assert gltf["accessors"][0]["max"] == pos.max(axis=0).tolist()
