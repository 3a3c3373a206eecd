"""The recipe and the stages' settings: what a stage takes, declared once with its help text.

Each dataclass is one stage's settings (:mod:`kit.stages`); the stage function takes the same fields as its keyword
parameters (``tokenize_stage(model="lexical", n_folds=2)``) and ``stage(**settings.to_dict())`` runs it from an
instance. The CLI (:mod:`kit.cli`) and the notebooks (:mod:`kit.params`) are generated from these declarations; the
workflows' settings (:mod:`kit.workflows.settings`) reuse these fields rather than declaring them again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

from .declare import Settings, arg
from .errors import SettingsError
from .presets import LR_SCHEDULES, QUANTIZATIONS
from .values import comma_list, parse_fold, parse_hours, parse_members, parse_sample, parse_weights
__all__ = ["AverageSettings", "BlendSettings", "InferSettings", "PresetOverrides", "TokenizeSettings", "TrainRun", "TrainSettings"]


# -- presets -----------------------------------------------------------------------------------
@dataclass
class PresetOverrides(Settings):
    """Per-run changes to a preset (:mod:`kit.core.presets`); None keeps the preset's value."""

    model_dir: str | None = arg(None, "the backbone's Hugging Face folder (default: the preset's)")
    member: str | None = arg(None, "the member type: joint (one sequence), pairwise (one per side), lexical or a "
                                   "registered one; must match the tokenized cache (default: the cache's)",
                             aliases=["--head"], notebook="MEMBER")
    pooling: str | None = arg(None, "pairwise member: how a side's tokens become one vector: mean | last | first "
                                    "(default: mean for encoders, last for decoders)")
    load_in_4bit: bool | None = arg(None, "load the backbone in 4-bit nf4 (QLoRA); false: full precision "
                                          "(default: the preset's)", aliases=["--4bit"], nargs="?", const=True)
    lora_r: int | None = arg(None, "LoRA rank (default: the preset's)", minimum=1)
    lora_alpha: int | None = arg(None, "LoRA alpha, the scale being alpha / r (default: the preset's)", minimum=1)
    lora_dropout: float | None = arg(None, "dropout on the LoRA path (default: the preset's)", minimum=0)
    target_modules: list[str] | None = arg(None, "module names that get LoRA, or all-linear (default: the preset's)")
    layers_to_transform: list[int] | None = arg(None, "layer indices that get LoRA (default: every layer)",
                                                aliases=["--layers"], notebook="LAYERS", cli_type=str)
    gradient_checkpointing: bool | None = arg(None, "recompute activations in the backward pass: less memory, more time "
                                                    "(default: the preset's)", nargs="?", const=True)
    lexical_c: float | None = arg(None, "lexical member: the logistic regression's inverse L2 strength (default: the preset's)")
    lexical_dense_scale: float | None = arg(None, "lexical member: the structure features' scale (default: the preset's)")

    _lists = ("target_modules",)

    def __post_init__(self):
        super().__post_init__()
        if self.layers_to_transform is not None:
            self.layers_to_transform = [int(x) for x in comma_list([str(v) for v in self.layers_to_transform])]

    def given(self) -> dict:
        """The overrides that were set (None means: the preset's)."""
        return {k: v for k, v in self.to_dict().items() if v is not None}


