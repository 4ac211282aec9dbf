"""benchmarks/ablation.py end to end on tiny random checkpoints and a three-image synthetic test set."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apdepth.models import build_pipeline

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"
H, W = 48, 64


def _script():
    spec = importlib.util.spec_from_file_location("ablation_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation_ckpts")
    paths = {}
    for name, kwargs in {
        "noprior": dict(seed=1, use_prior=False),
        "stage1": dict(seed=2),
        "stage2": dict(seed=3),
        "noprior_e2e": dict(seed=4, use_prior=False),
        "e2e": dict(seed=5),
    }.items():
        paths[name] = root / name
        build_pipeline("tiny", **kwargs).save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    from apdepth.cli import SUBCOMMANDS

    # The `apdepth synth` sub-command itself, without building the parsers of every other sub-command.
    synth = importlib.import_module(SUBCOMMANDS["synth"][0])
    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    out = tmp_path_factory.mktemp("synth_test") / "set"
    args = parser.parse_args(
        ["--out", str(out), "--num", "3", "--size", f"{H}x{W}", "--seed", "900000", "--scene", "mixed"]
    )
    assert synth.run(args) == 0
    return out


def test_prior_only_adapter_returns_the_pipelines_prior_depth(checkpoints):
    from apdepth.pipeline import ApDepthPipeline

    ablation = _script()
    pipe = ApDepthPipeline.from_pretrained(checkpoints["stage1"])
    rgb = [torch.rand(3, H, W, generator=torch.Generator().manual_seed(0))]
    got = ablation.PriorOnly(pipe)(rgb, processing_resolution=32, match_input_resolution=True, output_type="np")
    want = pipe(rgb, processing_resolution=32, output_prior=True)
    assert got.depth.shape == (1, H, W)
    np.testing.assert_array_equal(got.depth, want.prior_depth)
    assert not np.allclose(got.depth, want.depth)  # the prior, not the model's output
    with pytest.raises(ValueError, match="has no prior"):
        ablation.PriorOnly(ApDepthPipeline.from_pretrained(checkpoints["noprior"]))


def _args(test_set, ckpts, tmp_path, *extra):
    return [
        "--test-set",
        str(test_set),
        "--noprior",
        str(ckpts["noprior"]),
        "--stage1",
        str(ckpts["stage1"]),
        "--stage2",
        str(ckpts["stage2"]),
        "--output",
        str(tmp_path / "results"),
        "--figure",
        str(tmp_path / "images" / "ablation.png"),
        "--tile-width",
        "96",
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]


def test_ablation_end_to_end(tmp_path, checkpoints, test_set, capsys):
    ablation = _script()
    # 32 px processing resolution: less work, and predictions must be resized back onto the 48x64 GT.
    argv = _args(
        test_set,
        checkpoints,
        tmp_path,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--processing-res",
        "32",
        "--bootstrap",
        "200",
    )
    assert ablation.main(argv) == 0

    data = json.loads((tmp_path / "results" / "ablation.json").read_text())
    assert [r["key"] for r in data["rows"]] == ["prior", "noprior", "stage1", "stage2", "vae", "ramp"]
    assert [r["alignment"] for r in data["rows"]] == ["disparity", "depth", "depth", "depth", "depth", "disparity"]
    assert data["n_samples"] == 3 and data["processing_resolution"] == 32
    for row in data["rows"]:
        assert row["n_samples"] == 3
        for key in ("abs_rel", "delta1", "boundary_f1"):
            value = row["metrics"][key]
            assert value is not None and math.isfinite(value), (row["key"], key)
        assert 0 < row["metrics"]["abs_rel"] and 0 <= row["metrics"]["delta1"] <= 1
        assert 0 <= row["metrics"]["boundary_f1"] <= 1
    prior = data["rows"][0]
    assert math.isfinite(prior["metrics_depth_aligned"]["abs_rel"])
    # The same cached prior predictions scored two ways: the fits differ, so the numbers do.
    assert prior["metrics_depth_aligned"]["abs_rel"] != prior["metrics"]["abs_rel"]
    # (b) is the prior-free model, (c) a different network: their predictions must not coincide.
    assert data["rows"][1]["metrics"]["abs_rel"] != data["rows"][2]["metrics"]["abs_rel"]
    vae, ramp = data["rows"][4], data["rows"][5]
    assert vae["reference"] and vae["checkpoint"] == str(checkpoints["stage2"])
    assert ramp["reference"] and math.isfinite(ramp["metrics_depth_aligned"]["abs_rel"])
    # Differences: 4 comparisons x 3 metrics, each with an interval around its mean difference.
    diffs = data["differences"]
    assert len(diffs) == 12 and data["bootstrap"] == 200
    for d in diffs:
        assert d["n"] == 3 and d["lo"] <= d["diff"] <= d["hi"], d
        assert d["verdict"] in ("better", "worse", "no significant difference")

    md = (tmp_path / "results" / "ablation.md").read_text()
    assert md.splitlines()[2] == "```bash"
    assert md.splitlines()[3] == "python benchmarks/ablation.py " + " ".join(argv)
    assert "depth-aligned (reference only)" in md
    assert "](../images/ablation.png)" in md and "](../images/ablation_edges.png)" in md
    assert md.count("\n| (") == 5  # four rows plus the prior's depth-aligned reference line
    assert (
        "| VAE depth round trip (upper bound) | depth |" in md and "| vertical ramp (bottom = near) | disparity |" in md
    )
    assert md.count("\n| frequency loss: (d) stage 2 vs (c) stage 1 |") == 3
    assert "(d) ApDepth, stage 2" in capsys.readouterr().out

    # Figure: 5 columns of 96-px tiles, one 72-px row (48x64 aspect) per test scene (3 < 4 requested).
    width = ablation.GAP + 5 * (96 + ablation.GAP)
    with Image.open(tmp_path / "images" / "ablation.png") as im:
        assert im.size == (width, ablation.HEADER + 3 * (72 + ablation.GAP) + ablation.FOOTER)
        fig = np.asarray(im.convert("RGB"))
    with Image.open(tmp_path / "images" / "ablation_edges.png") as im:
        assert im.size[0] == width
    # Tiles are painted: the GT column of the first scene is not blank.
    gt_tile = fig[ablation.HEADER : ablation.HEADER + 72, width - 96 - ablation.GAP : width - ablation.GAP]
    assert gt_tile.std() > 5

    # Cached predictions are reused; a cache made with other settings is refused, not silently mixed.
    assert all((tmp_path / "cache" / k / "source.json").is_file() for k in ("prior", "noprior", "stage1", "stage2"))
    with pytest.raises(ValueError, match="prediction cache"):
        ablation.main(argv + ["--processing-res", "0"])


def test_ablation_with_the_end_to_end_rows(tmp_path, checkpoints, test_set):
    ablation = _script()
    extra = ["--e2e", str(checkpoints["e2e"]), "--noprior-e2e", str(checkpoints["noprior_e2e"])]
    argv = _args(test_set, checkpoints, tmp_path, "--processing-res", "32", "--bootstrap", "100", *extra)
    assert ablation.main(argv) == 0
    data = json.loads((tmp_path / "results" / "ablation.json").read_text())
    keys = [r["key"] for r in data["rows"]]
    assert keys == ["prior", "noprior", "stage1", "stage2", "noprior_e2e", "e2e", "vae", "ramp"]
    by_key = {r["key"]: r for r in data["rows"]}
    assert by_key["e2e"]["checkpoint"] == str(checkpoints["e2e"])
    # (e) and (d) are different networks: their scores differ.
    assert by_key["e2e"]["metrics"]["abs_rel"] != by_key["stage2"]["metrics"]["abs_rel"]
    # 8 comparisons x 3 metrics; the end-to-end ones are there.
    labels = {d["comparison"] for d in data["differences"]}
    assert len(data["differences"]) == 24
    assert "end-to-end fine-tuning: (e) vs (d) stage 2" in labels
    assert "prior conditioning, end to end: (e) vs (b') no prior" in labels
    assert data["figure_columns"] == ["input", "prior", "stage 1", "stage 2", "end to end", "ground truth"]
    with Image.open(tmp_path / "images" / "ablation.png") as im:
        assert im.size[0] == ablation.GAP + 6 * (96 + ablation.GAP)
    md = (tmp_path / "results" / "ablation.md").read_text()
    assert "![input, prior, stage 1, stage 2, end to end, ground truth](../images/ablation.png)" in md
    # A control with a prior in the prior-free role is refused before any row runs.
    bad = _args(test_set, checkpoints, tmp_path, "--noprior-e2e", str(checkpoints["e2e"]), "--max-samples", "1")
    with pytest.raises(ValueError, match="row \\(b'\\) needs the prior-free"):
        ablation.main(bad)


def test_ablation_rejects_swapped_checkpoints(tmp_path, checkpoints, test_set):
    ablation = _script()
    swapped = dict(checkpoints, noprior=checkpoints["stage1"])
    with pytest.raises(ValueError, match="row \\(b\\) needs the prior-free"):
        ablation.main(_args(test_set, swapped, tmp_path, "--max-samples", "1"))
    # A missing checkpoint is reported before any row is evaluated (no prediction cache is started).
    missing = dict(checkpoints, stage2=tmp_path / "runs" / "stage2")
    with pytest.raises(OSError, match="stage2"):
        ablation.main(_args(test_set, missing, tmp_path, "--cache-dir", str(tmp_path / "cache")))
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="no prior"):
        ablation.main(
            _args(test_set, checkpoints, tmp_path, "--prior-from", str(checkpoints["noprior"]), "--max-samples", "1")
        )


def test_paired_bootstrap_interval():
    ablation = _script()
    rng = np.random.default_rng(0)
    a = rng.normal(0.3, 0.05, size=400)
    b = a - 0.02 + rng.normal(0, 0.01, size=400)  # b is better (lower) by 0.02 with little paired noise
    r = ablation.paired_bootstrap(a, b, resamples=2000, seed=1)
    assert r["n"] == 400 and abs(r["diff"] + 0.02) < 0.003
    assert r["lo"] < r["diff"] < r["hi"] < 0  # the interval excludes zero
    # The standard error of the mean difference is 0.01 / sqrt(400) = 5e-4: the 95% interval spans ~4 of them.
    assert 0.001 < r["hi"] - r["lo"] < 0.003
    # NaN (skipped images) are left out of both rows; no resamples gives no interval.
    a[:10] = np.nan
    r = ablation.paired_bootstrap(a, b, resamples=0)
    assert r["n"] == 390 and math.isnan(r["lo"]) and math.isnan(r["hi"])
    verdicts = {
        d["metric"]: d["verdict"]
        for d in ablation.compare(
            {
                ("stage1", "depth"): {"abs_rel": a, "delta1": -a, "boundary_f1": np.zeros(400)},
                ("stage2", "depth"): {"abs_rel": b, "delta1": -b, "boundary_f1": np.zeros(400)},
            },
            500,
        )
    }
    assert verdicts == {"abs_rel": "better", "delta1": "better", "boundary_f1": "no significant difference"}


def test_vae_round_trip_of_an_exact_autoencoder_returns_the_ground_truth(tmp_path, test_set):
    """With an autoencoder that is the identity, the round trip gives back the normalised GT: the only
    losses left are the 2%/98% quantile clipping of the training target (the nearest and farthest pixels)."""
    import torch

    from apdepth.data import get_dataset
    from apdepth.evaluation.evaluate import evaluate

    ablation = _script()

    class Identity:
        vae_scale_factor = 4
        vae = torch.nn.Conv2d(1, 1, 1)

        def encode(self, x):
            assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0  # padded to the downsampling factor
            return x[:, :1]

        def decode_depth(self, z):
            return (z[:, 0] + 1) / 2

    dataset = get_dataset("synthetic", test_set)
    ablation.vae_round_trip(Identity(), dataset, tmp_path / "rt", 0, len(dataset))
    r = evaluate(None, dataset, alignment="depth", prediction_dir=tmp_path / "rt", progress=False)
    assert r["n_samples"] == len(dataset)
    assert r["metrics"]["abs_rel"] < 0.03 and r["metrics"]["delta1"] > 0.97
