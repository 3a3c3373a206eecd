#!/usr/bin/env bash
# CI: the two GPU-image install paths, each in a clean environment holding only the image's
# packages — Kaggle (wheels built by build_kaggle_wheels.sh, installed offline with --no-index,
# then the imports) and Colab (install_colab.sh on the same image, then 01_tokenize headless for
# both embedded presets). ~3 minutes; needs the package index, as scripts/setup.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export PIP="${PIP:-.venv/bin/python -m pip}"
bash scripts/build_kaggle_wheels.sh "$TMP/wheels"
bash scripts/check_kaggle_wheels.sh "$TMP/wheels" "$TMP/image"
bash scripts/check_colab_install.sh "$TMP/image"