# -- stage 1: tokenize ---------------------------------------------------------------------------
@dataclass
class TokenizeSettings(Settings):
    """Stage 1: parse tables, pack them for one preset's member type, cache."""

    model: str = arg("minilm", "a preset (minilm, smollm2, lexical, gemma2-9b, llama3-8b) or a local Hugging Face "
                               "folder")
    train: list[str] | None = arg(None, "train tables: CSV/parquet in the competition's columns, or chosen/rejected "
                                        "preference data (HH-RLHF, UltraFeedback-style messages, prompt/chosen/"
                                        "rejected; .jsonl[.gz]/.json/CSV/parquet); default: this environment's; [] or "
                                        "--no-train: none")
    test: str | None = arg(None, "test table; default: this environment's; '' or --no-test: none")
    max_length: int | None = arg(None, "tokens per packed sequence (pairwise member: per side); default: the preset's",
                                  minimum=1)
    out: str | None = arg(None, "cache folder; default <work>/tokenized/<model>")
    n_folds: int = arg(5, "prompt-grouped, label-stratified folds (1: no held-out rows)", aliases=["--folds"], minimum=1)
    seed: int = arg(42, "seed of the fold assignment")
    max_rows: int | None = arg(None, "use only the first N training rows (after skipping bad ones); default: all",
                                minimum=1)
    overwrite: bool = arg(False, "replace an existing cache instead of refusing")
    pack: dict | None = arg(None, "packing options (kit.ops.packing.PackConfig fields) as JSON, e.g. "
                                  "{\"keep\": \"first\"} or {\"chat_template\": true} (the backbone's chat "
                                  "template around the text)", cli_type=json.loads)
    keep: str | None = arg(None, "which turns survive a cut: last | first (default: the packing's, last)")
    model_dir: str | None = arg(None, "the backbone's Hugging Face folder (default: the preset's)")
    member: str | None = arg(None, "the member type (joint, pairwise, lexical, zeroshot, or a registered one); default: the "
                                   "preset's", aliases=["--head"])
    extra: list[str] = arg(help="extra labelled tables (any --train format): added to every fold's training rows, "
                                "never held out, after removing rows whose prompt is a train or test prompt",
                           factory=list)
    dedup_similarity: float = arg(0.9, "an extra row whose prompt's character n-gram cosine similarity to a train "
                                       "or test prompt is at least this is removed (1.0: exact duplicates only)", above=0)
    no_train: bool = arg(False, "tokenize the test table only", notebook=None)
    no_test: bool = arg(False, "tokenize the train tables only", notebook=None)

    _lists = ("train", "extra")

    def __post_init__(self):
        super().__post_init__()
        if self.keep:
            self.pack = {**(self.pack or {}), "keep": self.keep}
        if self.no_train:
            self.train = []
        if self.no_test:
            self.test = ""


# -- stage 2: train ------------------------------------------------------------------------------
@dataclass
class TrainRun(Settings):
    """Stage 2: which model and fold, where from and where to."""

    model: str = arg("minilm", "a preset or a local Hugging Face folder")
    fold: int | None = arg(0, "the held-out fold K, or 'full' (None) to train on every row", cli_type=parse_fold)
    tokenized: str | None = arg(None, "the stage-1 cache; default <work>/tokenized/<model>")
    out: str | None = arg(None, "default <work>/models/<model>/fold<K>")
    overwrite: bool = arg(False, "replace a finished run in --out (its predictions/ are removed: they are stale)")
    resume: bool = arg(True, "resume a killed run from its last complete checkpoint (same arguments only); "
                             "--no-resume deletes them and starts afresh")
    budget_hours: float | None = arg(9.0, "stop before the backbone loads when the training time projected by "
                                          "arithmetic for these devices exceeds this (Kaggle: 9); none: no check",
                                     cli_type=parse_hours, above=0)


