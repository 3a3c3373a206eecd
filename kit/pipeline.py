"""The main job: the four stage notebooks executed headless, in order, on the embedded defaults.

    python -m kit main            # ~15 min on 2 CPU cores
    python -m kit main --quick    # the same path at toy scale (CI)

Each run writes into a fresh folder ``<work>/runs/<UTC timestamp>/`` (tokenized caches,
trained models, predictions, executed notebooks, report); the submission is copied to
``submissions/submission.csv``, and a submission already there is first moved aside to
``submissions/submission-<its time>.csv`` (said on the console), never overwritten.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .env import REPO_ROOT, work_dir
from .io import publish

NOTEBOOKS = REPO_ROOT / "notebooks"
SUBMISSIONS = REPO_ROOT / "submissions"


@dataclass
class MainSettings:
    """What the main job runs. The defaults fit 15 minutes on 2 CPU cores: every shipped
    test row is predicted; training uses a prompt-grouped K-fold split of the shipped
    training rows, capped per fold so the SmolLM2 runs stay within budget; the three
    members (two pairwise LoRA backbones and the lexical model) are blended with weights
    fitted out of fold, in log-probability space (the report's OOF blend figure cross-fitted)."""

    models: tuple[str, ...] = ("minilm", "smollm2", "lexical")
    folds: int = 2
    max_rows: int | None = 400  # training rows tokenized (the first 100 are the real Kaggle rows)
    max_length: dict = field(default_factory=lambda: {"minilm": 128, "smollm2": 128})  # per side (pairwise)
    # the presets' measured recipes (results/sweep/sweep.md); SmolLM2 trains on 100 rows per fold for
    # time (the infer stage still scores every held-out row)
    train: dict = field(default_factory=lambda: {
        "minilm": {},
        "smollm2": {"MAX_TRAIN_ROWS": 100},
        "lexical": {},
    })
    weights: str = "fit"  # fit | stack | paper | equal: measured on PandaLM's 5 folds (README, results/cv_pandalm)
    space: str = "log"  # geometric blend: 0.794 vs 0.803 arithmetic on the same folds

    @classmethod
    def quick(cls) -> "MainSettings":
        """Toy scale for CI: the same notebooks and code paths in a couple of minutes."""
        return cls(max_rows=48, max_length={"minilm": 128, "smollm2": 128}, train={
            "minilm": {"MAX_STEPS": 3, "BATCH_SIZE": 8, "MAX_EVAL_ROWS": 12},
            "smollm2": {"MAX_STEPS": 2, "BATCH_SIZE": 4, "MAX_EVAL_ROWS": 8},
            "lexical": {},
        })


def execute_notebook(name: str, run_dir: Path, parameters: dict, tag: str = "") -> Path:
    """Execute notebooks/<name>.ipynb with papermill; the executed copy lands in run_dir."""
    import papermill

    out = run_dir / "notebooks" / f"{name}{'-' + tag if tag else ''}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"[kit main] {name} {tag} {parameters}", flush=True)
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters,
                               cwd=str(run_dir), progress_bar=True)
    return out


def run_main(settings: MainSettings | None = None, run_dir: str | Path | None = None,
             publish_dir: str | Path = SUBMISSIONS) -> Path:
    """Run the four notebooks; returns the published submission path."""
    settings = settings or MainSettings()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir = Path(run_dir) if run_dir else work_dir() / "runs" / stamp
    run_dir.mkdir(parents=True, exist_ok=False)
    os.environ["KIT_WORK"] = str(run_dir)  # the notebooks' kernels inherit it: every default path is in the run
    started = time.time()
    for model in settings.models:
        params = {"MODEL": model, "N_FOLDS": settings.folds, "MAX_ROWS": settings.max_rows}
        if model in settings.max_length:
            params["MAX_LENGTH"] = settings.max_length[model]
        execute_notebook("01_tokenize", run_dir, params, model)
    for model in settings.models:
        for fold in range(settings.folds):
            params = {"MODEL": model, "FOLD": fold, "EVALS_PER_RUN": 1, **settings.train.get(model, {})}
            execute_notebook("02_train", run_dir, params, f"{model}-fold{fold}")
    execute_notebook("03_infer_two_t4", run_dir, {"SPLITS": ["test", "oof"]})
    execute_notebook("04_blend", run_dir, {"WEIGHTS": settings.weights, "SPACE": settings.space})
    published = publish(run_dir / "submission.csv", Path(publish_dir) / "submission.csv", "kit main")
    print(f"[kit main] done in {(time.time() - started) / 60:.1f} min: {published} "
          f"(report: {run_dir / 'report' / 'report.md'}, executed notebooks: {run_dir / 'notebooks'})", flush=True)
    report = run_dir / "report" / "report.md"
    if report.exists():
        print(report.read_text(), flush=True)
    return published
