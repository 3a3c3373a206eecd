#!/usr/bin/env bash
# Follow the README's Colab step in a simulated Colab image and time it: a clean virtual
# environment holding only what the image has (torch — CPU here — numpy, pandas, scikit-learn,
# scipy, matplotlib, pyarrow, tabulate, jupyter), then scripts/install_colab.sh run from a Python
# process started in another directory, which then imports the kit (a running Colab kernel), then
# the first notebook (01_tokenize) headless for both embedded presets, from that directory, which
# needs their backbones. Prints each step's time.
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
OUT=$(mktemp -d)
# As in a Colab notebook: a kernel already running, in another directory (/content), runs the install
# (`!bash .../install_colab.sh`), then imports the kit in the same process — no restart
mkdir -p "$OUT/content"
(cd "$OUT/content" && PIP="$ENV/bin/python -m pip" "$ENV/bin/python" - "$REPO" <<'PY'
import importlib, subprocess, sys
repo = sys.argv[1]
subprocess.run(["bash", f"{repo}/scripts/install_colab.sh"], check=True)
importlib.invalidate_caches()
import kit, kit.core.env
assert str(kit.core.env.REPO_ROOT) == repo, f"the kit points at {kit.core.env.REPO_ROOT}, not the clone {repo}"
assert not kit.__file__.startswith(repo), f"kit imported from the clone ({kit.__file__}), not the install"
print(f"import kit from {kit.__file__} in the running process; its repository: {kit.core.env.REPO_ROOT}")
PY
)
took_install=$(( $(date +%s) - start ))
start=$(date +%s)
for model in minilm smollm2; do
  # KIT_CACHE: a fresh cache, so SmolLM2's GGUF is exported here as on a new Colab machine
  KIT_ENV=colab KIT_WORK="$OUT/work" KIT_CACHE="$OUT/cache" "$ENV/bin/python" -m papermill --no-progress-bar \
    notebooks/01_tokenize.ipynb "$OUT/01_tokenize-$model.ipynb" -p MODEL "$model" -p MAX_ROWS 24 \
    -p N_FOLDS 2 -p MAX_LENGTH 64 -y "{TRAIN: [$REPO/data/kaggle/train_sample.csv], TEST: $REPO/data/kaggle/test.csv}" \
    --cwd "$OUT/content" > "$OUT/01_tokenize-$model.log" 2>&1 || { tail -20 "$OUT/01_tokenize-$model.log"; exit 1; }
  ls "$OUT/work/tokenized/$model/train.parquet" > /dev/null
done
took_run=$(( $(date +%s) - start ))
line="$(date -u +%F) colab install (scripts/install_colab.sh on the image${REUSED:+, reused: not a fresh one}): ${took_install} s; 01_tokenize minilm + smollm2 headless: ${took_run} s"
echo "$line; env $ENV"
mkdir -p "$REPO/results" && echo "$line" >> "$REPO/results/install_paths.txt"  # the README's figures
