"""Stage 2 — train: one preset's member type fitted on one fold (or every row) of a tokenized cache.

Per (model, fold) the output folder (default ``<work>/models/<preset>/fold<K>``, or
``.../full`` when ``fold=None`` trains on every row) holds (:mod:`kit.store.models`):

* ``adapter/``: what the member type's fit saved (LoRA adapter + heads + tokenizer; the lexical
  model's fitted objects);
* ``config.json``: the resolved preset (with its member type), training settings and the cache's
  metadata;
* ``metrics.json``: held-out log loss / accuracy, timings, parameter counts;
* ``oof.csv``: id, p_a, p_b, p_tie, label for the held-out fold (with ``weight_average``, also
  ``p_a_final``, ... for the weights not saved: reported, never used to pick);
* ``train_log.csv`` and ``training.png``: the training log and curves (member types that log);
* ``manifest.json``, last: the cache's and the fold assignment's fingerprints it was trained on,
  and the adapter's (:mod:`kit.store.manifest`).

These are written into a staging folder swapped into place (:func:`kit.store.models.publish_training`):
a folder holds a complete model or none. A neural fit resumes a killed run from its checkpoints
(:mod:`kit.ops.hf_training`). The stage never branches on the member type: it reads the cache,
splits the rows, calls :meth:`kit.members.MemberType.fit`, and publishes what it returns.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..core.env import work_dir
from ..core.files import check_outside, under
from ..core.errors import BudgetError, PresetError
from ..core.log import get_logger
from ..core.metrics import log_loss
from ..core.presets import Preset, resolve_preset
from ..core.settings import PresetOverrides, TrainRun, TrainSettings
from ..core.signature import settings_function
from ..members import FitContext, get_member_type, resolve_member_preset
from ..ops.compute import CHECKPOINTED_PASSES, TRAIN_PASSES, Work, describe, projection_line, row_tokens
from ..ops.hf_training import is_rank_zero
from ..store.cache import TokenizedCache, load_cache
from ..store.io import check_free, output_lock, recover_staged
from ..store.models import FINAL_FILES, default_model_out, publish_training

log = get_logger(__name__)

__all__ = ["TrainResult", "TrainSettings", "cache_preset", "split_rows", "train_stage"]


@dataclass
class TrainResult:
    """What the train stage wrote: the model folder, its metrics (held-out log loss, accuracy, timings,
    parameter counts) and its out-of-fold predictions (None when no row was held out)."""

    out_dir: Path
    metrics: dict
    oof: pd.DataFrame | None


def split_rows(frame: pd.DataFrame, fold: int | None, settings: TrainSettings):
    """(training rows, held-out rows) of the tokenized table for ``fold`` (None: all rows train).
    Extra and soft-labelled rows (fold -2) always train, never held out. The training rows are
    rows ``skip_train_rows`` to ``skip_train_rows + max_train_rows`` of the rest, in table order: runs
    that differ only in the skip train on disjoint rows."""
    if fold is None:
        train, held = frame, frame.iloc[:0]
    else:
        folds = sorted(f for f in set(frame["fold"]) if f >= 0)
        if fold not in folds:
            raise PresetError(f"fold {fold} out of range: the tokenized data has folds {folds}")
        train, held = frame[frame["fold"] != fold], frame[frame["fold"] == fold]
        if not len(train):
            raise PresetError(f"fold {fold} holds every row of the tokenized data (tokenized with --folds 1?), "
                              f"so nothing is left to train on: train with --fold full (notebook FOLD = None), "
                              f"or re-tokenize with --folds 2 or more")
    if settings.skip_train_rows:
        if settings.skip_train_rows >= len(train):
            raise PresetError(f"--skip-train-rows {settings.skip_train_rows}: the other folds have only {len(train)} "
                              f"training rows, so none is left; skip fewer (a row bag: fewer seeds or a smaller "
                              f"--max-train-rows)")
        train = train.iloc[settings.skip_train_rows:]
    if settings.max_train_rows:
        if len(train) < settings.max_train_rows:
            log.warning(f"fold {fold}: {len(train)} training rows left for --max-train-rows "
                        f"{settings.max_train_rows} (after skipping {settings.skip_train_rows})")
        train = train.head(settings.max_train_rows)
    if settings.max_eval_rows:
        held = held.head(settings.max_eval_rows)
    return train, held


def cache_preset(model: str, cache: TokenizedCache, overrides: dict) -> Preset:
    """The preset a tokenized cache was made for — backbone folder, max_length and member type —
    with ``overrides``; a member type other than the cache's is an error (the cache's columns differ)."""
    packed = cache.preset
    name = resolve_preset(model, overrides).name
    if packed is not None and packed.name != name:
        raise PresetError(f"{cache.path} was tokenized for {packed.name!r}, not {name!r}")
    wanted = overrides.get("member")
    if wanted not in (None, cache.member):
        raise PresetError(f"{cache.path} was tokenized for the {cache.member!r} member type, not {wanted!r}: re-run "
                          f"the tokenize stage with --member {wanted} (notebook MEMBER = {wanted!r}), or train with "
                          f"--member {cache.member}")
    return resolve_preset(model, {"max_length": cache.max_length, "model_dir": packed.model_dir if packed else None,
                                  **overrides, "member": cache.member})


def training_devices() -> list[str]:
    """What a training run computes on: one GPU per DDP process (``WORLD_SIZE``), else the CPU."""
    if not torch.cuda.is_available():
        return ["cpu"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return [torch.cuda.get_device_name(i % torch.cuda.device_count()) for i in range(world)]


def project_training(preset: Preset, member, train_rows: pd.DataFrame, held: pd.DataFrame, settings: TrainSettings,
                     budget_hours: float | None) -> dict | None:
    """The run's time projected by arithmetic (:mod:`kit.ops.compute`) for its devices and for Kaggle's 2x T4,
    logged; a BudgetError naming what to change when it exceeds ``budget_hours`` on its devices. The training
    passes are the epochs (or the steps' rows) over the rows, doubled by swap augmentation for a
    position-dependent member; the held-out rows are scored at each evaluation and once at the end.
    ``settings`` are resolved against the preset (:meth:`kit.core.settings.TrainSettings.effective`). None
    for a member without a backbone (seconds, not hours)."""
    known = member.compute_shape(preset)
    if known is None or not len(train_rows):
        return None
    columns, shape = known
    sequences = len(train_rows) * (2 if member.uses_tta and settings.swap_augment else 1)
    batch = settings.batch_size * settings.grad_accum
    epochs = (settings.max_steps * batch / sequences if settings.max_steps > 0
              else settings.epochs) * sequences / len(train_rows)
    passes = (CHECKPOINTED_PASSES if preset.gradient_checkpointing else TRAIN_PASSES) * epochs
    works = [Work.passes(shape, row_tokens(train_rows, columns), passes, "train")]
    if len(held):
        works.append(Work.passes(shape, row_tokens(held, columns), settings.evals_per_run + 1, "score"))
    devices = training_devices()
    line, hours = projection_line(f"[kit train] {preset.name}: {len(train_rows)} rows, {epochs:.2f} passes over "
                                  f"them", works, devices)
    log.info(line)
    here = hours[describe(devices)]
    if budget_hours is not None and here is not None and here > budget_hours:
        fits = max(1, int(len(train_rows) * budget_hours / here))
        raise BudgetError(f"{line}, over BUDGET_HOURS = {budget_hours} (--budget-hours): train on fewer rows "
                          f"(MAX_TRAIN_ROWS = {fits} fits), cap MAX_STEPS, or lower MAX_LENGTH (re-tokenize); "
                          f"--budget-hours none trains anyway")
    return hours


@settings_function(TrainRun, TrainSettings, PresetOverrides, hints={
    "max_length": "max_length is fixed when tokenizing; re-run the tokenize stage to change it"})
def train_stage(
        model: str = "minilm",
        fold: int | None = 0,
        tokenized: str | None = None,
        out: str | None = None,
        overwrite: bool = False,
        resume: bool = True,
        budget_hours: float | None = 9.0,
        *,
        epochs: float | None = None,
        learning_rate: float | None = None,
        lr_schedule: str = "cosine",
        batch_size: int | None = None,
        grad_accum: int | None = None,
        warmup_ratio: float | None = None,
        weight_decay: float | None = None,
        max_steps: int = -1,
        evals_per_run: int = 4,
        eval_steps: int | None = None,
        swap_augment: bool = True,
        seed: int = 42,
        max_train_rows: int | None = None,
        skip_train_rows: int = 0,
        max_eval_rows: int | None = None,
        keep_checkpoints: bool = False,
        logging_steps: int = 5,
        group_by_length: bool | None = None,
        head_lr_scale: float | None = None,
        weight_average: str = "none",
        average_start: float = 0.5,
        ema_decay: float = 0.9,
        residual_on: str | None = None,
        model_dir: str | None = None,
        member: str | None = None,
        pooling: str | None = None,
        load_in_4bit: bool | None = None,
        lora_r: int | None = None,
        lora_alpha: int | None = None,
        lora_dropout: float | None = None,
        target_modules: list[str] | None = None,
        layers_to_transform: list[int] | None = None,
        gradient_checkpointing: bool | None = None,
        lexical_c: float | None = None,
        lexical_dense_scale: float | None = None,
) -> TrainResult:
    """Run stage 2 for one (model, fold).

    Every parameter is a field of :class:`kit.core.settings.TrainRun` (which model and fold, where from and where
    to, the time budget), :class:`kit.core.settings.TrainSettings` (the training knobs: epochs, learning rate,
    steps, ...; None: the preset's value) or :class:`kit.core.settings.PresetOverrides` (per-run changes to the
    preset; None keeps the preset's value), all listed below; all but the first seven are keyword-only. The
    values that ran are recorded in the model's config.json and manifest.

    Returns:
        :class:`TrainResult`: the model folder, its metrics and its out-of-fold predictions
        (empty on DDP ranks other than the first).

    Raises:
        PresetError: an unknown preset, a fold out of range, a cache tokenized for another member type.
        DataError / KitError: a damaged or missing cache, a finished model in ``out`` without ``overwrite``.

    Example:
        >>> res = train_stage("minilm", 0, tokenized="artifacts/tokenized/minilm", max_steps=20)  # doctest: +SKIP
        >>> res.metrics["log_loss"]                                                   # doctest: +SKIP
    """
    given = locals()
    run, settings = TrainRun.pick(given), TrainSettings.pick(given)
    overrides = PresetOverrides.pick(given).given()
    name = resolve_member_preset(run.model, overrides).name  # unknown preset / field: fail before any I/O
    tokenized = Path(run.tokenized) if run.tokenized else under(work_dir(), "tokenized", name)
    frame, cache, cache_manifest = load_cache(tokenized, "train")
    preset = cache_preset(run.model, cache, overrides)
    settings = settings.effective(preset)  # the values that run, resolved once: recorded as they ran
    member = get_member_type(preset.member)
    if settings.weight_average != "none" and not member.averages_weights:
        raise PresetError(f"--weight-average {settings.weight_average}: the {preset.member!r} member type has no "
                          f"training iterates to average; leave it at none for {preset.name}")
    train_rows, held = split_rows(frame, run.fold, settings)
    out = Path(run.out) if run.out else default_model_out(preset.name, run.fold)
    check_outside(out, {"the backbone folder": preset.model_dir, "the tokenized cache": tokenized})
    project_training(preset, member, train_rows, held, settings, run.budget_hours)  # before any model loads
    # a finished model is replaced only with overwrite (and only once the new one is complete:
    # publish_training); a run killed before publishing left none of these, so it simply resumes
    with output_lock(out) if is_rank_zero() else nullcontext():  # one writer per model folder (DDP: rank 0's)
        if is_rank_zero():
            recover_staged(out, FINAL_FILES)  # a run killed while publishing: its checkpoints go back
        check_free([out / n for n in FINAL_FILES], run.overwrite)
        # --overwrite over a finished model: the new run trains into the same folder while the old model
        # stays in place; a killed one resumes from its own checkpoints on the next identical command
        context = FitContext(out, run.fold, tokenized, resume=run.resume,
                             restart=run.overwrite and (out / "metrics.json").exists())
        fitted = member.fit(preset, train_rows, held, settings, context)
        if not fitted.main_process:
            return TrainResult(out, {}, None)

        metrics = {"fold": run.fold, "held_out_rows": len(held), **fitted.metrics}
        oof = None
        if fitted.held_probs is not None:
            probs, labels = fitted.held_probs, held["label"].to_numpy()
            metrics.update(log_loss=log_loss(labels, probs), accuracy=float((probs.argmax(1) == labels).mean()))
            oof = pd.DataFrame({"id": held["id"].to_numpy(), "p_a": probs[:, 0], "p_b": probs[:, 1],
                                "p_tie": probs[:, 2], "label": labels})
            for name, other in fitted.held_others.items():  # weights not saved: their scores, for comparison only
                oof[[f"{c}_{name}" for c in ("p_a", "p_b", "p_tie")]] = other
                metrics["weight_average"][name] = {"log_loss": log_loss(labels, other),
                                                   "accuracy": float((other.argmax(1) == labels).mean())}
        publish_training(out, preset, run.fold, settings, tokenized, cache.record, cache_manifest, metrics, oof,
                         fitted.save, fitted.log)
        if fitted.cleanup is not None:
            fitted.cleanup()
        return TrainResult(out, metrics, oof)

