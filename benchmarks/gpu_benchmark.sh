#!/usr/bin/env bash
# The whole GPU benchmark in one invocation, sized to end within BUDGET_S seconds (default 540); the tables
# come last. Paper-size architecture with random weights, bf16.
#
#   bash benchmarks/gpu_benchmark.sh [OUT_DIR]
#
# Steps, most important first (each stops at its share of the budget, and the summary shows what finished):
#   1. compiled path (torch.compile + CUDA graphs, channels_last) at 768x768, batch 1 and 8: the targets
#   2. eager at 768x768, batch 1 and 8, with the error against fp32, and one 4096x4096 input at native
#      resolution with VAE tiling (peak memory)
#   3. the GPU tests (tests/test_gpu.py: CUDA vs CPU, fp16/bf16, CUDA graphs vs eager, tiling memory,
#      predict and bf16 training on the GPU)
#   4. eager sweep: 512 and 1024, batch 1/4/8
# Dry run on a CPU (checks the script end to end before GPU time is spent):
#   PYTHON=.venv/bin/python PRESET=tiny DEVICE=cpu DTYPE=bf16 RES=64 BIG=64 HUGE=1024 bash benchmarks/gpu_benchmark.sh /tmp/b
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmark_results}
py=${PYTHON:-python}
preset=${PRESET:-sd2}; device=${DEVICE:-auto}; dtype=${DTYPE:-bf16}; res=${RES:-512 1024}; big=${BIG:-768}
compile_mode=${COMPILE_MODE:-default}  # "max-autotune" compiles for many minutes at this size
budget=${BUDGET_S:-540}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
start=$SECONDS
graphs=--cuda-graphs; huge="--huge --huge-size ${HUGE:-4096}"; test_device=cuda
if [ "$device" = cpu ]; then graphs=--compile; test_device=cpu; [ -n "${HUGE:-}" ] || huge=""; fi

# shellcheck source=benchmarks/budget_step.sh
source benchmarks/budget_step.sh  # the working directory is the repository root (cd above)

lat=("$py" benchmarks/latency.py --preset "$preset" --device "$device" --dtype "$dtype")

step compiled 300 "${lat[@]}" --resolutions "$big" --batch-sizes 1 8 --warmup 5 --iters 20 $graphs --skip-eager \
    --compile-mode "$compile_mode" --channels-last --json "$out/compiled.json"
step eager 120 "${lat[@]}" --resolutions "$big" --batch-sizes 1 8 --warmup 3 --iters 15 --check $huge --json "$out/eager.json"
if "$py" -c "import pytest" 2>/dev/null; then
    step tests 180 env APDEPTH_TEST_DEVICE=$test_device "$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
fi
# shellcheck disable=SC2086
step sweep 120 "${lat[@]}" --resolutions $res --batch-sizes 1 4 8 --warmup 3 --iters 10 --json "$out/sweep.json"

echo
echo "# Summary ($((SECONDS - start)) s)"
for name in compiled eager sweep; do
    echo; echo "== $name"
    if grep -q '^Device:' "$out/$name.md" 2>/dev/null; then
        sed -n '/^Device:/,$p' "$out/$name.md" | grep -v '^$'
    else  # stopped before its table: the rows it finished (one JSON line each)
        grep -h '^{"variant"' "$out/$name.md" 2>/dev/null || tail -n 1 "$out/$name.md" 2>/dev/null
    fi
done
grep -h '^# [0-9]*x[0-9]* at native' "$out/eager.md" 2>/dev/null || true
[ -f "$out/tests.md" ] && { echo; echo "== tests"; tail -n 3 "$out/tests.md"; }
exit 0
