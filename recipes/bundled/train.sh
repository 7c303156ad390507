#!/usr/bin/env bash
# Trains the small base model and the four bundled small codecs from scratch, and exports them into
# diffcodec/assets/models/<name>-small (config.json, model.safetensors, README.md model card):
#
#   DATA=/data bash recipes/bundled/train.sh                    # the recipes' step counts, on what `accelerator: auto` finds
#   DATA=/data bash recipes/bundled/train.sh stablecodec cadc   # some methods (the base must exist)
#   DATA=/data SWEEP=1 bash recipes/bundled/train.sh            # choose the per-λ ladders from a measured λ sweep
#
# Phases, each a set of runs that go side by side (one GPU holds them all; on a CPU they share the cores):
#   1. base: the kl-f8 VAE (recipes/base/vae.yaml), then the ε and v U-Nets on its latents (side by side);
#   2. stage 1 of every method named, side by side: SC / CADC / OneDC at their middle λ, OSCAR all rungs;
#   3. (SWEEP=1) sweep: one short run per λ of SWEEP_LAMBDAS_<METHOD> from stage 1 for SC / CADC / OneDC;
#      each run's rate is measured on training photos, log-rate is fitted against log-λ and the ladder is
#      the λ of each SWEEP_TARGETS rate (recipes/bundled/finish.py sweep); a failed fit keeps the fixed λ;
#   4. rungs: one run per λ of each ladder from stage 1 (OSCAR: its stage 2), side by side;
#   5. export each method's runs as one model folder, measure its rungs' rates on training photos, check
#      that they separate (strictly increasing, each ≥ LADDER_MIN_RATIO × the previous), write its card.
#
# Every phase's data is the crop bank (diffcodec.data.CropBankDataModule: photos decoded once onto the
# training device, crops and flips cut there); the recipes' crops, flips and batch sizes carry over.
#
# Environment: DATA (required: the data folder, holding photos/ and kodak/); PHOTOS / VAL (image folders,
# default $DATA/photos and $DATA/kodak; VAL=none: no validation); PRECISION (every phase's
# --trainer.precision; default bf16-mixed where CUDA is available, else 32-true); DATA_MODULE (default
# diffcodec.data.CropBankDataModule) and BANK_ARGS (default: 1000 batches per epoch);
# VAE_ARGS / UNET_ARGS / STAGE1_ARGS / SWEEP_ARGS / RUNG_ARGS (extra `diffcodec fit` arguments of each
# phase, e.g. "--trainer.max_steps 100000 --trainer.max_time 00:00:01:30 --data.init_args.batch_size 16");
# VAE_SECONDS / UNET_SECONDS / STAGE1_SECONDS / SWEEP_SECONDS / RUNG_SECONDS (each phase's
# --trainer.max_time; empty: none); DEADLINE (epoch seconds by which training must be done: the sweep is
# skipped, keeping the fixed λ, unless it fits, and the rungs' max_time shrinks to fit, keeping
# PHASE_OVERHEAD (30) s per phase and EXPORT_SECONDS (40) for the exports); MODEL_ARGS (extra arguments of every run); LADDER_<METHOD> (the fixed λ, e.g. LADDER_CADC="0.5 0.05
# 0.005"); SWEEP, SWEEP_LAMBDAS_<METHOD>, SWEEP_TARGETS (bpp, default "0.02 0.05 0.15"); LADDER_CHECK
# (fail | warn), LADDER_MIN_RATIO (1.5); RECORD, MODELS_DIR; PYTHON (default python3).
# Every command, its phase, wall time, optimizer steps and steps/s go to runs/bundled/record.tsv; the export
# step copies the lines of each model into its model card. Kodak is the test set: it is only ever the
# base's val set, never a training or sweep image.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
DATA=${DATA:?set DATA to the data folder (it holds photos/ and kodak/), e.g. DATA=/data bash recipes/bundled/train.sh}
PHOTOS=${PHOTOS:-$DATA/photos}
VAL=${VAL:-$DATA/kodak}
RECORD=${RECORD:-runs/bundled/record.tsv}
MODELS_DIR=${MODELS_DIR:-diffcodec/assets/models}
PY=${PYTHON:-python3}
DIFFCODEC=("$PY" -m diffcodec.cli)
if [[ -z ${PRECISION:-} ]]; then
  PRECISION=32-true
  "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" && PRECISION=bf16-mixed
