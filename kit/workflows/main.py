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
import sys
import time
from pathlib import Path

from ..core.env import REPO_ROOT, default_judges, environment, work_dir
from ..core.errors import SettingsError
from ..core.declare import to_parameters
from ..core.log import get_logger
from ..core.signature import settings_function
from ..core.presets import resolve_preset
from ..core.settings import BlendSettings, TokenizeSettings, TrainRun, TrainSettings
from .main_scoring import SessionScoring
from .schedule import deadline_for
from .settings import MainPlaces, MainSettings

log = get_logger(__name__)

NOTEBOOKS = REPO_ROOT / "notebooks"
SUBMISSIONS = REPO_ROOT / "submissions"


# the folder holding this kit package: every notebook's kernel imports this very kit (its KIT_DIR)
KIT_HOME = Path(__file__).resolve().parents[2]


def execute_notebook(name: str, run_dir: Path, parameters: dict, tag: str = "", timeout: float | None = None) -> Path:
    """Execute notebooks/<name>.ipynb with papermill; the executed copy lands in run_dir, and what its
    cells print streams to this process's console while it runs. The notebook imports the kit that
    runs this (``KIT_DIR``), not whichever one its kernel finds. ``timeout``: seconds a cell may run before it
    is stopped (a ``TimeoutError``); default: no limit."""
    import papermill  # only the main job needs it

    out = run_dir / "notebooks" / f"{name}{'-' + tag if tag else ''}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"[kit main] {name} {tag} {parameters}")
    # the notebook's own lines (the kit's progress, tqdm's text bars) stream to this console as they come;
    # the kernel's start-up warnings (plain-TCP transport on localhost) concern no user and are not shown
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out),
                               parameters={"KIT_DIR": str(KIT_HOME), **parameters},
                               cwd=str(run_dir), progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr,
                               extra_arguments=["--IPKernelApp.log_level=ERROR"],
                               execution_timeout=None if timeout is None else max(1, int(timeout)))
    return out


def default_publish_dir() -> Path:
    """``submissions/`` in the repository; on Kaggle the working folder (the repository is a
    read-only dataset there, and the submission must be /kaggle/working/submission.csv)."""
    return work_dir() if environment() == "kaggle" else SUBMISSIONS


def check_inputs(settings: MainSettings) -> None:
    """Every table and backbone folder the settings name exists and each member resolves to a preset: a
    SettingsError naming the first that does not, before the main job creates any folder."""
    for table in [*(settings.train or []), *([settings.test] if settings.test else [])]:
        if not Path(table).is_file():
            raise SettingsError(f"TRAIN / TEST: {table} is not a file: attach the table, or pass its path")
    for model in settings.models:
        folder = (settings.model_dir or {}).get(model)
        if folder is not None and not (Path(folder) / "config.json").is_file():
            raise SettingsError(f"MODEL_DIR[{model!r}] = {folder}: no Hugging Face model folder there (config.json): "
                                f"attach the backbone, or pass the folder that holds it")
        resolve_preset(model, {"model_dir": folder})


@settings_function(MainSettings, MainPlaces)
def run_main(
        models: list[str] = ("gemma3-270m", "minilm", "lexical"),
        train: list[str] | None = None,
        test: str | None = None,
        sample_submission: str | None = "auto",
        model_dir: dict | None = None,
        folds: int = 2,
        train_folds: list[int] | None = None,
        max_rows: int | None = 400,
        max_length: int | dict = {"minilm": 128, "smollm2": 128, "gemma3-270m": 128},  # noqa: B006 - never mutated
        recipes: dict = {},  # noqa: B006 - never mutated
        weights: str = "fit",
        space: str = "log",
        judge_csv: dict | None = default_judges(),  # noqa: B008 - the shipped judges' files, found once
        budget_hours: float | None = 9.0,
        run_dir: str | None = None,
        publish_dir: str | None = None,
        wheels: str | None = None,
) -> Path:
    """The main job: the four stage notebooks in order; returns the published submission's path.

    Every parameter is a field of :class:`kit.workflows.main_settings.MainSettings` (which members, on which tables
    and backbones, at what scale) or :class:`kit.workflows.main_settings.MainPlaces` (where it runs, publishes and
    installs from), all listed below; ``MainSettings.quick().to_dict()`` and ``MainSettings.paper().to_dict()``
    are the other shipped choices.

    Returns:
        The published submission's path.

    Example:
        >>> run_main(**MainSettings.quick().to_dict())  # doctest: +SKIP
    """
    given = locals()
    settings, places = MainSettings.pick(given), MainPlaces.pick(given)
    run_dir, publish_dir, wheels = places.run_dir, places.publish_dir, places.wheels
    check_inputs(settings)  # a missing table or backbone folder: one line now, before the run folder exists
    publish_dir = Path(publish_dir) if publish_dir else default_publish_dir()
    common = {"WHEELS": wheels} if wheels else {}
    if Path(publish_dir).exists() and not Path(publish_dir).is_dir():  # fail now, not after the whole job
        raise SettingsError(f"--publish-dir {publish_dir} is a file: pass a folder for submission.csv")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    # absolute: the notebooks run inside run_dir, where a relative KIT_WORK would nest a second copy
    run_dir = (Path(run_dir) if run_dir else work_dir() / "runs" / stamp).resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    before = os.environ.get("KIT_WORK")
    os.environ["KIT_WORK"] = str(run_dir)  # the notebooks' kernels inherit it: every default path is in the run
    try:
        return _run_notebooks(settings, run_dir, publish_dir, common)
    finally:  # a notebook calling run_main keeps its own work dir afterwards
        if before is None:
            os.environ.pop("KIT_WORK", None)
        else:
            os.environ["KIT_WORK"] = before


def _run_notebooks(settings: MainSettings, run_dir: Path, publish_dir: Path, common: dict) -> Path:
    started = time.time()
    for model in settings.models:  # the notebook's parameters from the stage's own settings, never typed by hand
        tokenize = TokenizeSettings(model=model, train=settings.train, test=settings.test, n_folds=settings.folds,
                                    max_rows=settings.max_rows, max_length=settings.max_length.get(model),
                                    model_dir=(settings.model_dir or {}).get(model))
        execute_notebook("01_tokenize", run_dir, {**to_parameters(tokenize), **common}, model)
    folds = range(settings.folds) if settings.train_folds is None else settings.train_folds
    for model in settings.models:
        for fold in folds:
            recipe = TrainSettings(**{"evals_per_run": 1, **settings.recipes.get(model, {})})
            left = None if settings.budget_hours is None else max(
                settings.budget_hours - (time.time() - started) / 3600, 1e-6)  # what is left of the session
            run = TrainRun(model=model, fold=fold, budget_hours=left)
            params = {**to_parameters(run), **to_parameters(recipe), **common}
            execute_notebook("02_train", run_dir, params, f"{model}-fold{fold}")
    blend = BlendSettings(weights=settings.weights, space=settings.space, judge_csv=settings.judge_csv or None,
                          sample_submission=settings.sample_submission)
    # scored cheapest first against the session's deadline, a submission published from the first member on
    published = SessionScoring(run_dir, Path(publish_dir) / "submission.csv",
                               deadline_for(started, settings.budget_hours), blend, execute_notebook, common).run()
    log.info(f"[kit main] done in {(time.time() - started) / 60:.1f} min: {published} "
             f"(report: {run_dir / 'report' / 'report.md'}, executed notebooks: {run_dir / 'notebooks'})")
    report = run_dir / "report" / "report.md"
    if report.exists():
        log.info(report.read_text())
    return published
