"""`apdepth predict --save-ply`: a point cloud next to the depth maps, consistent with them."""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from apdepth import predict
from apdepth.pointcloud import depth_to_points, read_ply, relative_to_metric
from conftest import random_rgb


def main(argv: list[str]) -> int:
    """``apdepth predict ...`` through the sub-command's own parser (the other sub-commands are not needed)."""
    assert argv[0] == "predict"
    parser = argparse.ArgumentParser(prog="apdepth predict")
    predict.add_arguments(parser)
    return predict.run(parser.parse_args(argv[1:]))


def test_predict_save_ply_matches_depth(tmp_path, tiny_checkpoint):
    rgb = random_rgb(24, 32, 5)
    Image.fromarray(rgb).save(tmp_path / "scene.png")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(tmp_path / "scene.png"),
            "--output",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--save-ply",
            "--fov",
            "75",
            "--near-far",
            "2",
            "6",
            "--quiet",
        ]
    )
    assert code == 0
    depth = np.load(out / "scene_depth.npy")
    points, colors = read_ply(out / "scene.ply")
    expected_pts, expected_cols = depth_to_points(relative_to_metric(depth, 2.0, 6.0), rgb, fov_deg=75)
    assert 0 < len(points) <= 24 * 32
    np.testing.assert_allclose(points, expected_pts, rtol=1e-6)
    np.testing.assert_array_equal(colors, expected_cols)
    assert 2.0 <= points[:, 2].min() and points[:, 2].max() <= 6.0


def test_predict_without_save_ply_writes_no_ply_and_checks_flags(tmp_path, tiny_checkpoint, capsys):
    Image.fromarray(random_rgb(16, 16, 6)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert (
        main(["predict", str(tmp_path / "a.png"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--quiet"]) == 0
    )
    assert (out / "a_depth.npy").is_file() and not (out / "a.ply").exists()
    code = main(
        [
            "predict",
            str(tmp_path / "a.png"),
            "-o",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--save-ply",
            "--near-far",
            "5",
            "1",
            "--quiet",
        ]
    )
    assert code == 2 and "NEAR < FAR" in capsys.readouterr().err
    code = main(
        [
            "predict",
            str(tmp_path / "a.png"),
            "-o",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--save-ply",
            "--fov",
            "190",
            "--quiet",
        ]
    )
    assert code == 2 and "--fov" in capsys.readouterr().err
