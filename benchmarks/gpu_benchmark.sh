#!/usr/bin/env bash
# The whole GPU benchmark in one invocation (a few minutes on an H100/H200); the tables come last.
# Paper-size architecture with random weights, bf16. Usage: bash benchmarks/gpu_benchmark.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmark_results}
# For a dry run on a CPU: PYTHON=.venv/bin/python PRESET=tiny DEVICE=cpu DTYPE=fp32 RES="64" BIG=64 bash benchmarks/gpu_benchmark.sh /tmp/b
preset=${PRESET:-sd2}; device=${DEVICE:-auto}; dtype=${DTYPE:-bf16}; res=${RES:-512 768 1024}; big=${BIG:-768}
huge=--huge; [ "$device" = cpu ] && huge=""
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# 1. eager, every resolution and batch size, plus one 4096x4096 input at native resolution (VAE tiling)
"${PYTHON:-python}" benchmarks/latency.py --preset "$preset" --device "$device" --dtype "$dtype" --resolutions $res --batch-sizes 1 4 8 \
    --warmup 3 --iters 15 $huge --check --json "$out/eager.json" | tee "$out/eager.md"
# 2. compiled (+ CUDA graphs) at the headline setting, 768x768, batch 1 and 8
graphs=--cuda-graphs; [ "$device" = cpu ] && graphs=--compile
"${PYTHON:-python}" benchmarks/latency.py --preset "$preset" --device "$device" --dtype "$dtype" --resolutions $big --batch-sizes 1 8 \
    --warmup 5 --iters 20 $graphs --compile-mode max-autotune --json "$out/compiled.json" | tee "$out/compiled.md"
echo
echo "== eager"; sed -n '/^| variant/,$p' "$out/eager.md"
echo "== compiled"; sed -n '/^| variant/,$p' "$out/compiled.md"