@dataclass
class TrainSettings(Settings):
    """Training knobs; None takes the preset's value. Recorded in ``config.json``: a killed run
    resumes only with the same ones."""

    epochs: float | None = arg(None, "passes over the training rows; default: the preset's", above=0)
    learning_rate: float | None = arg(None, "peak learning rate; default: the preset's", aliases=["--lr"],
                                      notebook="LR", minimum=0)
    lr_schedule: str = arg("cosine", "the learning rate after warm-up: cosine or linear decay to 0, or constant (SWA's "
                                     "rate over its averaged span)", choices=tuple(LR_SCHEDULES))
    batch_size: int | None = arg(None, "rows per device step; default: the preset's", minimum=1)
    grad_accum: int | None = arg(None, "steps per optimizer update; default: the preset's", minimum=1)
    warmup_ratio: float | None = arg(None, "share of the updates spent warming up; default: the preset's", minimum=0)
    weight_decay: float | None = arg(None, "AdamW weight decay; default: the preset's", minimum=0)
    max_steps: int = arg(-1, "stop after N updates (> 0 overrides --epochs)")
    evals_per_run: int = arg(4, "held-out evaluations (and checkpoints) over the run; the best is kept", minimum=1)
    eval_steps: int | None = arg(None, "evaluate every N updates (overrides --evals-per-run)", minimum=1)
    swap_augment: bool = arg(True, "joint member: also train on every row with A and B exchanged")
    seed: int = arg(42, "seed of initialisation and shuffling")
    max_train_rows: int | None = arg(None, "train on the first N rows of the other folds", minimum=1)
    skip_train_rows: int = arg(0, "skip the first N rows of the other folds before --max-train-rows takes its rows "
                                  "(disjoint row blocks: kit cv --bag-rows)", minimum=0)
    max_eval_rows: int | None = arg(None, "evaluate on the first N held-out rows", minimum=1)
    keep_checkpoints: bool = arg(False, "keep checkpoints/ after a finished run")
    logging_steps: int = arg(5, "log the training loss every N updates", minimum=1)
    group_by_length: bool | None = arg(None, "length-grouped batches (true) or plain shuffling (false); default: the "
                                             "preset's", nargs="?", const=True)
    head_lr_scale: float | None = arg(None, "the new heads' learning rate as a multiple of the learning rate; "
                                            "default: the preset's")
    weight_average: str = arg("none", "the weights saved: as trained (none), their mean (swa) or moving average (ema) "
                                      "from --average-start on; held-out rows are scored with all three", choices=("none", "swa", "ema"))
    average_start: float = arg(0.5, "swa/ema: averaging starts after this share of the updates", minimum=0, maximum=1)
    ema_decay: float = arg(0.9, "ema: the moving average's decay per update", minimum=0, maximum=1)
    residual_on: str | None = arg(None, "residual training (pairwise member): a base member's trained fold folders (e.g. "
                                        "artifacts/models/lexical); its held-out log-probabilities are added to this "
                                        "member's logits before the loss and at prediction: it learns what the base misses")

    _from_preset = ("epochs", "learning_rate", "batch_size", "grad_accum", "warmup_ratio", "weight_decay",
                    "group_by_length", "head_lr_scale")  # None: the preset's value (resolved once, by effective)

    def effective(self, preset) -> "TrainSettings":
        """These settings with each field that defaults to the preset's set to the preset's value: what the train
        stage runs with and records in config.json and manifest.json (never a null for a value that ran)."""
        return replace(self, **{n: getattr(preset, n) for n in self._from_preset if getattr(self, n) is None})


