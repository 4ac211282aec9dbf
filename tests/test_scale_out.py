"""Scale-out inference: `accelerate launch --num_processes 2 -m apdepth predict` (or torchrun) on two CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import accelerate_cpu_launch, free_port, random_rgb


@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_two_processes_shard_inputs_exactly_once(tmp_path, tiny_checkpoint, launcher):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        Image.fromarray(random_rgb(24, 32, seed=i)).save(src / f"img{i}.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    if launcher == "accelerate":
        launch = accelerate_cpu_launch()
    else:
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
        ]
    cmd = [
        *launch,
        "-m",
        "apdepth",
        "predict",
        str(src),
        "--output",
        str(out),
        "--checkpoint",
        str(tiny_checkpoint),
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout + proc.stderr  # broken.png failed, so the run reports failure
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["world_size"] == 2
    assert sorted(summary["done_per_rank"]) == ["0", "1"]
    # 6 inputs split 3/3 between the ranks; broken.png failed on its rank; every good image done exactly once.
    assert sum(summary["done_per_rank"].values()) == 5 and len(summary["done"]) == len(set(summary["done"])) == 5
    assert list(summary["failed"]) == [str(src / "broken.png")]
    assert proc.stdout.count("done: 5  skipped: 0  failed: 1") == 1  # one merged summary, printed by rank 0
    for i in range(5):
        assert np.load(out / f"img{i}_depth.npy").shape == (24, 32)
