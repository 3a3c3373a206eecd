#!/usr/bin/env bash
# `pip install .` into a clean environment that holds only torch, then — from another directory,
# so nothing is imported from the checkout — a lexical tokenize -> train -> infer on the shipped
# rows; every manifest must name this checkout's commit. Appends one line to
# results/install_paths.txt. ~2 minutes; needs the package index, as scripts/setup.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
TORCH=$(grep -E '^torch==' constraints.txt | head -1)
python3 -m venv "$TMP/venv"
started=$(date +%s)
"$TMP/venv/bin/pip" install -q --disable-pip-version-check "$TORCH"
"$TMP/venv/bin/pip" install -q --disable-pip-version-check "$ROOT"
installed=$(( $(date +%s) - started ))
mkdir "$TMP/elsewhere" && cd "$TMP/elsewhere"
PY="$TMP/venv/bin/python"
ROOT="$ROOT" "$PY" -c "import kit, os; assert not kit.__file__.startswith(os.environ['ROOT'] + '/'), kit.__file__"
"$PY" -m kit tokenize --model lexical --train "$ROOT/data/pandalm/pandalm_kaggle.csv" --test "$ROOT/data/kaggle/test.csv" \
  --max-rows 200 --folds 2 --out tok
"$PY" -m kit train --model lexical --fold 0 --tokenized tok --out model
"$PY" -m kit infer --trained model --split test
COMMIT=$(git -C "$ROOT" rev-parse HEAD)
for manifest in tok/manifest.json model/manifest.json model/predictions/test.manifest.json; do
  "$PY" - "$manifest" "$COMMIT" <<'EOF'
import json, sys
record = json.load(open(sys.argv[1]))["provenance"]
assert record["commit"] == sys.argv[2], (sys.argv[1], record)
print(f"{sys.argv[1]}: commit {record['commit'][:12]}, dirty {record['dirty']}, version {record['kit_version']}")
EOF
done
echo "$(date -u +%F) pip install . (clean venv with only $TORCH): ${installed} s; lexical tokenize -> train -> infer from another directory: manifests name commit ${COMMIT:0:12}" \
  | tee -a "$ROOT/results/install_paths.txt"
