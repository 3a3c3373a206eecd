#!/usr/bin/env bash
# Follow the README's Colab step in a simulated Colab image and time it: a clean virtual
# environment holding only what the image has (torch — CPU here — numpy, pandas, scikit-learn,
# scipy, matplotlib, pyarrow, tabulate, jupyter), then scripts/install_colab.sh, then the
# first notebook (01_tokenize) headless for both embedded presets, which needs their
# backbones. Prints each step's time.
#
#   bash scripts/check_colab_install.sh [ENV_DIR]     # an existing ENV_DIR is reused as the image
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ENV=${1:-$(mktemp -d)/colab-image}
PY=${PYTHON:-python3}
if [ -x "$ENV/bin/python" ]; then
  echo "reusing the environment in $ENV (the install time below is then not a fresh Colab's)"
  REUSED=1
else
"$PY" -m venv "$ENV"
grep -E '^(torch|numpy|pandas|scikit-learn|scipy|matplotlib|pyarrow|tabulate|ipykernel|nbclient|nbformat|jupyter-client|tqdm|requests|pyyaml|packaging|psutil|filelock|fsspec|jinja2)==' \
  constraints.txt > "$ENV/image.txt"
"$ENV/bin/pip" install -q --disable-pip-version-check -r "$ENV/image.txt"
fi
start=$(date +%s)
PIP="$ENV/bin/python -m pip" bash scripts/install_colab.sh
took_install=$(( $(date +%s) - start ))
start=$(date +%s)
OUT=$(mktemp -d)
for model in minilm smollm2; do
  # KIT_CACHE: a fresh cache, so SmolLM2's GGUF is exported here as on a new Colab machine
  KIT_ENV=colab KIT_WORK="$OUT/work" KIT_CACHE="$OUT/cache" "$ENV/bin/python" -m papermill --no-progress-bar \
    notebooks/01_tokenize.ipynb "$OUT/01_tokenize-$model.ipynb" -p MODEL "$model" -p MAX_ROWS 24 \
    -p N_FOLDS 2 -p MAX_LENGTH 64 -y '{TRAIN: [data/kaggle/train_sample.csv], TEST: data/kaggle/test.csv}' \
    --cwd "$PWD" > "$OUT/01_tokenize-$model.log" 2>&1 || { tail -20 "$OUT/01_tokenize-$model.log"; exit 1; }
  ls "$OUT/work/tokenized/$model/train.parquet" > /dev/null
done
took_run=$(( $(date +%s) - start ))
line="$(date -u +%F) colab install (scripts/install_colab.sh on the image${REUSED:+, reused: not a fresh one}): ${took_install} s; 01_tokenize minilm + smollm2 headless: ${took_run} s"
echo "$line; env $ENV"
mkdir -p "$REPO/results" && echo "$line" >> "$REPO/results/install_paths.txt"  # the README's figures
