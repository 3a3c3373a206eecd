#!/usr/bin/env bash
# Test a wheels folder built by scripts/build_kaggle_wheels.sh the way Kaggle uses it: a clean
# virtual environment holding only what Kaggle's image has (torch, numpy, pandas, scikit-learn,
# scipy, matplotlib, pyarrow, tabulate, jupyter — CPU torch here), then the offline install
# (--no-index, nothing but the folder) and the imports the kit needs. Prints the install time.
#
#   bash scripts/check_kaggle_wheels.sh WHEELS_DIR [ENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WHEELS=${1:?usage: check_kaggle_wheels.sh WHEELS_DIR [ENV_DIR]}
ENV=${2:-$(mktemp -d)/kaggle-image}
PY=${PYTHON:-python3}
"$PY" -m venv "$ENV"
# the image: versions from our pinned set
grep -E '^(torch|numpy|pandas|scikit-learn|scipy|matplotlib|pyarrow|tabulate|ipykernel|nbclient|nbformat|jupyter-client|tqdm|requests|pyyaml|packaging|psutil|filelock|fsspec|jinja2)==' \
  constraints.txt > "$ENV/image.txt"
"$ENV/bin/pip" install -q --disable-pip-version-check -r "$ENV/image.txt"
start=$(date +%s)
"$ENV/bin/pip" install -q --disable-pip-version-check --no-index --find-links "$WHEELS" -r requirements-kaggle.txt
took=$(( $(date +%s) - start ))
cd "$ENV"  # not the repository: the kit is imported from where a notebook would put it
PYTHONPATH="$OLDPWD" "$ENV/bin/python" - <<'PY'
import bitsandbytes, peft, torch, transformers
import kit, kit.stages.blend, kit.stages.infer, kit.workflows.submit, kit.stages.tokenize, kit.stages.train, kit.cli
print("imports ok: transformers", transformers.__version__, "| peft", peft.__version__,
      "| bitsandbytes", bitsandbytes.__version__, "| torch", torch.__version__, "(the image's)")
PY
line="$(date -u +%F) kaggle offline install: ${took} s ($(du -sh "$WHEELS" | cut -f1), $(ls "$WHEELS" | wc -l) wheels)"
echo "$line from $WHEELS"
mkdir -p "$REPO/results" && echo "$line" >> "$REPO/results/install_paths.txt"  # the README's figures
