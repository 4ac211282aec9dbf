#!/usr/bin/env bash
# Train the bundled default model end to end: render the training scenes, then VAE -> prior -> ApDepth
# (stage 1 + stage 2) -> the prior-free control at the same budget -> end-to-end fine-tuning of both on
# the decoded depth (apdepth_e2e is the model that ships; noprior_e2e its control). Every step is resumable: a finished
# model is skipped, an interrupted run continues from its newest checkpoint, so re-running the same
# command after a kill (or a machine that went away) picks up where it stopped. Each finished model is
# packed into PACK_DIR at once (one .tar per model, U-Net weights in fp16), so a run cut short still
# hands back every model it finished.
#
#   scripts/train_bundled.sh cpu     # 2-core CPU budget (the configs' own step counts), ~110 min on one core
#   scripts/train_bundled.sh gpu     # one NVIDIA H100/H200: ~9 min, larger batches and budgets, bf16
#   scripts/train_bundled.sh dry     # the whole chain at toy budgets on any machine (a test runs it)
#
# Environment: OUT_ROOT (run folders, default outputs/bundled), DATA (rendered scenes, default
# data/bundled_train), PACK_DIR (packed models, default $OUT_ROOT/packed), APDEPTH (the command, default
# `apdepth`; PYTHON the interpreter for the packing step), SKIP_NOPRIOR=1 to leave out the control. Commands and wall times: docs/training.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${1:-cpu}
APDEPTH=${APDEPTH:-apdepth}
PYTHON=${PYTHON:-python}
OUT_ROOT=${OUT_ROOT:-outputs/bundled}
PACK_DIR=${PACK_DIR:-$OUT_ROOT/packed}
CFG=configs/train/bundled

case "$PROFILE" in
  cpu)
    DATA=${DATA:-data/bundled_train}
    NUM_SCENES=2000; WORKERS=2
    VAE=(); PRIOR=(); UNET=(); E2E=()
    ;;
  gpu)
    # One H100/H200 and 16 CPU cores. The renderer runs on the CPU cores in parallel (about 70
    # scenes/s with 16 processes); the GPU then reads the rendered scenes from disk through 8 loader
    # workers, so data is never the bottleneck (train_log.jsonl has the step times; docs/training.md
    # the samples/s delivered vs consumed).
    DATA=${DATA:-data/bundled_train_gpu}
    NUM_SCENES=12000; WORKERS=16
    COMMON=(data.num_workers=8 mixed_precision=bf16 checkpointing.every=500 logging.every=100)
    VAE=("${COMMON[@]}" optim.micro_batch=32 stages.0.until=4000 validation.every=2000)
    PRIOR=("${COMMON[@]}" model.prior=null optim.lr=5e-4 optim.micro_batch=32 stages.0.until=4000 validation.every=2000)
    UNET=("${COMMON[@]}" optim.micro_batch=32 stages.0.until=5000 stages.1.until=6000 validation.every=1000)
    E2E=("${COMMON[@]}" optim.micro_batch=32 stages.0.until=500 validation.every=100)
    ;;
  dry)
    DATA=${DATA:-$OUT_ROOT/data}
    NUM_SCENES=24; WORKERS=2
    COMMON=(checkpointing.every=2 checkpointing.keep_last=1 logging.every=1 validation.dataset.num_samples=2
            validation.num_images=1 optim.warmup_steps=1)
    VAE=("${COMMON[@]}" optim.micro_batch=2 data.datasets.0.size=[64,64] stages.0.until=3 validation.every=3)
    PRIOR=("${COMMON[@]}" optim.micro_batch=2 stages.0.until=3 validation.every=3)
    UNET=("${COMMON[@]}" optim.micro_batch=2 data.datasets.0.size=[64,64] stages.0.until=2 stages.1.until=3
          validation.every=3 validation.dataset.size=[64,64])
    E2E=("${COMMON[@]}" optim.micro_batch=2 data.datasets.0.size=[64,64] stages.0.until=2 validation.every=2
         validation.dataset.size=[64,64] validation.at_start=false)
    ;;
  *)
    echo "usage: $0 cpu|gpu|dry" >&2
    exit 2
    ;;
esac

mkdir -p "$OUT_ROOT" "$PACK_DIR"
stamp() { date -u +%H:%M:%S; }
log() { echo "[$(stamp)] $*" | tee -a "$OUT_ROOT/chain.log"; }

# 0. Training scenes (256x256, exact depth as float32 .npy), seeds 0..NUM_SCENES-1: disjoint from the
#    held-out test set (seeds from 900000) and from validation (hashed seeds of the stream).
log "render $NUM_SCENES scenes into $DATA ($WORKERS processes)"
t0=$(date +%s)
"$APDEPTH" synth --out "$DATA" --num "$NUM_SCENES" --size 256x256 --seed 0 --scene mixed --depth-format npy \
  --workers "$WORKERS" --skip-existing
log "rendered in $(( $(date +%s) - t0 )) s"

# run NAME CONFIG EXPORT_SUBDIR OVERRIDES...: train (or resume) one model, then pack it.
run() {
  local name=$1 config=$2 export=$3; shift 3
  local dir="$OUT_ROOT/$name"
  if [[ -f "$dir/$export/config.json" || -f "$dir/$export/model_index.json" ]]; then
    log "$name: already finished ($dir/$export)"
  else
    local resume=()
    [[ -f "$dir/checkpoints/latest" ]] && resume=(--resume latest) && log "$name: resuming from $(cat "$dir/checkpoints/latest")"
    log "$name: training"
    local t=$(date +%s)
    "$APDEPTH" train --config "$config" --output "$dir" "${resume[@]}" "data.datasets.0.path=$DATA" "$@"
    log "$name: finished in $(( $(date +%s) - t )) s"
  fi
  "$PYTHON" -m apdepth.training.pack "$dir/$export" "$PACK_DIR/$name.tar"
  log "$name: packed -> $PACK_DIR/$name.tar ($(du -h "$PACK_DIR/$name.tar" | cut -f1))"
}

run vae "$CFG/vae.yaml" vae "${VAE[@]}"
run prior "$CFG/prior.yaml" prior "${PRIOR[@]}"
run apdepth "$CFG/apdepth.yaml" pipeline model.vae="$OUT_ROOT/vae" model.prior="$OUT_ROOT/prior" "${UNET[@]}"
# The model that ships comes before the controls, so a run cut short still hands it back.
run apdepth_e2e "$CFG/apdepth_e2e.yaml" pipeline model.init_from="$OUT_ROOT/apdepth/pipeline" "${E2E[@]}"
if [[ "${SKIP_NOPRIOR:-0}" != 1 ]]; then
  run noprior "$CFG/noprior.yaml" pipeline model.vae="$OUT_ROOT/vae" "${UNET[@]}"
  run noprior_e2e "$CFG/noprior_e2e.yaml" pipeline model.init_from="$OUT_ROOT/noprior/pipeline" "${E2E[@]}"
fi
log "done: $(ls "$PACK_DIR")"