fi
DATA_MODULE=${DATA_MODULE:-diffcodec.data.CropBankDataModule}
read -r -a BANK_ARGS <<< "${BANK_ARGS:---data.init_args.batches_per_epoch 1000}"
[[ $DATA_MODULE == diffcodec.data.CropBankDataModule ]] || BANK_ARGS=()
read -r -a MODEL_ARGS <<< "${MODEL_ARGS:-}"
read -r -a VAE_ARGS <<< "${VAE_ARGS:-}"
read -r -a UNET_ARGS <<< "${UNET_ARGS:-}"
read -r -a STAGE1_ARGS <<< "${STAGE1_ARGS:-}"
read -r -a SWEEP_ARGS <<< "${SWEEP_ARGS:-}"
read -r -a RUNG_ARGS <<< "${RUNG_ARGS:-}"
VAL_ARGS=(--data.init_args.val_dir "$VAL")
[[ $VAL == none ]] && VAL_ARGS=(--data.init_args.val_dir null --trainer.limit_val_batches 0)
export PHOTOS
mkdir -p runs/bundled "$(dirname "$RECORD")"

# The fixed ladders (λ in ascending-rate order; λ weights the rate): a decade apart, so that they separate
# even without a sweep; and the sweep's λ (around the stage-1 λ, 0.5 and 4.6, and two decades below it).
declare -A LADDER=([stablecodec]="0.5 0.05 0.005" [cadc]="0.5 0.05 0.005" [onedc]="4.6 0.46 0.046")
declare -A SWEEP_LAMBDAS=([stablecodec]="0.5 0.05 0.005" [cadc]="0.5 0.05 0.005" [onedc]="4.6 0.46 0.046")
for method in stablecodec cadc onedc; do
  name=LADDER_${method^^} && [[ -n ${!name:-} ]] && LADDER[$method]=${!name}
  name=SWEEP_LAMBDAS_${method^^} && [[ -n ${!name:-} ]] && SWEEP_LAMBDAS[$method]=${!name}
done
SWEEP=${SWEEP:-0}
SWEEP_TARGETS=${SWEEP_TARGETS:-0.02 0.05 0.15}
PHASE_OVERHEAD=${PHASE_OVERHEAD:-30}
EXPORT_SECONDS=${EXPORT_SECONDS:-40}

