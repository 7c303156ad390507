#!/usr/bin/env bash
# Trains the small base model and the four bundled small codecs from scratch, and exports them into
# diffcodec/assets/models/<name>-small (config.json, model.safetensors, README.md model card):
#
#   bash recipes/bundled/train.sh                       # CPU (what the shipped models were trained with)
#   FIT_ARGS="--trainer.accelerator gpu" bash recipes/bundled/train.sh
#   bash recipes/bundled/train.sh stablecodec           # one method (the base must exist)
#
# Every command and its wall time is appended to runs/bundled/record.tsv; the export step copies the
# lines of each model into its model card. Data: ../shared/data/photos only (Kodak is the test set).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
RECORD=${RECORD:-runs/bundled/record.tsv}
MODELS_DIR=${MODELS_DIR:-diffcodec/assets/models}
FIT_ARGS=${FIT_ARGS:-}
RUNG_STEPS=${RUNG_STEPS:-80}
mkdir -p runs/bundled

run() {  # run a command, append "<tag>\t<seconds>\t<command>" to the record
  local tag=$1; shift
  local start=$SECONDS
  "$@"
  printf '%s\t%s\t%s\n' "$tag" "$((SECONDS - start))" "$*" >> "$RECORD"
}
fit() { local tag=$1; shift; run "$tag" diffcodec fit "$@" $FIT_ARGS; }
last() { echo "runs/bundled/$1/version_0/checkpoints/last.ckpt"; }

train_base() {
  rm -rf runs/base
  fit base -c recipes/base/vae.yaml
  fit base -c recipes/base/unet_eps.yaml
  fit base -c recipes/base/unet_v.yaml
}

train_ladder() {  # method, then the ladder's λ in ascending rate order
  local method=$1; shift
  rm -rf "runs/bundled/$method" runs/bundled/"$method"-r*
  fit "$method" -c "recipes/$method/bundled.yaml"
  local ckpts=() i=0 extra=()
  [[ $method == onedc ]] && extra=(--model.init_args.rate_warmup_steps 0)  # λ is final from the first step
  for lam in "$@"; do
    fit "$method" -c "recipes/$method/bundled.yaml" --model.init_args.lambdas "[$lam]" \
      --init_from.checkpoint "$(last "$method")" --trainer.max_steps "$RUNG_STEPS" \
      --trainer.logger.init_args.name "$method-r$i" "${extra[@]}"
    ckpts+=("$(last "$method-r$i")"); i=$((i + 1))
  done
  local out=$MODELS_DIR/$method-small
  rm -rf "$out"
  run "$method" diffcodec export "${ckpts[@]}" "$out"
  run "$method" diffcodec export "${ckpts[@]}" "$out" --rates $(python recipes/bundled/finish.py rates "$out")
  python recipes/bundled/finish.py card "$out" "$RECORD" "$method"
}

train_oscar() {
  rm -rf runs/bundled/oscar runs/bundled/oscar-stage2
  fit oscar -c recipes/oscar/bundled.yaml
  fit oscar -c recipes/oscar/bundled.yaml --model.init_args.stage 2 --init_from.checkpoint "$(last oscar)" \
    --trainer.max_steps 300 --data.init_args.batch_size 2 --trainer.logger.init_args.name oscar-stage2
  local out=$MODELS_DIR/oscar-small
  rm -rf "$out"
  run oscar diffcodec export "$(last oscar-stage2)" "$out"
  python recipes/bundled/finish.py card "$out" "$RECORD" oscar
}

targets=("${@:-base oscar stablecodec cadc onedc}")
for target in ${targets[*]}; do
  case $target in
    base) train_base ;;
    oscar) train_oscar ;;
    stablecodec) train_ladder stablecodec 2 0.5 0.125 ;;
    cadc) train_ladder cadc 2 0.5 0.125 ;;
    onedc) train_ladder onedc 9.2 4.6 2.3 ;;
    *) echo "unknown target $target (base, oscar, stablecodec, cadc, onedc)" >&2; exit 2 ;;
  esac
done
