import argparse
import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from _dataset_layouts import both, png8, png16, rgb_pattern, write_tar
from apdepth.data import get_dataset
from apdepth.evaluation import cli as eval_cli
from apdepth.evaluation.evaluate import evaluate, prediction_path

H, W = 480, 640
RELS = ["test/kitchen_0004/rgb_0001.png", "test/office_0002/rgb_0007.png"]


def _gt(i):
    yy, xx = np.mgrid[0:H, 0:W]
    return (1.0 + 3.0 * xx / W + (i + 1) * yy / H).astype(np.float64)  # 1 .. 6 m


def _nyu_tar(tmp_path):
    files = {}
    for i, rel in enumerate(RELS):
        mm = np.round(_gt(i) * 1000).astype(np.uint16)
        mm[300, 300] = 0  # one hole
        files[rel] = png8(rgb_pattern(H, W, seed=i))
        files[rel.replace("rgb_", "depth_")] = png16(mm)
    return write_tar(tmp_path / "nyuv2" / "nyu_labeled_extracted.tar", files)


def _prediction(i):
    gt = np.round(_gt(i) * 1000) / 1000
    yy, xx = np.mgrid[0:H, 0:W]
    pred = (gt - 1.0) / 5.0 + 0.02 * np.sin(xx / 7.0 + yy / 11.0)  # affine of GT plus a wiggle
    pred[:45] = 5.0  # outside the Eigen crop: must not influence anything
    return pred.astype(np.float32)


def _expected(i):
    """Independent re-computation of the protocol for one image (AbsRel, delta1)."""
    gt = np.round(_gt(i) * 1000) / 1000
    pred = _prediction(i).astype(np.float64)
    valid = np.zeros((H, W), bool)
    valid[45:471, 41:601] = True
    valid[300, 300] = False
    A = np.stack([pred[valid], np.ones(valid.sum())], 1)
    s, b = np.linalg.lstsq(A, gt[valid], rcond=None)[0]
    p = np.clip(pred * s + b, 1e-3, 10.0)[valid]
    g = gt[valid]
    return np.mean(np.abs(p - g) / g), np.mean(np.maximum(p / g, g / p) < 1.25)


class CountingPredictor:
    def __init__(self, as_list=False):
        self.calls = []
        self.as_list = as_list

    def __call__(self, rgb_batch, processing_resolution=None, match_input_resolution=None, output_type=None):
        self.calls.append((len(rgb_batch), processing_resolution, match_input_resolution, output_type))
        assert all(t.shape == (3, H, W) for t in rgb_batch)
        idx = [int(t[0, 0, 0].item() == rgb_pattern(1, 1, seed=1)[0, 0, 0] / 255) for t in rgb_batch]
        depth = [_prediction(i) for i in idx]
        return SimpleNamespace(depth=depth if self.as_list else np.stack(depth))


def test_evaluate_caches_and_resumes(tmp_path):
    ds = get_dataset("nyu", _nyu_tar(tmp_path))
    pred_dir = tmp_path / "pred"
    pr = CountingPredictor()
    r1 = evaluate(pr, ds, prediction_dir=pred_dir, batch_size=2, progress=False)
    assert pr.calls == [(2, 0, True, "np")]  # NYU: native processing resolution
    for rel in RELS:
        assert prediction_path(pred_dir, rel).is_file()
    assert prediction_path(pred_dir, RELS[0]) == pred_dir / "test/kitchen_0004/rgb_0001_depth.npy"
    r2 = evaluate(pr, ds, prediction_dir=pred_dir, batch_size=2, progress=False)
    assert len(pr.calls) == 1 and r2["n_predicted"] == 0
    assert r2["metrics"] == pytest.approx(r1["metrics"])
    prediction_path(pred_dir, RELS[1]).unlink()  # an interrupted run: one prediction missing
    evaluate(pr, ds, prediction_dir=pred_dir, batch_size=2, progress=False, processing_resolution=320)
    assert pr.calls[1] == (1, 320, True, "np")
    exp = [_expected(0), _expected(1)]
    assert r1["metrics"]["abs_rel"] == pytest.approx(np.mean([e[0] for e in exp]), rel=1e-6)
    assert r1["metrics"]["delta1"] == pytest.approx(np.mean([e[1] for e in exp]), rel=1e-6)
    assert [row["rgb_relpath"] for row in r1["per_sample"]] == RELS
    assert "boundary_f1" not in r1["metrics"]


