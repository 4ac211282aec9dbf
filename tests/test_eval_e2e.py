"""`apdepth eval` end to end with a real (tiny) pipeline; its cached predictions are what `predict` writes."""

from __future__ import annotations

import json

import numpy as np

from apdepth.cli import main
from test_evaluate import RELS, _nyu_tar


def test_eval_with_checkpoint_then_predictions_reuse(tmp_path, tiny_checkpoint, tiny_pipeline, capsys):
    tar = _nyu_tar(tmp_path)
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "--dataset",
            "nyu",
            "--data-dir",
            str(tar),
            "--checkpoint",
            str(tiny_checkpoint),
            "--output",
            str(out),
            "--processing-res",
            "32",
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 2 and summary["n_predicted"] == 2
    assert 0 < summary["metrics"]["abs_rel"] < 1 and 0 <= summary["metrics"]["delta1"] <= 1
    # Cached predictions sit where `apdepth predict` would write them: same relative path, <stem>_depth.npy.
    cached = [out / "predictions" / rel.replace(".png", "_depth.npy") for rel in RELS]
    assert all(p.is_file() for p in cached)
    pred = np.load(cached[0])
    assert pred.shape == (480, 640) and 0 <= pred.min() and pred.max() <= 1
    # Re-running with --predictions evaluates the same files without the model, same numbers.
    rc = main(
        [
            "eval",
            "--dataset",
            "nyu",
            "--data-dir",
            str(tar),
            "--predictions",
            str(out / "predictions"),
            "--output",
            str(tmp_path / "again"),
            "--no-progress",
        ]
    )
    assert rc == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["n_predicted"] == 0
    assert again["metrics"]["abs_rel"] == summary["metrics"]["abs_rel"]
