#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): fp16 4-bit (QLoRA) and full-precision training steps,
# inference and the two-device sharding path for tiny Gemma-2 / Llama-3, on one CUDA GPU in a few
# minutes; results in results/gpu.md. On a machine without bitsandbytes, a wheel of it in .whl/
# (bitsandbytes 0.50.2's only Linux wheel is manylinux_2_24) is installed first, offline.
#
#   bash scripts/gpu_check.sh              # on a CUDA machine
#   bash scripts/gpu_check.sh --dry-run    # the same path on the CPU (CI): results/gpu-dry-run.md
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if ! "$PY" -c "import bitsandbytes" 2>/dev/null; then
  ls .whl/bitsandbytes-*.whl > /dev/null 2>&1 || { echo "bitsandbytes is missing and no .whl/bitsandbytes-*.whl to install"; exit 1; }
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/kit-site .whl/bitsandbytes-*.whl
  export PYTHONPATH="/tmp/kit-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$PY" -m scripts.gpu_check "$@"  # from the repository root: the kit is imported from here, installed or not
