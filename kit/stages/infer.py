"""Stage 3 — infer: a trained (model, fold) output -> three-way probabilities of a split.

``split="test"``: every row of the tokenized test table; ``split="oof"``: the rows of the fold
the model held out. Writes ``<model_dir>/predictions/<split>.csv`` (id, p_a, p_b, p_tie [,
label]; with swap TTA also the direct and swapped passes' columns) and its manifest
(:mod:`kit.store.predictions`). The member type's predictor scores the rows
(:meth:`kit.members.MemberType.load`): on every visible GPU (both T4s on Kaggle), one replica per
device, rows sorted by length and batched under a token budget, a run-time projection against the
budget after the first batches (:mod:`kit.ops.devices`). Several models, each in its own process on
GPUs, are :mod:`kit.stages.infer_many`'s job.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import DeadlineReached, PresetError, StaleOutput
from ..core.presets import quantized_as
from ..core.log import get_logger
from ..core.schema import PROB_COLUMNS, swap_probs
from ..core.settings import InferSettings
from ..core.signature import settings_function
from ..members import get_member_type
from ..ops.compute import Work, projection_line, row_tokens
from ..ops.devices import (RuntimeProjection, check_devices, default_max_tokens, device_names, swap_average,
                           visible_devices)
from ..store.cache import FOLD_KEYS, TokenizedCache, check_cache, read_cache
from ..store.io import check_free, output_lock, read_csv_keeping_ids, read_parquet_keeping_ids
from ..store.manifest import check_output, input_record
from ..store.models import TrainedModel, check_trained, read_trained
from ..store.predictions import write_predictions

log = get_logger(__name__)


@dataclass
class InferResult:
    """What the infer stage wrote: the predictions file and table, the swap-TTA flip rate (None
    without TTA), the projected hours for the split (None when not projected) and the seconds taken."""

    path: Path
    predictions: pd.DataFrame
    flip_rate: float | None
    projected_hours: float | None
    seconds: float


@settings_function(InferSettings)
def infer_stage(
        trained: str | None = None,
        split: str = "test",
        tokenized: str | None = None,
        out: str | None = None,
        devices: list[str] | None = None,
        cpu_workers: int = 1,
        tta: bool = True,
        max_tokens: int | None = None,
        budget_hours: float | None = 9.0,
        overwrite: bool = False,
        model_dir: str | None = None,
        quantization: str | None = None,
        reuse_train_scores: bool = True,
        ids: list[str] | None = None,
        deadline: float | None = None,
) -> InferResult:
    """Stage 3 for one trained (model, fold) output.

    Every parameter is a field of :class:`kit.core.settings.InferSettings`: its type and default are in the signature, its
    meaning under Args (generated from the field's help).

    For split="oof" with a single pass (a swap-equivariant member type or TTA off), the train
    stage already scored exactly these rows with exactly these weights (``oof.csv``, written with
    the adapter): those scores are taken instead of scoring again, when the ids match the held-out
    fold one for one and nothing (tokenized table, base model) is overridden.

    Returns:
        :class:`InferResult`: the predictions file and table, the flip rate (swap TTA), the
        projected hours for the split, the seconds taken.

    Example:
        >>> infer_stage("artifacts/models/lexical/fold0", "oof").predictions.head()  # doctest: +SKIP
    """
    s = InferSettings(**locals())
    model_dir, trained, model_manifest, preset, member, tokenized, table = _inputs(s)
    out = Path(s.out) if s.out else model_dir / "predictions" / f"{s.split}.csv"
    with output_lock(out):  # one writer per predictions file
        check_free([out], s.overwrite)
        cache_manifest = check_cache(tokenized, s.split)
        frame = _rows(s, model_dir, trained, model_manifest, preset, member, tokenized, table, cache_manifest)
        started = time.time()
        reused = _train_stage_scores(model_dir, frame, trained, model_manifest, member, s.split, s.tta, tokenized,
                                     s.reuse_train_scores and not s.model_dir and not s.quantization
                                     and s.ids is None)
        if reused is not None:
            probs, projection, timing = {"direct": reused}, None, None
            log.info(f"[kit infer] {model_dir / 'oof.csv'}: the train stage's scores of these held-out rows, reused")
        else:
            probs, projection, timing = _score(s, model_dir, preset, member, frame, started)
        seconds = time.time() - started
        tta = "swap" in probs
        result, flip = _prediction_table(frame, probs, s.split)
        # which training run, adapter and table made these predictions (the blend refuses predictions
        # of an earlier run, or changed since)
        test_source = cache_manifest.get("inputs", {}).get("test", {}).get("sha256") if s.split == "test" else None
        write_predictions(result, out, s.overwrite, manifest=dict(
            settings={"split": s.split, "tta": tta, "rows": len(result), "ids_given": s.ids is not None,
                      "quantization": "4bit" if preset.load_in_4bit else "8bit" if preset.load_in_8bit else "none"},
            timing=timing,
            inputs={"model": {"path": str(model_dir), "run_id": trained.run_id,
                              "adapter": model_manifest["outputs"]["adapter"]},
                    "table": {**input_record(table), "test_source": test_source}},
            run_id=trained.run_id, model_dir=str(model_dir), split=s.split, tokenized=str(tokenized)))
        log.info(f"[kit infer] {len(result)} rows, {seconds:.1f} s ({len(result) * len(probs) / max(seconds, 1e-9):.2f} "
                 f"passes/s){f', flip rate {flip:.3f}' if flip is not None else ''} -> {out}")
        projected = None if projection is None or projection.projected_s is None else projection.projected_s / 3600
        return InferResult(out, result, flip, projected, seconds)


def _inputs(s: InferSettings):
    """(model folder, its record, its manifest, the preset it scores with, its member type, the cache, the table
    of the split): what the trained model and the settings name, checked to exist."""
    if not s.trained:
        raise PresetError("which model? pass a train-stage output folder (--trained, trained=)")
    model_dir, split = Path(s.trained), s.split
    trained = read_trained(model_dir)  # config.json, read once
    model_manifest = check_trained(model_dir)
    preset = trained.preset  # exactly what the model was trained with
    if s.model_dir:
        preset = replace(preset, model_dir=s.model_dir)
    preset = quantized_as(preset, s.quantization)  # how the backbone is stored to score; the adapter is the same
    tokenized = Path(s.tokenized or trained.tokenized)
    if split == "test":
        table = tokenized / "test.parquet"
    elif split == "oof":
        table = tokenized / "train.parquet"
        if trained.fold is None:
            raise PresetError(f"{model_dir} was trained on every row: it has no out-of-fold split")
    else:
        raise PresetError(f"split must be 'test' or 'oof', got {split!r}")
    if not table.exists():
        raise StaleOutput(f"no tokenized {split} data at {table}; run `python -m kit tokenize` first")
    return model_dir, trained, model_manifest, preset, get_member_type(preset.member), tokenized, table


def _rows(s: InferSettings, model_dir: Path, trained, model_manifest: dict, preset, member, tokenized: Path,
          table: Path, cache_manifest: dict) -> pd.DataFrame:
    """The rows to score: the split's table (the model's own held-out fold for ``oof``; only ``s.ids`` where
    given), after checking that the cache was packed for this member type, budget and fold assignment."""
    # the member check comes before the fold check: a cache of another member type is wrong whatever its folds
    cache = read_cache(tokenized)  # meta.json, read once for the member, budget and fold checks
    packed_for = cache.preset
    if packed_for is not None and packed_for.member != preset.member:
        raise PresetError(f"{tokenized} was tokenized for the {packed_for.member!r} member type, but {model_dir} was "
                          f"trained as {preset.member!r}: re-run the tokenize stage with --model {preset.name} "
                          f"--member {preset.member} (notebook MEMBER = {preset.member!r})")
    packed_len = packed_for.max_length if packed_for is not None else None
    if packed_len is not None and packed_len != preset.max_length:
        warnings.warn(f"{tokenized} was packed at max_length={packed_len}, the model was trained at "
                      f"{preset.max_length}", RuntimeWarning, stacklevel=3)
    frame = read_parquet_keeping_ids(table)
    if s.split == "oof":
        _check_same_folds(model_dir, trained, cache, model_manifest, cache_manifest)
        frame = frame[frame["fold"] == trained.fold]
    if s.ids is not None:
        frame = _only_ids(frame, s.ids, table)
    member.check_cache(frame, table)
    return frame


def _score(s: InferSettings, model_dir: Path, preset, member, frame: pd.DataFrame, started: float):
    """({pass: probabilities}, the run's projection, its timing record): the model loaded on the devices and
    ``frame`` scored directly and, with swap TTA for a member type that uses it, swapped; within the deadline."""
    tta = s.tta and member.uses_tta  # a swap-equivariant member type gains nothing from a swapped pass
    devices = list(s.devices) if s.devices else visible_devices()
    check_devices(devices)
    if devices == ["cpu"] and s.cpu_workers > 1:
        devices = ["cpu"] * s.cpu_workers
    max_tokens = s.max_tokens or default_max_tokens(devices[0])
    scoring_projection(preset, member, frame, 2 if tta else 1, device_names(devices), f"{preset.name} {s.split}")
    _before(s.deadline, f"{preset.name} {s.split}: the deadline passed before the model loaded")
    predictor = member.load(model_dir, preset, devices)
    loaded = time.time()  # loading is paid once per model, scoring per row: timed apart for projections
    _before(s.deadline, f"{preset.name} {s.split}: the deadline passed while the model loaded")
    passes = ["direct"] + (["swap"] if tta else [])
    work, projection = predictor.work(frame), None
    if work:
        projection = RuntimeProjection(work * len(passes), s.budget_hours, label=f"{preset.name} {s.split}: ",
                                       deadline=s.deadline)
        projection.start = loaded
    probs = {name: predictor.predict_proba(frame, swap=name == "swap", max_tokens=max_tokens,
                                           projection=projection, desc=f"{preset.name} {s.split} {name}")
             for name in passes}
    # how fast this model scored, where: kit submit's preflight projects the hidden test's run time from it
    timing = {"seconds": round(time.time() - started, 3), "load_seconds": round(loaded - started, 3),
              "score_seconds": round(time.time() - loaded, 3), "rows": len(frame), "passes": len(passes),
              "warm_up": projection.warm_up() if projection is not None else None,
              "devices": devices, "device_names": device_names(devices)}
    return probs, projection, timing


def _prediction_table(frame: pd.DataFrame, probs: dict, split: str) -> tuple[pd.DataFrame, float | None]:
    """(the predictions table: id, p_a, p_b, p_tie — the mean of both passes with swap TTA, each pass's columns
    beside it — and the label for held-out rows; the flip rate, or None with one pass)."""
    result = pd.DataFrame({"id": frame["id"].to_numpy()})
    flip = None
    if "swap" in probs:
        final, flip = swap_average(probs["direct"], probs["swap"])
        for tag, arr in (("direct", probs["direct"]), ("swap", swap_probs(probs["swap"]))):
            for j, c in enumerate(PROB_COLUMNS):
                result[f"{c}_{tag}"] = arr[:, j]
    else:
        final = probs["direct"]
    for j, c in enumerate(PROB_COLUMNS):
        result[c] = final[:, j]
    if split == "oof":
        result["label"] = frame["label"].to_numpy()
    return result[["id", *PROB_COLUMNS, *[c for c in result.columns if c not in ("id", *PROB_COLUMNS)]]], flip


def scoring_projection(preset, member, frame: pd.DataFrame, passes: int, devices: list[str], what: str) -> dict | None:
    """Scoring ``frame``'s rows ``passes`` times, projected by arithmetic (:mod:`kit.ops.compute`) for ``devices``
    (names) and Kaggle's 2x T4, logged before the model loads: {device text: hours}; None for a member type
    without token columns (the lexical model: seconds)."""
    known = member.compute_shape(preset)
    if known is None or not len(frame):
        return None
    columns, shape = known
    line, hours = projection_line(f"[kit infer] {what}: {len(frame)} rows x {passes} pass(es)",
                                  [Work.passes(shape, row_tokens(frame, columns), passes, "score")], devices)
    log.info(line)
    return hours


def _before(deadline: float | None, what: str) -> None:
    if deadline is not None and time.time() > deadline:
        raise DeadlineReached(what)


def _only_ids(frame: pd.DataFrame, ids: list[str], table: Path) -> pd.DataFrame:
    """The rows of ``frame`` whose ids are in ``ids``, in the table's order; a PresetError naming ids the table
    does not hold."""
    wanted = set(map(str, ids))
    missing = wanted - set(frame["id"])
    if missing:
        raise PresetError(f"--ids / ids: {len(missing)} id(s) not in {table}, e.g. {sorted(missing)[:3]}: pass ids of "
                          f"its rows")
    return frame[frame["id"].isin(wanted)]


def _check_same_folds(model_dir: Path, model: TrainedModel, cache: TokenizedCache, model_manifest: dict,
                      cache_manifest: dict) -> None:
    """Out-of-fold rows are only held out if the cache puts the same rows (ids, labels) in the
    same folds as the cache the model was trained on: the fold fingerprints must agree; the
    settings that differ are named."""
    trained = model.tokenization
    tokenized, now = cache.path, cache.fold_settings()
    differ = [k for k in FOLD_KEYS if k in trained and now.get(k) != trained.get(k)]
    then_folds = model_manifest.get("inputs", {}).get("cache", {}).get("folds")
    if differ or then_folds != cache_manifest.get("folds"):
        named = (", ".join(f"{k}: {trained.get(k)!r} then, {now.get(k)!r} now" for k in differ)
                 or "same settings, other rows or labels: a remade or edited source table")
        raise StaleOutput(f"{tokenized} splits its rows differently from when {model_dir} was trained ({named}): its "
                         f"'held-out' fold would hold training rows. Retrain on this cache, or pass --tokenized with "
                         f"the cache the model was trained on")


def _train_stage_scores(model_dir: Path, frame: pd.DataFrame, model: TrainedModel, model_manifest: dict, member, split: str,
                        tta: bool, tokenized: Path, allowed: bool) -> np.ndarray | None:
    """The train stage's probabilities of ``frame``'s rows, if they are exactly what scoring
    would give (see :func:`infer_stage`) and ``oof.csv`` is what the train stage wrote (its
    manifest's fingerprint; a StaleOutput otherwise); None when they are not reusable."""
    if not allowed or split != "oof" or model.tokenized.resolve() != tokenized.resolve():
        return None
    if tta and member.uses_tta:
        return None  # the train stage scored the direct pass only
    path = model_dir / "oof.csv"
    if not path.exists():
        return None
    check_output(model_manifest, "oof.csv", path, f"trained model {model_dir}",
                 f"rerun the train stage into it (`python -m kit train ... --out {model_dir} --overwrite`), or score "
                 f"afresh with --no-reuse-train-scores")
    scored = read_csv_keeping_ids(path)
    if scored["id"].tolist() != frame["id"].tolist():  # both text (read_parquet_keeping_ids)
        return None  # e.g. the train stage scored a capped share of the fold
    return scored[PROB_COLUMNS].to_numpy(dtype=np.float64)
