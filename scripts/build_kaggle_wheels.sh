#!/usr/bin/env bash
# Build the `lora-litee-wheels` Kaggle dataset: every wheel requirements-kaggle.txt needs, for
# Kaggle's Python and Linux, WITHOUT torch / CUDA / triton (the GPU image has them; torch would
# otherwise arrive as a dependency of peft, accelerate and bitsandbytes: ~3 GB).
#
#   bash scripts/build_kaggle_wheels.sh [OUT_DIR]        # default: lora-litee-wheels
#   KAGGLE_PYTHON=3.11 (default) picks the interpreter version the wheels are for.
#
# Then upload OUT_DIR as a Kaggle dataset named lora-litee-wheels; the notebooks install from
# it offline (kit.core.env.install_offline). scripts/check_kaggle_wheels.sh tests the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-lora-litee-wheels}
PYV=${KAGGLE_PYTHON:-3.11}
PIP=${PIP:-python3 -m pip}
# bitsandbytes 0.50.2 ships only a manylinux_2_24 wheel; Kaggle's glibc (2.35) takes all of these
PLATFORMS=(manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_28_x86_64
           manylinux_2_31_x86_64 manylinux_2_34_x86_64 linux_x86_64 any)
TARGET=(--only-binary=:all: --python-version "$PYV" --implementation cp)
for p in "${PLATFORMS[@]}"; do TARGET+=(--platform "$p"); done
mkdir -p "$OUT"
# 1. the packages that depend on torch: without their dependencies ...
TORCH_DEPENDENT='^(peft|accelerate|bitsandbytes)=='
grep -E "$TORCH_DEPENDENT" requirements-kaggle.txt > "$OUT/.torch-dependent.txt"
$PIP download -q --disable-pip-version-check --no-deps -d "$OUT" "${TARGET[@]}" -r "$OUT/.torch-dependent.txt"
# 2. ... whose other dependencies come here, with everything else and its dependencies
grep -vE "$TORCH_DEPENDENT|^#|^$" requirements-kaggle.txt > "$OUT/.rest.txt"
cat >> "$OUT/.rest.txt" <<'DEPS'
psutil
pyyaml
packaging
huggingface-hub
numpy
tqdm
DEPS
$PIP download -q --disable-pip-version-check -d "$OUT" "${TARGET[@]}" -r "$OUT/.rest.txt"
rm -f "$OUT/.torch-dependent.txt" "$OUT/.rest.txt"
if ls "$OUT" | grep -Ei '^(torch|triton|nvidia)[-_]'; then
  echo "error: a torch/CUDA/triton wheel got into $OUT (see above)" >&2
  exit 1
fi
echo "$(ls "$OUT" | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT"