# -- stage 3: infer ------------------------------------------------------------------------------
@dataclass
class InferSettings(Settings):
    """Stage 3: score test rows (or a model's held-out fold) with one trained model."""

    trained: str | None = arg(None, "a train-stage output folder (required; kit infer --isolate: several, "
                                    "comma-separated)", notebook=None)
    split: str = arg("test", "test rows, or the model's held-out (out-of-fold) training rows: test | oof")
    tokenized: str | None = arg(None, "the stage-1 cache; default: the one the model trained on")
    out: str | None = arg(None, "default <model-dir>/predictions/<split>.csv")
    devices: list[str] | None = arg(None, "e.g. cuda:0,cuda:1; default: every visible GPU, else cpu")
    cpu_workers: int = arg(1, "threads scoring on the CPU (no GPU)", minimum=1)
    tta: bool = arg(True, "joint member: also score the swapped (B, A) pass and average")
    max_tokens: int | None = arg(None, "padded tokens per batch; default 16384 on GPU, 2048 on CPU", minimum=1)
    budget_hours: float | None = arg(9.0, "warn when the projected time for the whole split exceeds this (Kaggle: "
                                          "9); none: no projection", cli_type=parse_hours, above=0)
    overwrite: bool = arg(False, "replace existing predictions instead of refusing")
    model_dir: str | None = arg(None, "the backbone's folder, where it is not where it was at training time")
    quantization: str | None = arg(None, "how the backbone is loaded to score: 4bit (nf4), 8bit (int8: the medal "
                                         "solutions scored in 8-bit what they trained in 4-bit, faster on a T4) or "
                                         "none (full precision); default: as trained")
    reuse_train_scores: bool = arg(True, "out-of-fold rows: take the train stage's scores (oof.csv) where they are "
                                         "exactly what scoring would give; --no-reuse-train-scores always scores",
                                   notebook=None)
    ids: list[str] | None = arg(None, "score only these test ids, in the table's order (kit submit's swap pass over "
                                      "its least certain rows); default: every row", notebook=None)
    deadline: float | None = arg(None, "a time (seconds since the epoch) by which scoring must end: past it, or "
                                       "projected past it, the run stops and writes nothing (kit submit's and the "
                                       "main job's deadline)")

    _lists = ("devices", "ids")

    def __post_init__(self):
        super().__post_init__()
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise SettingsError(f"--quantization / QUANTIZATION / quantization {self.quantization!r}: choose one of "
                                f"{list(QUANTIZATIONS)} (default: as trained)")


# -- fold / seed averaging ------------------------------------------------------------------------
@dataclass
class AverageSettings(Settings):
    """K trained models of one LoRA member averaged into one model, scored once (kit.stages.average)."""

    model_dirs: list[str] | None = arg(None, "two or more train-stage outputs of one member (its folds or seeds)")
    out: str | None = arg(None, "the averaged model's folder; default <work>/models/<preset>/average")
    overwrite: bool = arg(False, "replace an averaged model already in --out")

    _lists = ("model_dirs",)


# -- stage 4: blend ------------------------------------------------------------------------------
@dataclass
class BlendSettings(Settings):
    """Stage 4: blend the members' predictions into submission.csv and a report."""

    members: dict | None = arg(None, "NAME=DIR[,DIR...];NAME2=... (default: every trained model under <work>/models)",
                               cli_type=parse_members)
    models: list[str] | None = arg(None, "with the default members: only these presets")
    weights: str = arg("paper", "paper (0.7/0.3) | equal | fit (weights fitted on out-of-fold rows) | stack (logistic "
                                "regression on the members' out-of-fold log-probabilities) | w1,w2,...",
                       cli_type=parse_weights)
    space: str = arg("prob", "average probabilities (prob: the paper's) or log-probabilities (log)")
    temperature: bool = arg(False, "fit temperature scaling on out-of-fold rows")
    tie_offset: bool = arg(False, "fit an offset on the blend's tie log-probability on out-of-fold rows, together "
                                  "with the weights (fit) and the temperature (--temperature): sharp members give "
                                  "ties too little mass; symmetric in A and B")
    out: str | None = arg(None, "default <work>/submission.csv")
    report_dir: str | None = arg(None, "default <work>/report")
    sample_submission: str | None = arg("auto", "path, 'auto' (this environment's, for its own test table) or 'none'",
                                        cli_type=parse_sample)
    guardrails: bool = arg(True, "fit the guardrails (identical / one empty response: kit.ensemble.guardrails)")
    baselines: bool = arg(True, "add the uniform / prior / TF-IDF rows to the out-of-fold report")
    judge_csv: dict | None = arg(None, "NAME=CSV;...: external judges' verdicts by id (a verdict column A/B/tie, or "
                                       "p_a,p_b,p_tie), compared with the blend in the report on the out-of-fold rows "
                                       "they judged; never blended", cli_type=parse_members)
    overwrite: bool = arg(False, "replace an existing submission and report instead of refusing")

    _lists = ("models",)

    def __post_init__(self):
        super().__post_init__()
        self.weights = parse_weights(self.weights)
        self.members = parse_members(self.members)
        self.sample_submission = parse_sample(self.sample_submission)
