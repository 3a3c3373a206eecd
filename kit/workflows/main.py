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
from pathlib import Path

from ..core.env import REPO_ROOT, work_dir
from ..core.errors import SettingsError
from ..core.log import get_logger
from ..core.settings import MainSettings, TrainSettings, to_parameters
from ..store.io import publish

log = get_logger(__name__)

NOTEBOOKS = REPO_ROOT / "notebooks"
SUBMISSIONS = REPO_ROOT / "submissions"


def execute_notebook(name: str, run_dir: Path, parameters: dict, tag: str = "") -> Path:
    """Execute notebooks/<name>.ipynb with papermill; the executed copy lands in run_dir."""
    import papermill  # only the main job needs it

    out = run_dir / "notebooks" / f"{name}{'-' + tag if tag else ''}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"[kit main] {name} {tag} {parameters}")
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters,
                               cwd=str(run_dir), progress_bar=True)
    return out


def run_main(settings: MainSettings | None = None, run_dir: str | Path | None = None,
             publish_dir: str | Path = SUBMISSIONS) -> Path:
    """Run the four notebooks; returns the published submission path.

    Args:
        settings: :class:`kit.core.settings.MainSettings` (default: the embedded defaults).
        run_dir: the run's folder (must not exist); default ``<work>/runs/<UTC time>``.
        publish_dir: where ``submission.csv`` is published (an earlier one moved aside).

    Returns:
        The published submission's path.

    Example:
        >>> run_main(MainSettings.quick())  # doctest: +SKIP
    """
    settings = settings or MainSettings()
    if Path(publish_dir).exists() and not Path(publish_dir).is_dir():  # fail now, not after the whole job
        raise SettingsError(f"--publish-dir {publish_dir} is a file: pass a folder for submission.csv")
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
            recipe = TrainSettings(**{"evals_per_run": 1, **settings.train.get(model, {})})
            params = {"MODEL": model, "FOLD": fold, **to_parameters(recipe)}
            execute_notebook("02_train", run_dir, params, f"{model}-fold{fold}")
    execute_notebook("03_infer_two_t4", run_dir, {"SPLITS": ["test", "oof"]})
    execute_notebook("04_blend", run_dir, {"WEIGHTS": settings.weights, "SPACE": settings.space})
    published = publish(run_dir / "submission.csv", Path(publish_dir) / "submission.csv", "kit main")
    log.info(f"[kit main] done in {(time.time() - started) / 60:.1f} min: {published} "
             f"(report: {run_dir / 'report' / 'report.md'}, executed notebooks: {run_dir / 'notebooks'})")
    report = run_dir / "report" / "report.md"
    if report.exists():
        log.info(report.read_text())
    return published
