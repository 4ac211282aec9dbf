#!/usr/bin/env bash
# The whole GPU benchmark in one invocation (a few minutes on an H100/H200); the tables come last.
# Paper-size architecture with random weights, bf16. Usage: bash benchmarks/gpu_benchmark.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmark_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# 1. eager, every resolution and batch size, plus one 4096x4096 input at native resolution (VAE tiling)
python benchmarks/latency.py --preset sd2 --dtype bf16 --resolutions 512 768 1024 --batch-sizes 1 4 8 \
    --warmup 3 --iters 15 --huge --json "$out/eager.json" | tee "$out/eager.md"
# 2. compiled (+ CUDA graphs) at the headline setting, 768x768, batch 1 and 8
python benchmarks/latency.py --preset sd2 --dtype bf16 --resolutions 768 --batch-sizes 1 8 \
    --warmup 5 --iters 20 --cuda-graphs --compile-mode max-autotune --json "$out/compiled.json" | tee "$out/compiled.md"
echo
echo "== eager"; sed -n '/^| variant/,$p' "$out/eager.md"
echo "== compiled"; sed -n '/^| variant/,$p' "$out/compiled.md"