def test_evaluate_list_output_and_max_samples(tmp_path):
    ds = get_dataset("nyu", _nyu_tar(tmp_path))
    r = evaluate(CountingPredictor(as_list=True), ds, max_samples=1, progress=False)
    assert r["n_samples"] == 1 and r["metrics"]["abs_rel"] == pytest.approx(_expected(0)[0], rel=1e-6)
    with pytest.raises(ValueError, match="needs a predictor or a prediction_dir"):
        evaluate(None, ds)
    with pytest.raises(ValueError, match="no cached prediction"):
        evaluate(None, ds, prediction_dir=tmp_path / "empty", progress=False)
    bad = lambda rgb, **kw: SimpleNamespace(depth=np.zeros((3, H, W), np.float32))  # noqa: E731
    with pytest.raises(ValueError, match="returned 3 depth maps for 1 images"):
        evaluate(bad, ds, progress=False)


def test_boundary_f1_reported_for_dense_gt(tmp_path):
    depth = np.full((16, 16), 8000, np.uint16)
    depth[4:12, 4:12] = 2000
    files = {
        "ai_001_001/rgb_cam_00_fr0000.png": png8(rgb_pattern(16, 16)),
        "ai_001_001/depth_plane_cam_00_fr0000.png": png16(depth),
    }
    ds = get_dataset("hypersim", both(tmp_path, "hs", files)["folder"])
    perfect = lambda rgb, **kw: SimpleNamespace(depth=(depth[None] / 8000.0).astype(np.float32))  # noqa: E731
    r = evaluate(perfect, ds, progress=False)
    assert r["metrics"]["boundary_f1"] == pytest.approx(1.0)
    assert r["metrics"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_kitti_prediction_at_raw_size_is_cropped(tmp_path):
    from apdepth.data.kitti import KITTIDataset

    raw = np.arange(375 * 1242, dtype=np.float32).reshape(375, 1242)
    out = KITTIDataset.prepare_prediction(SimpleNamespace(benchmark_crop=True), raw)
    assert out.shape == (352, 1216) and out[0, 0] == raw[23, 13]


def _parse(argv):
    p = argparse.ArgumentParser()
    eval_cli.add_arguments(p)
    return p.parse_args(argv)


def test_eval_command_with_cached_predictions(tmp_path, capsys):
    tar = _nyu_tar(tmp_path)
    pred_dir = tmp_path / "preds"
    for i, rel in enumerate(RELS):
        path = prediction_path(pred_dir, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, _prediction(i))
    out = tmp_path / "out"
    rc = eval_cli.run(
        _parse(
            [
                "--dataset",
                "nyu",
                "--data-dir",
                str(tar),
                "--predictions",
                str(pred_dir),
                "--output",
                str(out),
                "--no-progress",
            ]
        )
    )
    assert rc == 0
    exp = [_expected(0), _expected(1)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 2 and summary["alignment"] == "depth" and summary["max_depth"] == 10.0
    assert summary["metrics"]["abs_rel"] == pytest.approx(np.mean([e[0] for e in exp]), rel=1e-6)
    assert summary["metrics"]["delta1"] == pytest.approx(np.mean([e[1] for e in exp]), rel=1e-6)
    with open(out / "per_sample.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["rgb_relpath"] for r in rows] == RELS
    assert float(rows[1]["abs_rel"]) == pytest.approx(exp[1][0], rel=1e-6)
    assert int(rows[0]["n_valid"]) == 426 * 560 - 1
    md = (out / "summary.md").read_text()
    headline = f"{np.mean([e[0] for e in exp]) * 100:.1f} / {np.mean([e[1] for e in exp]) * 100:.1f}"
    assert headline in md and "AbsRel ×100" in md
    assert headline in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))


def test_eval_suite_table_and_argument_errors(tmp_path, capsys):
    _nyu_tar(tmp_path)
    pred_root = tmp_path / "preds"
    for i, rel in enumerate(RELS):
        path = prediction_path(pred_root / "nyu", rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, _prediction(i))
    split_dir = tmp_path / "splits" / "nyu" / "labeled"
    split_dir.mkdir(parents=True)
    (split_dir / "filename_list_test.txt").write_text(
        f"{RELS[1]} {RELS[1].replace('rgb_', 'depth_')} {RELS[1].replace('rgb_', 'filled_')}\n"
    )
    out = tmp_path / "suite"
    rc = eval_cli.run(
        _parse(
            [
                "--suite",
                "all",
                "--data-root",
                str(tmp_path),
                "--predictions",
                str(pred_root),
                "--split-dir",
                str(tmp_path / "splits"),
                "--output",
                str(out),
                "--no-progress",
            ]
        )
    )
    assert rc == 0
    text = capsys.readouterr()
    a, d = _expected(1)
    assert f"| NYUv2 | 1 | {a * 100:.1f} | {d * 100:.1f} |" in text.out
    assert "| KITTI | — | — | — |" in text.out and "kitti" in text.err
    assert (out / "suite.md").read_text() in text.out
    assert json.loads((out / "suite.json").read_text())["kitti"] is None
    assert (out / "nyu" / "summary.json").is_file()

    assert eval_cli.run(_parse(["--dataset", "nyu"])) == 2
    assert "needs --data-dir" in capsys.readouterr().err
    assert eval_cli.run(_parse(["--suite", "nyu,foo", "--data-root", str(tmp_path)])) == 2
    assert "--suite takes" in capsys.readouterr().err


def test_user_predictions_are_read_only_and_never_completed_by_the_model(tmp_path, tiny_checkpoint, capsys):
    import hashlib

    from apdepth.cli import main

    tar = _nyu_tar(tmp_path)
    preds = tmp_path / "mine"
    path = prediction_path(preds, RELS[0])
    path.parent.mkdir(parents=True)
    np.save(path, _prediction(0))
    (preds / "unrelated_depth.npy").write_bytes(path.read_bytes())  # a file of another layout

    def snapshot():
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(preds.rglob("*")) if p.is_file()}

    before = snapshot()
    out = tmp_path / "out"
    # A checkpoint is given, but it must not be used to fill in the missing prediction.
    rc = main(
        [
            "eval",
            "--dataset",
            "nyu",
            "--data-dir",
            str(tar),
            "--predictions",
            str(preds),
            "--checkpoint",
            str(tiny_checkpoint),
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    expected = prediction_path(preds, RELS[1])
    assert err.startswith(
        f"error: --predictions {preds}: 1 of 2 predictions missing (first: {expected}); "
        "2 *_depth.npy file(s) found there."
    )
    assert err.count("\n") == 1
    assert snapshot() == before  # nothing written into the user's folder
    assert not (out / "summary.json").exists()

    # A prediction of another image (other aspect ratio) is an error, not a silent resize.
    expected.parent.mkdir(parents=True)
    np.save(expected, np.zeros((100, 100), np.float32))
    rc = main(["eval", "--dataset", "nyu", "--data-dir", str(tar), "--predictions", str(preds), "--no-progress"])
    assert rc == 2
    assert capsys.readouterr().err == (
        f"error: prediction {expected} has shape (100, 100) but image {RELS[1]} has (480, 640) (another aspect "
        "ratio): it is not a prediction of this image\n"
    )


def test_eval_batch_size_batches_the_model(tmp_path, tiny_checkpoint, monkeypatch):
    from apdepth.cli import main
    from apdepth.pipeline import ApDepthPipeline

    seen = []
    original = ApDepthPipeline.predict_latent

    def spy(self, rgb, prior_input=None):
        seen.append(rgb.shape[0])
        return original(self, rgb, prior_input)

    monkeypatch.setattr(ApDepthPipeline, "predict_latent", spy)
    tar = _nyu_tar(tmp_path)
    rc = main(
        [
            "eval",
            "--dataset",
            "nyu",
            "--data-dir",
            str(tar),
            "--checkpoint",
            str(tiny_checkpoint),
            "--processing-res",
            "32",
            "--batch-size",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0 and seen == [2]  # one U-Net call for both images (it was two calls of batch 1)
