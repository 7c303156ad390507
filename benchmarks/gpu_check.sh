#!/usr/bin/env bash
# Issue 18's device check, in one call on a GPU machine (about 9 minutes on an H100/H200):
#
#   1. `diffcodec bench --random-weights` of the FULL-SIZE OSCAR, StableCodec, CADC and OneDC at 512x768
#      and 2048x2048, fp32 and bf16, entropy parameters on the GPU (`--parameter-path device`: the speed
#      the architecture allows), median of 3 after a warm-up;
#   2. bf16 at 512x768 with the portable CPU parameter path (the default: the price of files that decode
#      anywhere), one timed run;
#   3. the GPU→CPU decode check: the four bundled models × all rungs × 256x256 and 256x384, files written
#      on CUDA and decoded on the CPU (benchmarks/gpu_check.py).
#
# Results go to benchmarks/results/<card>/ (bench_full.json, bench_full_portable.json,
# decode_check.json, log.txt) and, when $OUT is set
# (the device tool), are copied there too; commit them from that folder. Each step has its own time limit
# so that a slow or failing step leaves the others' results.
#
# The device image lacks diffusers, constriction (and what training needs): carry them as wheels. Once, in
# the repository root of the calling session: source benchmarks/device_env.sh && download_device_wheels
# then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600).
#
# GPU_CHECK_TINY=1 runs the same steps on the CPU with the bundled architectures (random weights) at tiny
# sizes, in a minute or two, so the script is known to work without a GPU (tests/test_gpu_check.py).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# shellcheck source=benchmarks/device_env.sh
source benchmarks/device_env.sh
install_carried_wheels .whl || { echo "gpu_check: could not install the carried wheels" >&2; exit 1; }
PY=${PYTHON:-python3}

if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    models="oscar-small stablecodec-small cadc-small onedc-small"
    small=128x128 large=128x192 repeat=1 warmup=0 device=cpu writer="--writer cpu --writer-threads 2"
    check_sizes="128x128" limit=900 limit_portable=600 limit_check=600 isolate=none
    card=cpu-tiny
else
    models="oscar stablecodec cadc onedc"
    small=512x768 large=2048x2048 repeat=3 warmup=1 device=cuda writer="--writer cuda"
    check_sizes="256x256 256x384" limit=270 limit_portable=170 limit_check=80 isolate=model
    card=$($PY -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9.-')
    [ -n "$card" ] || { echo "gpu_check: no CUDA device (GPU_CHECK_TINY=1 for a CPU run)" >&2; exit 2; }
fi
results=${GPU_CHECK_RESULTS:-benchmarks/results/$card}
mkdir -p "$results"
log="$results/log.txt"
: >"$log"
status=0

step() {  # step NAME SECONDS COMMAND...
    local name=$1 seconds=$2
    shift 2
    echo "== $name: $*" | tee -a "$log"
    local start=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
    [ "$rc" = 0 ] || status=1
}

$PY -c "import torch, diffusers, constriction; print('torch', torch.__version__, 'diffusers', diffusers.__version__, \
'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$log" || { echo "gpu_check: missing packages (see the header)"; exit 1; }
[ "$device" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"

bench=("$PY" -m diffcodec.cli bench --random-weights -m $models --device "$device" --isolate "$isolate"
       --warmup "$warmup")
[ "$device" = cpu ] && bench+=(--threads 2)
# one model build per method for both precisions (fp32 first, then cast in place to bf16)
# shellcheck disable=SC2086
step bench-fp32-bf16 "$limit" "${bench[@]}" --repeat "$repeat" --sizes $small $large --dtype fp32 bf16 \
    --parameter-path device --json "$results/bench_full.json"
step bench-bf16-portable "$limit_portable" "${bench[@]}" --repeat 1 --sizes "$small" --dtype bf16 \
    --parameter-path cpu --json "$results/bench_full_portable.json"
# shellcheck disable=SC2086
step decode-check "$limit_check" "$PY" benchmarks/gpu_check.py $writer --sizes $check_sizes --out "$results/decode_check.json"

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/$card" && cp "$results"/* "$OUT/$card/"
fi
echo "gpu_check: results in $results (status $status)"
exit "$status"
