"""The speed benchmarks run end to end on the CPU (tiny models) and the cost model matches the method's count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), **(env or {}))
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def _table(text: str) -> list[list[str]]:
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("|---")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


def test_flop_count_of_the_paper_architecture():
    # SD2 U-Net (8 input channels), SD VAE and DA-V2-Small on the meta device: 13.2 TFLOP per 768x768 image.
    header, row = _table(
        _run(str(BENCH / "latency.py"), "--flops-only", "--preset", "sd2", "--resolutions", "768").stdout
    )
    values = dict(zip(header, row))
    stages = [float(values[k]) for k in ("prior", "vae_encode (image + prior)", "unet", "vae_decode")]
    total = float(values["total (TFLOP per image)"])
    assert abs(total - 13.237) < 0.01 and abs(sum(stages) - total) < 0.002
    assert float(values["vae_encode (image + prior)"]) + float(values["vae_decode"]) > 0.8 * total  # the VAE dominates


def test_latency_rows_and_check(tmp_path):
    out = tmp_path / "rows.json"
    res = _run(
        str(BENCH / "latency.py"),
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--dtype",
        "bf16",
        "--resolutions",
        "32",
        "--batch-sizes",
        "1",
        "2",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--check",
        "--json",
        str(out),
    )
    rows = json.loads(out.read_text())
    assert [(r["variant"], r["res"], r["batch"]) for r in rows] == [("eager", 32, 1), ("eager", 32, 2)]
    for r in rows:
        assert r["ms_per_image"] > 0 and r["images_per_s"] > 0 and r["floor_ms"] > 0
        assert r["unet_ms"] > 0 and r["vae_encode_ms"] > 0 and r["vae_decode_ms"] > 0 and r["prior_ms"] > 0
        assert 0 < r["rel_err_vs_fp32"] < 0.1  # bf16 against fp32 on the same input
        assert abs(r["ratio_to_floor"] - r["ms_per_image"] / r["floor_ms"]) < 1e-6
    table = _table(res.stdout)
    assert (
        table[0][:4] == ["variant", "res", "input", "batch"] and table[0][-1] == "rel_err_vs_fp32" and len(table) == 3
    )


def test_tiling_memory_compares_both_variants():
    res = _run(str(BENCH / "tiling_memory.py"), "--preset", "tiny", "--device", "cpu", "--size", "256", "--tile", "128")
    table = _table(res.stdout)
    assert [r[0] for r in table[1:]] == ["untiled", "tiled"]
    assert all(float(r[2]) > 0 for r in table[1:])
    diff = float(res.stdout.rsplit("untiled one: ", 1)[1].split()[0])
    assert 0 < diff < 1  # tiles engaged (256 px > 128 px tiles), output still close


@pytest.mark.slow
def test_gpu_benchmark_dry_run_on_cpu(tmp_path):
    # BUDGET_S: a cold compile cache on a 2-core CPU needs a few minutes
    env = dict(
        PYTHON=sys.executable,
        PRESET="tiny",
        DEVICE="cpu",
        DTYPE="bf16",
        RES="32",
        BIG="32",
        HUGE="256",
        BUDGET_S="800",
        TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **env)
    res = subprocess.run(
        ["bash", str(BENCH / "gpu_benchmark.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = res.stdout.split("# Summary", 1)[1]
    assert not [
        ln for ln in res.stdout.splitlines() if ln.startswith("== ") and (": exit" in ln or "budget spent" in ln)
    ]
    for name in ("compiled", "eager", "sweep"):
        assert json.loads((tmp_path / "out" / f"{name}.json").read_text())
    assert "# 256x256 at native resolution with VAE tiling" in summary
    assert " passed" in (tmp_path / "out" / "tests.md").read_text()


def test_speedups_rows_are_timed_and_gated_against_fp32(tmp_path):
    out = tmp_path / "rows.json"
    res = _run(
        str(BENCH / "speedups.py"),
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--dtype",
        "bf16",
        "--res",
        "32",
        "--batch-sizes",
        "1",
        "2",
        "--warmup",
        "1",
        "--iters",
        "1",
        "--no-compile",
        "--json",
        str(out),
        timeout=600,
    )
    rows = json.loads(out.read_text())
    assert [(r["variant"], r["batch"]) for r in rows] == [("eager", 1), ("eager", 2), ("+exact", 1), ("+exact", 2)]
    eager, exact = rows[0]["rel_err_vs_fp32"], rows[2]["rel_err_vs_fp32"]
    assert 0 < eager < 0.1 and abs(exact - eager) < 0.25 * eager  # the exact speed-ups agree with fp32 as eager does
    assert all(r["kept"] for r in rows) and all(r["ms_per_image"] > 0 and r["ratio_to_floor"] > 0 for r in rows)
    table = _table(res.stdout)
    assert table[0][0] == "variant (cumulative)" and [r[0] for r in table[1:]] == ["eager", "eager", "+exact", "+exact"]


def test_predict_throughput_compares_predict_with_the_bare_pipeline(tmp_path):
    out = tmp_path / "row.json"
    res = _run(
        str(BENCH / "predict_throughput.py"),
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "--size",
        "64x48",
        "--num",
        "4",
        "--num-small",
        "1",
        "--warmup",
        "1",
        "--json",
        str(out),
        timeout=600,
    )
    row = json.loads(out.read_text())
    assert row["bare_ms"] > 0 and row["predict_ms"] > 0 and row["bare_cpu_ms"] > 0
    assert abs(row["ratio"] - row["predict_ms"] / row["bare_ms"]) < 0.01 * row["ratio"] + 1e-3
    assert row["depth_png_kb"] > 0 and row["colour_png_kb"] > 0 and row["size"] == "64x48"
    assert len(_table(res.stdout)) == 2


@pytest.mark.slow
def test_gpu_speedups_dry_run_on_cpu(tmp_path):
    env = dict(
        PYTHON=sys.executable,
        PRESET="tiny",
        DEVICE="cpu",
        RES="32",
        SIZE="64x48",
        NUM="4",
        NUM_SMALL="1",
        BATCH="2",
        COMPILE="0",
        BUDGET_S="600",
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **env)
    res = subprocess.run(
        ["bash", str(BENCH / "gpu_speedups.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=700,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert not [
        ln for ln in res.stdout.splitlines() if ln.startswith("== ") and (": exit" in ln or "budget spent" in ln)
    ]
    rows = json.loads((tmp_path / "out" / "speedups.json").read_text())
    assert {r["variant"] for r in rows} == {"eager", "+exact"}
    assert json.loads((tmp_path / "out" / "throughput.json").read_text())["ratio"] > 0
    assert "| variant (cumulative) |" in res.stdout.split("# Summary", 1)[1]


def test_synthetic_render_ab_times_two_trees_and_checks_their_outputs(tmp_path):
    # this tree against itself: the outputs must be identical and both renderers timed
    out = _run(
        str(BENCH / "synthetic_render_ab.py"),
        "--base",
        str(ROOT / "src"),
        "--num",
        "2",
        "--rounds",
        "1",
        "--size",
        "16x24",
    ).stdout
    assert "16x24 mixed, 2 scenes x 1 rounds" in out and "outputs identical" in out
    base_ms, new_ms = (float(v) for v in out.split("mean CPU ms/scene: base ")[1].split(" (")[0].split(", this tree "))
    assert base_ms > 0 and new_ms > 0
    res = subprocess.run(
        [sys.executable, str(BENCH / "synthetic_render_ab.py"), "--base", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    assert res.returncode != 0 and "has no apdepth/data/synthetic/render.py" in res.stderr
