#!/usr/bin/env bash
# Trains the small base model and the four bundled small codecs from scratch, and exports them into
# diffcodec/assets/models/<name>-small (config.json, model.safetensors, README.md model card):
#
#   bash recipes/bundled/train.sh                       # the recipes' step counts, on what `accelerator: auto` finds
#   bash recipes/bundled/train.sh stablecodec cadc      # some methods (the base must exist)
#
# Phases, each a set of runs that go side by side (one GPU holds them all; on a CPU they share the cores):
#   1. base: the kl-f8 VAE (recipes/base/vae.yaml), then the ε and v U-Nets on its latents (side by side);
#   2. stage 1 of every method named, side by side: SC / CADC / OneDC at their middle λ, OSCAR all rungs;
#   3. one short run per λ of each ladder from that checkpoint (OSCAR: its stage 2), side by side;
#   4. export each method's runs as one model folder, measure its nominal rates, write its model card.
#
# Environment: DATA (required: the data folder, holding photos/ and kodak/); PHOTOS / VAL (image folders,
# default $DATA/photos and $DATA/kodak; VAL=none: no validation),
# VAE_ARGS / UNET_ARGS / STAGE1_ARGS / RUNG_ARGS (extra `diffcodec fit` arguments of each phase, e.g.
# "--trainer.max_steps 4000 --trainer.max_time 00:00:01:30 --data.init_args.batch_size 16"), RECORD,
# MODELS_DIR. Every command, its phase and wall time go to runs/bundled/record.tsv; the export step copies
# the lines of each model into its model card. Kodak is the test set: it is only ever the base's val set.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
DATA=${DATA:?set DATA to the data folder (it holds photos/ and kodak/), e.g. DATA=/data bash recipes/bundled/train.sh}
PHOTOS=${PHOTOS:-$DATA/photos}
VAL=${VAL:-$DATA/kodak}
RECORD=${RECORD:-runs/bundled/record.tsv}
MODELS_DIR=${MODELS_DIR:-diffcodec/assets/models}
read -r -a VAE_ARGS <<< "${VAE_ARGS:-}"
read -r -a UNET_ARGS <<< "${UNET_ARGS:-}"
read -r -a STAGE1_ARGS <<< "${STAGE1_ARGS:-}"
read -r -a RUNG_ARGS <<< "${RUNG_ARGS:-}"
VAL_ARGS=(--data.init_args.val_dir "$VAL")
[[ $VAL == none ]] && VAL_ARGS=(--data.init_args.val_dir null --trainer.limit_val_batches 0)
export PHOTOS
mkdir -p runs/bundled "$(dirname "$RECORD")"

run() {  # run a command; append "<tag>\t<phase>\t<seconds>\t<command>" to the record
  local tag=$1 phase=$2; shift 2
  local start=$SECONDS
  "$@"
  printf '%s\t%s\t%s\t%s\n' "$tag" "$phase" "$((SECONDS - start))" "$*" >> "$RECORD"
}
fit() {  # tag phase recipe [args...]: one training run on the bundled photos
  local tag=$1 phase=$2 recipe=$3; shift 3
  run "$tag" "$phase" diffcodec fit -c "$recipe" --data.init_args.train_dir "$PHOTOS" "$@"
}
side_by_side() {  # run every queued command in the background, fail if any failed
  local pids=() failed=0
  for command in "${queue[@]}"; do eval "$command" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  queue=()
  return $failed
}
last() { echo "runs/bundled/$1/version_0/checkpoints/last.ckpt"; }
q() { queue+=("$(printf '%q ' "$@")"); }  # queue a command, quoted
queue=()

declare -A LADDER=([stablecodec]="2 0.5 0.125" [cadc]="2 0.5 0.125" [onedc]="9.2 4.6 2.3")

base() {
  rm -rf runs/base
  fit base base recipes/base/vae.yaml "${VAL_ARGS[@]}" "${VAE_ARGS[@]}"
  q fit base base recipes/base/unet_eps.yaml "${VAL_ARGS[@]}" "${UNET_ARGS[@]}"
  q fit base base recipes/base/unet_v.yaml "${VAL_ARGS[@]}" "${UNET_ARGS[@]}"
  side_by_side
}

stage1() {  # methods...
  for method in "$@"; do
    rm -rf "runs/bundled/$method" runs/bundled/"$method"-r* runs/bundled/"$method"-stage2
    q fit "$method" stage1 "recipes/$method/bundled.yaml" "${STAGE1_ARGS[@]}"
  done
  side_by_side
}

rungs() {  # methods...
  for method in "$@"; do
    if [[ $method == oscar ]]; then
      q fit oscar rungs recipes/oscar/bundled.yaml --model.init_args.stage 2 \
        --init_from.checkpoint "$(last oscar)" --data.init_args.batch_size 2 \
        --trainer.logger.init_args.name oscar-stage2 "${RUNG_ARGS[@]}"
      continue
    fi
    local extra=() i=0
    [[ $method == onedc ]] && extra=(--model.init_args.rate_warmup_steps 0)  # λ is final from step one
    for lam in ${LADDER[$method]}; do
      q fit "$method" rungs "recipes/$method/bundled.yaml" --model.init_args.codec.init_args.lambdas "[$lam]" \
        --init_from.checkpoint "$(last "$method")" --trainer.max_steps 80 \
        --trainer.logger.init_args.name "$method-r$i" "${extra[@]}" "${RUNG_ARGS[@]}"
      i=$((i + 1))
    done
  done
  side_by_side
}

export_model() {  # method: one model folder from its runs, then its nominal rates and model card
  local method=$1 out=$MODELS_DIR/$1-small ckpts=()
  if [[ $method == oscar ]]; then
    ckpts=("$(last oscar-stage2)")
  else
    for i in 0 1 2; do ckpts+=("$(last "$method-r$i")"); done
  fi
  rm -rf "$out"
  # float16 parameters: half the package size; the quality floor is measured on these weights
  run "$method" export diffcodec export "${ckpts[@]}" "$out" --dtype float16
  if [[ $method != oscar ]]; then  # a ladder's nominal rates: measured on training photos (OSCAR: its own)
    run "$method" export python recipes/bundled/finish.py set-rates "$out"
  fi
  python recipes/bundled/finish.py card "$out" "$RECORD" "$method"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(base oscar stablecodec cadc onedc)
methods=()
for target in "${targets[@]}"; do
  case $target in
    base) ;;
    oscar | stablecodec | cadc | onedc) methods+=("$target") ;;
    *) echo "unknown target $target (base, oscar, stablecodec, cadc, onedc)" >&2; exit 2 ;;
  esac
done
[[ " ${targets[*]} " == *" base "* ]] && base
if [[ ${#methods[@]} -gt 0 ]]; then
  stage1 "${methods[@]}"
  rungs "${methods[@]}"
  for method in "${methods[@]}"; do q export_model "$method"; done
  side_by_side
fi
