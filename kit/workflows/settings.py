"""The workflows' settings: ``kit cv``, ``kit submit``, ``kit pseudo-label`` and (from :mod:`.main_settings`) the main job.

A field a workflow passes on to a stage is that stage's field (:func:`kit.core.declare.same_as`):
one name, one type, one help text. Where a workflow's default differs from the stage's,
:data:`WORKFLOW_DEFAULTS` says why; a test holds every other name to one default.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.declare import Settings, arg, same_as
from ..core.errors import SettingsError
from ..core.settings import BlendSettings, InferSettings, TokenizeSettings, TrainSettings
from ..core.values import parse_caps, parse_hours, parse_members, parse_recipes, parse_sample, parse_seeds, parse_weights
from .main_settings import MainPlaces, MainRun, MainSettings

__all__ = ["CvSettings", "MainPlaces", "MainRun", "MainSettings", "PseudoLabelSettings", "SubmitSettings", "PER_MODEL", "WORKFLOW_DEFAULTS"]

# (settings class, field) -> why its default differs from the stage field it passes on
WORKFLOW_DEFAULTS = {
    ("CvSettings", "weights"): "cv has every member's out-of-fold rows, so it fits the weights (cross-fitted)",
    ("CvSettings", "space"): "cv blends log-probabilities, the space its comparisons were run in",
    ("CvSettings", "evals_per_run"): "cv trains many folds: one held-out evaluation each keeps it quick",
    ("CvSettings", "models"): "cv compares members: the embedded ones by default",
    ("SubmitSettings", "weights"): "submit applies the blend saved with the models when there is one",
    ("PseudoLabelSettings", "weights"): "pseudo-label applies the blend saved with the teacher when there is one",
    ("MainSettings", "weights"): "the main job fits the weights on its out-of-fold rows",
    ("MainSettings", "space"): "the main job blends log-probabilities, as kit cv does",
    ("MainSettings", "models"): "the main job's members fit its time budget on 2 CPU cores",
    ("MainSettings", "max_rows"): "the main job trains on a few hundred rows to fit its time budget",
    ("MainSettings", "folds"): "the main job trains two folds (kit cv: five) to fit its time budget",
    ("MainSettings", "judge_csv"): "the main job compares its blend with the shipped judges of its PandaLM rows",
}

# TrainSettings fields kit cv sets for every fold from its own flags (--recipes may not set them)
CV_OWNED = {"epochs", "max_train_rows", "skip_train_rows", "seed", "swap_augment", "evals_per_run", "residual_on"}

# (settings class, field) whose value may be per model ({preset: value}) where the stage takes one value
PER_MODEL = {("CvSettings", "max_train_rows"), ("MainSettings", "max_length"), ("MainSettings", "model_dir"),
             ("SubmitSettings", "model_dir")}


@dataclass
class CvSettings(Settings):
    """``kit cv``: tokenize -> train -> infer -> blend, fold by fold, on any labelled table."""

    train: list[str] = arg(help="labelled tables (CSV/parquet, or chosen/rejected preference data)")
    models: list[str] = arg(help="members: presets or local Hugging Face folders; PRESET@TAG is one more member of "
                                 "a preset (e.g. gemma3-270m@all beside gemma3-270m), with its own --max-train-rows "
                                 "and --bag-seeds, the preset's tokens and its own model folders",
                            factory=lambda: ["minilm", "smollm2", "lexical"])
    folds: int = arg(5, "prompt-grouped, label-stratified folds (>= 2)", minimum=2)
    out: str | None = arg(None, "working folder (required); finished folds in it are reused")
    max_length: int | None = same_as(TokenizeSettings, "max_length")
    max_rows: int | None = same_as(TokenizeSettings, "max_rows")
    weights: str = same_as(BlendSettings, "weights", "fit")
    epochs: float | None = same_as(TrainSettings, "epochs")
    max_train_rows: int | dict | None = arg(None, "cap on training rows per fold: N for every model, or "
                                                  "MODEL=N,MODEL=N", cli_type=parse_caps, minimum=1)
    tta: bool = same_as(InferSettings, "tta")
    seed: int = arg(42, "seed of the folds and of training")
    train_seed: int | None = arg(None, "seed of training alone (initial LoRA and head weights, batch order, dropout); "
                                       "None: --seed. The folds stay --seed's, so runs that differ only here "
                                       "measure the training-seed spread on the same rows")
    bag_seeds: dict | None = arg(None, "MODEL=S1,S2,...;...: seed bagging — train each fold of MODEL once per seed "
                                       "and average the models' probabilities (held-out rows and test rows); the "
                                       "report adds a blend row per seed with that seed's models alone (the "
                                       "single-seed spread) and, with two or more bags, one per seed they all "
                                       "share with every bag at that seed (the whole recipe at one seed). Other "
                                       "members train once", cli_type=parse_members)
    bag_rows: bool = arg(False, "with --bag-seeds: a row bag — the i-th seed of MODEL's bag trains on the i-th "
                                "block of its --max-train-rows N rows (rows i*N to (i+1)*N of each fold's training "
                                "rows), so the bag's models see disjoint rows; the first seed's block is the rows a "
                                "plain run takes")
    swap_augment: bool = same_as(TrainSettings, "swap_augment")
    evals_per_run: int = same_as(TrainSettings, "evals_per_run", 1)
    member: str | None = same_as(TokenizeSettings, "member")
    pack: dict | None = same_as(TokenizeSettings, "pack", help="every member's packing options as JSON, e.g. "
                                "{\"cut\": \"middle\"} (a cut field keeps its head and tail) (kit.ops.packing.PackConfig)")
    space: str = same_as(BlendSettings, "space", "log")
    temperature: bool = same_as(BlendSettings, "temperature", help="fit a temperature on the blend (cross-fitted "
                                "for the out-of-fold score); each member's row with its own cross-fitted "
                                "temperature is reported either way")
    tie_offset: bool = same_as(BlendSettings, "tie_offset")
    extra: list[str] = same_as(TokenizeSettings, "extra")
    dedup_similarity: float = same_as(TokenizeSettings, "dedup_similarity")
    residual: dict | None = arg(None, "MEMBER=BASE;...: train MEMBER (pairwise) on top of BASE's out-of-fold "
                                      "log-probabilities (residual training; BASE is another --models member)",
                                cli_type=parse_members)
    recipes: dict = arg(help="MODEL=FIELD:VALUE,...;...: kit train's settings per member, e.g. "
                                     "gemma3-270m@swa=lr_schedule:constant,weight_average:swa (those kit cv sets "
                                     "itself have their own flags: --epochs, --max-train-rows, --bag-seeds, ...)",
                        factory=dict, cli_type=parse_recipes)
    judges: list[str] = arg(help="zero-shot judges scored beside the members, never blended: presets of the "
                                 "zeroshot member type (e.g. smollm2-zeroshot)", factory=list)
    blend_judges: bool = arg(False, "also blend the --judges as members: their verdict-token log-probabilities "
                                    "enter the fitted weights or the stacker (a measurement: they stay compared as "
                                    "judges too, and kit blend / kit submit never blend them)")
    judge_csv: dict | None = arg(None, "NAME=CSV;...: external judges' verdicts by id (p_a,p_b,p_tie, or a verdict "
                                       "column A/B/tie), scored on the same rows", cli_type=parse_members)
    overwrite: bool = arg(False, "redo everything in --out instead of reusing it")

    _lists = ("train", "models", "extra", "judges")

    def __post_init__(self):
        super().__post_init__()
        self.weights = parse_weights(self.weights)
        self.max_train_rows = parse_caps(self.max_train_rows)
        self.bag_seeds = parse_seeds(self.bag_seeds)
        self.recipes = parse_recipes(self.recipes) or {}
        for model, recipe in self.recipes.items():  # each a TrainSettings, checked now: one line, no work done
            if model not in self.models:
                raise SettingsError(f"--recipes {model}=...: not one of the --models {list(self.models)}")
            owned = sorted(set(recipe) & CV_OWNED)
            if owned:
                raise SettingsError(f"--recipes {model}=...: kit cv sets {', '.join(owned)} itself; use its own flag")
            TrainSettings(**recipe)
        if not self.out:
            raise SettingsError("kit cv needs a working folder: pass --out DIR (out= in Python)")


@dataclass
class SubmitSettings(Settings):
    """``kit submit``: attached trained models + a test table -> submission.csv, in one call."""

    model_roots: list[str] | None = arg(None, "folders holding trained outputs; default: every attached dataset "
                                              "(/kaggle/input)")
    test: str | None = same_as(TokenizeSettings, "test")
    weights: str = same_as(BlendSettings, "weights", "auto", help="auto (the saved blend.json if found, else "
                           "paper) | saved | paper | equal | fit (fitted on the held-out rows the members share: "
                           "members trained apart on one fold) | w1,w2,...")
    blend_json: str | None = arg(None, "the saved blend to apply (default: the one under the roots)")
    space: str = same_as(BlendSettings, "space", help="with weights other than a saved blend's: average "
                         "probabilities (prob) or log-probabilities (log)")
    out: str | None = arg(None, "default <work>/submission.csv (an earlier one is moved aside)")
    work: str | None = arg(None, "where caches and predictions go; default: the work dir (/kaggle/working on Kaggle)")
    devices: list[str] | None = same_as(InferSettings, "devices")
    isolate: bool | None = arg(None, "each model in its own process (default: on GPUs)", nargs="?", const=True)
    tta: bool = same_as(InferSettings, "tta")
    max_tokens: int | None = same_as(InferSettings, "max_tokens")
    budget_hours: float | None = same_as(InferSettings, "budget_hours", help="the session's hours (Kaggle: 9): "
                                         "a valid submission is written once the cheapest member is scored and "
                                         "refined as members finish, until the deadline (this less a margin); "
                                         "none: no deadline")
    model_dir: dict | None = arg(None, "{member: backbone folder} (CLI: PRESET=FOLDER;...) where a backbone is attached "
                                       "elsewhere than at training time", cli_type=parse_members)
    sample_submission: str | None = same_as(BlendSettings, "sample_submission")
    quantization: str | None = same_as(InferSettings, "quantization")
    average_folds: bool = arg(False, "score each LoRA member once: its fold (or seed) models' weights averaged into "
                                     "one model (kit average), not each model scored")

    _lists = ("model_roots", "devices")

    def __post_init__(self):
        super().__post_init__()
        self.weights = parse_weights(self.weights)
        self.sample_submission = parse_sample(self.sample_submission)
        self.budget_hours = parse_hours(self.budget_hours)
        if self.model_dir:
            self.model_dir = {k: v[0] if isinstance(v, list) else v for k, v in parse_members(self.model_dir).items()}


@dataclass
class PseudoLabelSettings(Settings):
    """``kit pseudo-label``: score an unlabelled table and write it back as soft-labelled training rows."""

    input_table: str = arg(help="the unlabelled table (any --train format; labels ignored)", aliases=["--input"],
                           notebook="INPUT")
    model_roots: list[str] = arg(help="folders holding the teacher's trained models")
    out: str = arg(help="the soft-labelled table to write (CSV, the competition's columns)")
    weights: str = same_as(BlendSettings, "weights", "auto", help="auto (the saved blend.json if found, else "
                           "paper) | saved | paper | equal | w1,w2,...")
    blend_json: str | None = same_as(SubmitSettings, "blend_json")
    sharpening: float = arg(1.0, "sharpen (< 1) or soften (> 1) the teacher's probabilities: p ** (1/T), renormalised")
    min_confidence: float = arg(0.0, "leave out rows whose most likely outcome is below this probability")
    work: str | None = arg(None, "where the scoring runs; default: the work dir")
    devices: list[str] | None = same_as(InferSettings, "devices")
    overwrite: bool = arg(False, "replace an existing output instead of refusing")

    _lists = ("model_roots", "devices")

    def __post_init__(self):
        super().__post_init__()
        self.weights = parse_weights(self.weights)
