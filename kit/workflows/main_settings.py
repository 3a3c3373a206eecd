"""The main job's settings (``kit main``, ``07_one_session``): which members, on which tables and backbones, at
what scale. Its fields that a stage takes are that stage's (:func:`kit.core.declare.same_as`); where a default
differs, :data:`kit.workflows.settings.WORKFLOW_DEFAULTS` says why.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..core.declare import Settings, arg, same_as
from ..core.env import default_judges
from ..core.errors import SettingsError
from ..core.presets import PRESETS
from ..core.settings import BlendSettings, TokenizeSettings, TrainRun, TrainSettings
from ..core.values import per_model

__all__ = ["MainPlaces", "MainRun", "MainSettings"]


@dataclass
class MainSettings(Settings):
    """The main job: the four notebooks on the embedded defaults, sized to the main job's time
    budget on 2 CPU cores. Every shipped test row is predicted; training uses a prompt-grouped K-fold split of the
    shipped training rows (every member on every training row of its fold); the members are
    blended with weights fitted out of fold, in log-probability space (the report's out-of-fold
    blend figure cross-fitted on 5 parts).

    The default members are Gemma-3-270M, MiniLM and the lexical model. :meth:`paper` (``kit main
    --paper``) runs the paper's Gemma + Llama pairing instead (SmolLM2 is the Llama); the measured
    run times and scores of both are in ``docs/results.md``."""

    models: list[str] = arg(help="the members", factory=lambda: ["gemma3-270m", "minilm", "lexical"])
    train: list[str] | None = same_as(TokenizeSettings, "train")
    test: str | None = same_as(TokenizeSettings, "test")
    sample_submission: str | None = same_as(BlendSettings, "sample_submission")
    model_dir: dict | None = arg(None, "{member: backbone folder} where one is not at its preset's path; the member "
                                       "keeps its preset's recipe (4-bit, LoRA targets)")
    folds: int = arg(2, "prompt-grouped folds", notebook="N_FOLDS", minimum=2)
    train_folds: list[int] | None = arg(None, "the folds trained; None: every fold. [0]: one fold, whose held-out "
                                              "rows fit the weights (big members in one session)")
    max_rows: int | None = same_as(TokenizeSettings, "max_rows", 400, help="training rows tokenized (the first "
                                   "100 are the real Kaggle rows)")
    max_length: int | dict = arg(help="tokens per sequence (pairwise: per side), one number for every member or "
                                      "{model: tokens}", factory=lambda: {"minilm": 128, "smollm2": 128, "gemma3-270m": 128})
    # the presets' recipes as measured by 7f9e2b6:scripts/sweep.py (results/sweep/); keys: TrainSettings fields
    recipes: dict = arg(help="TrainSettings fields per model", factory=dict)
    weights: str = same_as(BlendSettings, "weights", "fit")
    space: str = same_as(BlendSettings, "space", "log")
    judge_csv: dict | None = same_as(BlendSettings, "judge_csv", factory=default_judges)
    budget_hours: float | None = same_as(TrainRun, "budget_hours", help="the session's hours (Kaggle: 9): each "
                                         "training run gets what is left of them, and stops before its model loads "
                                         "when its projected time exceeds that; none: no check")

    _lists = ("models", "train")

    def __post_init__(self):
        super().__post_init__()
        self.max_length = per_model("MAX_LENGTH", self.max_length, self.models, int, set(PRESETS))
        self.model_dir = per_model("MODEL_DIR", self.model_dir, self.models, str, set(PRESETS)) or None
        known = {f.name for f in fields(TrainSettings)}
        for model, given in self.recipes.items():
            unknown = sorted(set(given) - known)
            if unknown:
                raise SettingsError(f"MainSettings.recipes[{model!r}]: unknown training setting(s) {unknown}; "
                                    f"the settings are {sorted(known)}")
        if self.train_folds is not None:
            self.train_folds = [int(k) for k in self.train_folds]
            outside = [k for k in self.train_folds if not 0 <= k < self.folds]
            if outside or not self.train_folds:
                raise SettingsError(f"TRAIN_FOLDS {self.train_folds}: pass folds in 0..{self.folds - 1} (N_FOLDS = "
                                    f"{self.folds}), or None for every fold")

    @classmethod
    def paper(cls) -> "MainSettings":
        """The paper's pairing at the embedded scale: Gemma-3-270M and SmolLM2 (a Llama), with the
        lexical member."""
        return cls(models=["gemma3-270m", "smollm2", "lexical"])

    @classmethod
    def for_run(cls, run: "MainRun") -> "MainSettings":
        """What ``kit main`` runs: the default members or the paper's pairing (``--paper``), at full or
        toy scale (``--quick``: the members chosen, the quick recipes)."""
        settings = cls.paper() if run.paper else cls()
        return replace(cls.quick(), models=settings.models) if run.quick else settings

    @classmethod
    def quick(cls) -> "MainSettings":
        """Toy scale for CI: the same notebooks and code paths in a couple of minutes (its 40 rows are
        Kaggle rows, which no shipped judge judged: no judges)."""
        return cls(max_rows=40, judge_csv={}, max_length={"minilm": 64, "smollm2": 64, "gemma3-270m": 64}, recipes={
            "minilm": {"max_steps": 3, "batch_size": 8, "max_eval_rows": 12},
            "smollm2": {"max_steps": 2, "batch_size": 4, "max_eval_rows": 8},
            "gemma3-270m": {"max_steps": 2, "batch_size": 4, "max_eval_rows": 8},
        })


@dataclass
class MainRun(Settings):
    """``kit main``'s choice of settings: the default members or the paper's pairing, at full or toy scale."""

    quick: bool = arg(False, "toy scale (CI): the same path in minutes")
    paper: bool = arg(False, "the paper's pairing: Gemma-3-270M + SmolLM2 (a Llama) + lexical, instead of "
                             "Gemma-3-270M + MiniLM + lexical (slower on CPU)")


@dataclass
class MainPlaces(Settings):
    """Where the main job runs, publishes and installs from."""

    run_dir: str | None = arg(None, "default: <work>/runs/<timestamp> (must not exist)")
    publish_dir: str | None = arg(None, "where submission.csv goes; default submissions/ (/kaggle/working on Kaggle)")
    wheels: str | None = arg(None, "the wheels folder each notebook installs from offline (Kaggle), when not the "
                                   "default", notebook="WHEELS")