max_time() {  # SECONDS -> the --trainer.max_time arguments (none for an empty value)
  [[ -n $1 ]] && printf -- '--trainer.max_time\n%02d:%02d:%02d:%02d\n' $(($1 / 86400)) $(($1 % 86400 / 3600)) \
    $(($1 % 3600 / 60)) $(($1 % 60))
  return 0
}
with_time() {  # SECONDS ARGS...: the max_time arguments, then ARGS, one a line (for mapfile)
  max_time "$1"
  shift
  [[ $# -eq 0 ]] || printf '%s\n' "$@"
}
remaining() { echo $((DEADLINE - $(date +%s))); }  # seconds left before DEADLINE
mapfile -t VAE_ARGS < <(with_time "${VAE_SECONDS:-}" "${VAE_ARGS[@]}")
mapfile -t UNET_ARGS < <(with_time "${UNET_SECONDS:-}" "${UNET_ARGS[@]}")
mapfile -t STAGE1_ARGS < <(with_time "${STAGE1_SECONDS:-}" "${STAGE1_ARGS[@]}")

run() {  # tag phase checkpoint command...: run it; append tag, phase, wall s, steps, steps/s, command to the record
  local tag=$1 phase=$2 ckpt=$3 rc=0; shift 3
  local start=$SECONDS
  "$@" || rc=$?
  local seconds=$((SECONDS - start)) stats=$'—\t—'
  [[ -n $ckpt ]] && stats=$("$PY" recipes/bundled/finish.py run-stats "$ckpt" "$seconds" || echo $'—\t—')
  local command="$*"
  command=${command/#"${DIFFCODEC[*]}"/diffcodec}  # the command as a user types it
  command=${command/#"$PY "/python }
  printf '%s\t%s\t%s\t%s\t%s\n' "$tag" "$phase" "$seconds" "$stats" "$command" >> "$RECORD"
  return $rc
}
fit() {  # tag phase logdir recipe [args...]: one training run on the bundled photos, logged under logdir
  local tag=$1 phase=$2 logdir=$3 recipe=$4; shift 4
  run "$tag" "$phase" "$logdir/version_0/checkpoints/last.ckpt" "${DIFFCODEC[@]}" fit -c "$recipe" \
    --data "$DATA_MODULE" --data.init_args.train_dir "$PHOTOS" --trainer.precision "$PRECISION" \
    "${BANK_ARGS[@]}" "${MODEL_ARGS[@]}" "$@"
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

base() {
  rm -rf runs/base
  fit base base runs/base/vae recipes/base/vae.yaml "${VAL_ARGS[@]}" "${VAE_ARGS[@]}"
  q fit base base runs/base/unet_eps recipes/base/unet_eps.yaml "${VAL_ARGS[@]}" "${UNET_ARGS[@]}"
  q fit base base runs/base/unet_v recipes/base/unet_v.yaml "${VAL_ARGS[@]}" "${UNET_ARGS[@]}"
  side_by_side
}

stage1() {  # methods...
  for method in "$@"; do
    rm -rf "runs/bundled/$method" runs/bundled/"$method"-[rs][0-9]* runs/bundled/"$method"-stage2 \
      runs/bundled/"$method"-sweep.json runs/bundled/"$method"-ladder*
    q fit "$method" stage1 "runs/bundled/$method" "recipes/$method/bundled.yaml" "${STAGE1_ARGS[@]}"
  done
  side_by_side
}

one_lambda() {  # method phase name λ [args...]: a one-λ run of a per-λ method from its stage-1 checkpoint
  local method=$1 phase=$2 name=$3 lam=$4 extra=(); shift 4
  [[ $method == onedc ]] && extra=(--model.init_args.rate_warmup_steps 0)  # λ is final from step one
  fit "$method" "$phase" "runs/bundled/$name" "recipes/$method/bundled.yaml" \
    --model.init_args.codec.init_args.lambdas "[$lam]" --init_from.checkpoint "$(last "$method")" \
    --trainer.max_steps 80 --trainer.logger.init_args.name "$name" "${extra[@]}" "$@"
}

queue_lambdas() {  # method phase letter "λ..." [args...]: queue a one-λ run per λ, named <method>-<letter><i>
  local method=$1 phase=$2 letter=$3 lambdas=$4 i=0; shift 4
  for lam in $lambdas; do
    q one_lambda "$method" "$phase" "$method-$letter$i" "$lam" "$@"
    i=$((i + 1))
  done
}

choose_ladder() {  # method: measure the sweep runs, fit, write the proposed ladder (or nothing) to a file
  local method=$1 ckpts=() i=0
  for _ in ${SWEEP_LAMBDAS[$method]}; do ckpts+=("$(last "$method-s$i")"); i=$((i + 1)); done
  # shellcheck disable=SC2086  # SWEEP_TARGETS is a list of numbers
  run "$method" ladder "" "$PY" recipes/bundled/finish.py sweep "runs/bundled/$method-sweep.json" "${ckpts[@]}" \
    --targets $SWEEP_TARGETS > "runs/bundled/$method-ladder.txt" \
    || { echo "train.sh: $method: the sweep proposed no ladder; keeping λ ${LADDER[$method]}" >&2; rm -f "runs/bundled/$method-ladder.txt"; }
}

sweep() {  # methods...: short one-λ runs, then each per-λ method's ladder from their measured rates
  local swept=() sweep_args=("${SWEEP_ARGS[@]}")
  if [[ -n ${DEADLINE:-} ]]; then  # the sweep, its measurement, the shortest rungs and the exports must fit
    # the sweep runs, measuring them (20 s), rungs of at least 20 s, each phase's start-up, the exports
    local need=$((${SWEEP_SECONDS:-30} + 20 + 20 + 2 * PHASE_OVERHEAD + EXPORT_SECONDS))
    if (($(remaining) < need)); then
      echo "train.sh: no time for the sweep ($(remaining) s left, it needs $need s); keeping the fixed λ" >&2
      return 0
    fi
  fi
  mapfile -t sweep_args < <(with_time "${SWEEP_SECONDS:-}" "${sweep_args[@]}")
  for method in "$@"; do
    [[ $method == oscar ]] && continue
    swept+=("$method")
    queue_lambdas "$method" sweep s "${SWEEP_LAMBDAS[$method]}" "${sweep_args[@]}"
  done
  [[ ${#swept[@]} -gt 0 ]] || return 0
  side_by_side
  for method in "${swept[@]}"; do q choose_ladder "$method"; done
  side_by_side
  for method in "${swept[@]}"; do
    if [[ -s runs/bundled/$method-ladder.txt ]]; then LADDER[$method]=$(< "runs/bundled/$method-ladder.txt"); fi
    echo "train.sh: $method ladder: λ ${LADDER[$method]}" >&2
  done
}

rungs() {  # methods...
  local seconds=${RUNG_SECONDS:-} rung_args
  if [[ -n ${DEADLINE:-} ]]; then  # what is left, less the start-up and the exports
    local left=$(($(remaining) - PHASE_OVERHEAD - EXPORT_SECONDS))
    ((left < 10)) && left=10
    [[ -z $seconds ]] || ((seconds > left)) && seconds=$left
    echo "train.sh: rungs get $seconds s of training each" >&2
  fi
  mapfile -t rung_args < <(with_time "$seconds" "${RUNG_ARGS[@]}")
  for method in "$@"; do
    if [[ $method == oscar ]]; then
      q fit oscar rungs runs/bundled/oscar-stage2 recipes/oscar/bundled.yaml --model.init_args.stage 2 \
        --init_from.checkpoint "$(last oscar)" --data.init_args.batch_size 2 \
        --trainer.logger.init_args.name oscar-stage2 "${rung_args[@]}"
      continue
    fi
    queue_lambdas "$method" rungs r "${LADDER[$method]}" "${rung_args[@]}"
  done
  side_by_side
}

export_model() {  # method: one model folder from its runs, its measured rates and ladder check, its model card
  local method=$1 out=$MODELS_DIR/$1-small ckpts=() status=0 n
  local check=runs/bundled/$method-ladder-check.json
  if [[ $method == oscar ]]; then
    ckpts=("$(last oscar-stage2)")
  else
    n=$(wc -w <<< "${LADDER[$method]}")
    for ((i = 0; i < n; i++)); do ckpts+=("$(last "$method-r$i")"); done
  fi
  rm -rf "$out"
  # float16 parameters: half the package size; the quality floor is measured on these weights
  run "$method" export "" "${DIFFCODEC[@]}" export "${ckpts[@]}" "$out" --dtype float16
  if [[ $method == oscar ]]; then  # OSCAR's nominal rates are its own (latent strides); check them
    run "$method" export "" "$PY" recipes/bundled/finish.py check "$out" --report "$check" || status=$?
  else  # a ladder's nominal rates: measured on training photos, then checked
    run "$method" export "" "$PY" recipes/bundled/finish.py set-rates "$out" --report "$check" || status=$?
  fi
  "$PY" recipes/bundled/finish.py card "$out" "$RECORD" "$method" --sweep "runs/bundled/$method-sweep.json" \
    --check "$check"
  return $status
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
echo "train.sh: precision $PRECISION, data $DATA_MODULE, photos $PHOTOS, sweep $SWEEP" >&2
[[ " ${targets[*]} " == *" base "* ]] && base
if [[ ${#methods[@]} -gt 0 ]]; then
  stage1 "${methods[@]}"
  [[ $SWEEP == 1 ]] && sweep "${methods[@]}"
  rungs "${methods[@]}"
  for method in "${methods[@]}"; do q export_model "$method"; done
  side_by_side || { echo "train.sh: an export or ladder check failed (see above); the folders are written" >&2; exit 1; }
fi
