"""The main job: the stage notebooks executed headless, in order, on the embedded defaults.

Each run writes into a fresh folder ``<work>/runs/<UTC timestamp>/`` (caches, executed
notebooks), so nothing of an earlier run is overwritten.
"""
from __future__ import annotations

import time
from pathlib import Path

from .env import REPO_ROOT, work_dir

NOTEBOOKS = REPO_ROOT / "notebooks"
EMBEDDED = ("minilm", "smollm2")


def execute_notebook(name: str, run_dir: Path, parameters: dict) -> Path:
    """Execute notebooks/<name>.ipynb with papermill; the executed copy lands in run_dir."""
    import papermill

    out = run_dir / "notebooks" / f"{name}-{parameters.get('MODEL', 'all')}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"[kit main] {name} {parameters}", flush=True)
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters,
                               cwd=str(run_dir), progress_bar=True)
    return out


def run_main(models=EMBEDDED, run_dir: str | Path | None = None, max_rows: int | None = None) -> Path:
    run_dir = Path(run_dir) if run_dir else work_dir() / "runs" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir.mkdir(parents=True, exist_ok=False)
    for model in models:
        execute_notebook("01_tokenize", run_dir, {"MODEL": model, "OUT": str(run_dir / "tokenized" / model),
                                                  "MAX_ROWS": max_rows})
    print(f"[kit main] stage 1 (tokenize) done for {', '.join(models)} -> {run_dir}. "
          "Stages 2-4 (train, infer, blend) are not implemented yet; no submission is written.")
    return run_dir
