#!/usr/bin/env bash
# The GPU model-path speed-ups and the streaming predict, in one invocation sized to end within BUDGET_S seconds
# (default 540); the tables come last. Paper-size architecture with random weights, bf16.
#
#   bash benchmarks/gpu_speedups.sh [OUT_DIR]
#
# Steps, most important first (each stops at its share of the budget; rows print as they finish):
#   1. speedups: benchmarks/speedups.py at 768x768, batch 1 and 8: eager, +exact speed-ups (decoder output
#      channels folded, text keys/values once per call), +cudnn.benchmark, +torch.compile with CUDA graphs, each
#      timed, with its error against fp32 and whether it is kept (agrees with fp32 as the eager path does) and the
#      ratio to the floor. AUTOTUNE=1 adds the max-autotune compile row (compiles for many minutes: raise BUDGET_S).
#   2. throughput: benchmarks/predict_throughput.py: apdepth predict's marginal time per 1024x768 JPEG against the
#      bare pipeline, batch 8, processing resolution 768 (the issue's target: ratio <= 1.25).
# Dry run on a CPU (checks the script end to end before GPU time is spent):
#   PYTHON=.venv/bin/python PRESET=tiny DEVICE=cpu RES=64 SIZE=128x96 NUM=6 NUM_SMALL=2 BATCH=2 \
#       bash benchmarks/gpu_speedups.sh /tmp/speedups
# (COMPILE=0 leaves out the compiled rows: compiling even the tiny model takes minutes on a busy CPU.)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmark_results}
py=${PYTHON:-python}
preset=${PRESET:-sd2}; device=${DEVICE:-auto}; dtype=${DTYPE:-bf16}; res=${RES:-768}
size=${SIZE:-1024x768}; num=${NUM:-64}; num_small=${NUM_SMALL:-16}; batch=${BATCH:-8}
budget=${BUDGET_S:-540}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
start=$SECONDS
iters=15; warmup=3; autotune=""
if [ "$device" = cpu ]; then iters=2; warmup=1; fi
[ "${AUTOTUNE:-0}" = 1 ] && autotune=--autotune
[ "${COMPILE:-1}" = 0 ] && autotune=--no-compile  # a quicker dry run

# shellcheck source=benchmarks/budget_step.sh
source benchmarks/budget_step.sh  # the working directory is the repository root (cd above)

step speedups $((budget - 120)) "$py" benchmarks/speedups.py --preset "$preset" --device "$device" --dtype "$dtype" \
    --res "$res" --batch-sizes 1 "$batch" --warmup "$warmup" --iters "$iters" $autotune --json "$out/speedups.json"
step throughput 120 "$py" benchmarks/predict_throughput.py --preset "$preset" --device "$device" --dtype "$dtype" \
    --size "$size" --num "$num" --num-small "$num_small" --batch-size "$batch" --processing-res "$res" \
    --json "$out/throughput.json"

echo
echo "# Summary ($((SECONDS - start)) s)"
for name in speedups throughput; do
    echo; echo "== $name"
    if grep -q '^Device:' "$out/$name.md" 2>/dev/null; then
        sed -n '/^Device:/,$p' "$out/$name.md" | grep -v '^$' | grep -v '^{'
    else  # stopped before its table: the rows it finished (one JSON line each)
        grep -h '^{"variant"' "$out/$name.md" 2>/dev/null || tail -n 2 "$out/$name.md" 2>/dev/null
    fi
done
exit 0
