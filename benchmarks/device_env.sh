# Shared by the one-call device scripts (benchmarks/gpu_check.sh, recipes/bundled/device.sh); source it
# from the repository root. The device image has torch, transformers, peft, lightning and huggingface_hub
# but not diffusers, constriction, jsonargparse, lpips or webdataset: they travel as wheels in .whl/
# (benchmarks/device_wheels.txt, ~8 MB). Once, in the repository root of the calling session:
#
#   source benchmarks/device_env.sh && download_device_wheels    # here: .whl/ (ignored through .git/info/exclude)
#
# then name ".whl" in the run's carry list; on the device the script calls install_carried_wheels.

# shellcheck shell=bash
DEVICE_WHEELS_LIST=${DEVICE_WHEELS_LIST:-benchmarks/device_wheels.txt}

ignore_locally() {  # PATH...: ignore repository-root paths through .git/info/exclude (not a tracked file)
  local exclude
  exclude=$(git rev-parse --git-path info/exclude) || return 1
  mkdir -p "$(dirname "$exclude")"
  for path in "$@"; do
    grep -qxF "/$path/" "$exclude" 2>/dev/null || echo "/$path/" >> "$exclude"
  done
}

download_device_wheels() {  # [FOLDER]: the wheels of DEVICE_WHEELS_LIST for the device (CPython 3.12, x86-64)
  local folder=${1:-.whl}
  ignore_locally "$folder" || return 1
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$folder" -r "$DEVICE_WHEELS_LIST"
}

install_carried_wheels() {  # [FOLDER]: on the device: install the carried wheels into /tmp/site; PYTHONPATH
  local folder=${1:-.whl}
  if [ -d "$folder" ] && compgen -G "$folder/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$folder"/*.whl || { echo "could not install the carried wheels in $folder" >&2; return 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
}
