"""``kit cv``: the whole pipeline, fold by fold, on any table in the competition's train columns.

Beside the members, ``judges`` (un-finetuned decoders, :mod:`kit.members.zeroshot`) and external
judges' verdicts (:mod:`kit.ensemble.judges`) are scored on the same out-of-fold rows, with each
model's parameter count — the paper's comparison of a fine-tuned small ensemble with larger
zero-shot judges. ``extra`` tables train in every fold and are never scored; a ``residual`` member
trains on top of another member's out-of-fold log-probabilities.

For each model (a preset, trained as its member type): tokenize (K folds grouped
by prompt) -> train one model per fold -> predict its held-out fold (with and without swap
TTA where the head uses it). Then blend the members and score everything on the same
out-of-fold rows: uniform, class prior, TF-IDF baseline, each member, and the blend.
Writes ``DIR/cv.json``, ``DIR/cv.md`` and ``DIR/cv.png``.

With ``weights="fit"`` the ``blend`` figure is cross-fitted (weights fitted on the other
folds, applied to each fold — :func:`kit.ensemble.combine.blend_members`); the in-sample figure is
reported beside it as ``blend (in-sample fit)``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence
from dataclasses import asdict, dataclass, field, replace

import pandas as pd

from ..core.errors import BlendError, SettingsError, StaleOutput
from ..core.log import get_logger
from ..core.metrics import metrics
from ..core.provenance import provenance
from ..core.presets import member_order, preset_of, resolve_preset
from ..core.settings import TrainSettings
from ..core.signature import settings_function
from ..core.values import one_path_each
from .settings import CV_OWNED, CvSettings
from ..ensemble.combine import blend_members, describe_weights
from ..ensemble.evaluation import evaluation_table, table_scores
from ..ensemble.guardrails import apply_guardrails
from ..ensemble.cv_report import cv_markdown, shared_seeds
from ..ensemble.report import blend_comparisons
from ..ensemble.judges import (check_judge_covers, external_judge, held_out_judge, judge_table,
                               params_of, read_judge_csv)
from ..ops.packing import PackConfig
from ..store.cache import check_cache, cut_rate, read_cache
from ..store.io import ids_as_text
from ..store.figures import plot_methods
from ..store.io import write_json, write_text
from ..store.models import check_trained, read_trained
from ..members import get_member_type
from ..store.predictions import load_member, read_predictions
from ..stages.infer import infer_stage
from ..stages.tokenize import tokenize_stage
from ..stages.train import cache_preset, train_stage
from ..core.files import check_outside, read_json, under

log = get_logger(__name__)


def _reusable_cache(tok_dir: Path, wanted: dict, model: str, max_length, member, overwrite: bool,
                    pack: dict | None = None) -> bool:
    """True when tok_dir holds a finished cache made with the same inputs and settings; a
    different one is an error (unless overwrite, which re-tokenizes)."""
    meta_path = tok_dir / "meta.json"
    if overwrite or not meta_path.exists() or not (tok_dir / "train.parquet").exists():
        return False
    try:
        check_cache(tok_dir, "train")
    except StaleOutput as e:
        raise StaleOutput(f"cannot reuse {e}; or pass --overwrite to redo the whole cv") from None
    cache = read_cache(tok_dir)  # reads older caches' "head" too
    preset = resolve_preset(model, dict(max_length=max_length, member=member))
    have = {k: cache.record.get(k) for k in wanted} | {"max_length": cache.max_length, "member": cache.member}
    want = wanted | {"max_length": preset.max_length, "member": preset.member}
    if cache.pack_options is not None:  # a packed member (not lexical): the options asked for, the cut always
        asked = {"cut": PackConfig.cut, **(pack or {})}
        have |= {f"pack.{k}": cache.pack_options.get(k) for k in asked}
        want |= {f"pack.{k}": v for k, v in asked.items()}
    if have != want:
        diff = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
        raise SettingsError(f"{tok_dir} was made with other settings {diff} (was, now): pass --overwrite to redo "
                         f"the whole cv, or choose another --out")
    return True


def _fold_state(fold_dir: Path, settings: TrainSettings, preset, overwrite: bool) -> str:
    """"predicted" (a finished model with its checked out-of-fold predictions), "trained" (a
    finished model; a killed call did not predict its fold yet) or "none", for a fold trained
    with `settings` and `preset` (the recipe, its folder aside); one trained otherwise is an error
    (unless overwrite)."""
    if overwrite or not (fold_dir / "config.json").exists():
        return "none"
    try:
        check_trained(fold_dir)
    except StaleOutput:
        return "none"
    trained = read_trained(fold_dir)  # typed: older records read into the same fields
    same_recipe = replace(trained.preset, model_dir=None) == replace(preset, model_dir=None)
    if trained.train != json.loads(json.dumps(asdict(settings.effective(preset)))) or not same_recipe:
        raise SettingsError(f"{fold_dir} was trained with other settings or another recipe: pass --overwrite to "
                         f"redo the whole cv, or choose another --out")
    try:
        read_predictions(fold_dir / "predictions" / "oof.csv", "out-of-fold", fold_dir)
        return "predicted"
    except BlendError:
        return "trained"


def _single_seed_rows(members, bagged, result, weights, space, temperature, tie_offset) -> pd.DataFrame:
    """The spread a single seed gives, each row fitted and cross-fitted as the bagged blend, on its rows:
    for each seed-bagged member and each of its seeds, the blend with that seed's models alone in the
    member's place ('blend, MODEL seed S alone'); with two or more bags, for each seed they all share, the
    blend with every bag at that seed at once ('blend, every bag at seed S': the whole recipe, one seed)."""
    def scored(swap: dict):
        swapped = blend_members([swap.get(m.name, m) for m in members], weights, space, temperature, tie_offset)
        position = {i: n for n, i in enumerate(swapped.oof_ids)}
        where = [position[i] for i in result.oof_ids]  # the bagged blend's row order
        return metrics(swapped.oof_labels[where], swapped.oof_blend[where])

    rows = {f"blend, {name} seed {seed} alone": scored({name: alone})
            for name, by_seed in bagged.items() for seed, alone in by_seed.items()}
    rows.update({f"blend, every bag at seed {seed}": scored({name: by_seed[seed] for name, by_seed in bagged.items()})
                 for seed in shared_seeds(bagged)})
    return pd.DataFrame.from_dict(rows, orient="index")[["log_loss", "accuracy", "macro_f1"]]


@settings_function(CvSettings)
def cv_stage(
        train: list[str],
        models: Sequence[str] = ("minilm", "smollm2", "lexical"),
        folds: int = 5,
        out: str | None = None,
        max_length: int | None = None,
        max_rows: int | None = None,
        weights: str = "fit",
        epochs: float | None = None,
        max_train_rows: int | dict | None = None,
        tta: bool = True,
        seed: int = 42,
        train_seed: int | None = None,
        bag_seeds: dict | None = None,
        bag_rows: bool = False,
        swap_augment: bool = True,
        evals_per_run: int = 1,
        member: str | None = None,
        pack: dict | None = None,
        space: str = "log",
        temperature: bool = False,
        tie_offset: bool = False,
        extra: Sequence[str] = (),
        dedup_similarity: float = 0.9,
        residual: dict | None = None,
        recipes: dict = {},  # noqa: B006 - never mutated
        judges: Sequence[str] = (),
        blend_judges: bool = False,
        judge_csv: dict | None = None,
        overwrite: bool = False,
) -> dict:
    """``kit cv``: the whole pipeline fold by fold on a labelled table, members blended and compared.

    Every parameter is a field of :class:`kit.workflows.settings.CvSettings`: its type and default are in the signature, its
    meaning under Args (generated from the field's help).

    Returns:
        dict: ``rows``, ``folds``, ``settings``, ``results`` ({method: log_loss, accuracy}),
        ``markdown`` and the out-of-fold ``table``; also written to ``out/cv.json``, ``cv.md``,
        ``cv.png``.

    Example:
        >>> cv_stage(["data/pandalm/pandalm_kaggle.csv"], ["lexical"], 5, out="artifacts/cv")  # doctest: +SKIP
    """
    s = CvSettings(**locals())
    plan = _plan(s)
    started = time.time()
    trained = _train_and_score(s, plan)
    result, table, judges, differences = _evaluate(s, plan, trained)
    settings = _record(s, plan, trained, result, time.time() - started)
    payload = {"rows": len(result.oof_ids), "folds": s.folds, "settings": settings, "provenance": provenance(started),
               "results": table_scores(table), "comparisons": [d.to_dict() for d in differences]}
    weights_text = (f"{describe_weights(result)} in {s.space} space"
                    + (f" (the judges {', '.join(s.judges)} blended as members too)" if s.blend_judges and s.judges
                       else "")
                    + (f", temperature {result.temperature:.2f}" if s.temperature else "")
                    + (f", tie offset {result.tie_offset:+.2f} (fitted with them)" if s.tie_offset else ""))
    md = cv_markdown(s.train, settings, table, payload["rows"], weights_text, result.report["oof_score"],
                     trained.bagged, judges, differences)
    # derived from the folds above, which were all checked or made by this call
    plot_methods(table, plan.out / "cv.png", title=f"kit cv: {payload['rows']} out-of-fold rows, {s.folds} folds",
                 overwrite=True)
    md += "\n![out-of-fold log loss and accuracy per method](cv.png)\n"
    write_json(payload, plan.out / "cv.json", overwrite=True)
    write_text(md, plan.out / "cv.md", overwrite=True)
    return {**payload, "markdown": md, "table": table}


@dataclass
class _Plan:
    """What a cv call will do, checked before any work: the members in blend order, their row caps, seed bags and
    residual bases, the external judges' files, the training seed and the output folder."""
    models: list[str]
    residual: dict
    caps: dict
    bags: dict
    judge_csv: dict
    train_seed: int
    out: Path


def _check_recipes(s: CvSettings) -> None:
    """What a member's --recipes asks of its member type, checked before any member trains (the train stage would
    refuse it only when that member's folds come up, perhaps hours later)."""
    for model, recipe in s.recipes.items():
        member = resolve_preset(preset_of(model), dict(member=s.member)).member
        if recipe.get("weight_average", "none") != "none" and not get_member_type(member).averages_weights:
            raise SettingsError(f"--recipes {model}=weight_average:{recipe['weight_average']}: the {member!r} member "
                                f"type has no training iterates to average; leave weight_average out for {model}")


def _plan(s: CvSettings) -> _Plan:
    """The call's plan; a SettingsError (or the judge file's error) naming the first setting that cannot work."""
    models = s.models
    repeated = sorted({m for m in models if list(models).count(m) > 1})
    if repeated:
        raise SettingsError(f"--models {' '.join(repeated)}: given twice; to train one preset two ways, name the "
                            f"second PRESET@TAG (e.g. {preset_of(repeated[0])}@all) with its own --max-train-rows "
                            f"or --bag-seeds")
    for model in models:  # an unknown name fails here, before any work
        resolve_preset(preset_of(model), dict(member=s.member))
    _check_recipes(s)
    for judge in s.judges:
        if not get_member_type(resolve_preset(judge).member).is_judge:
            raise SettingsError(f"--judges {judge}: not a judge preset (a member type that trains nothing, e.g. "
                                f"smollm2-zeroshot); trained members go in --models")
    judge_csv = one_path_each(s.judge_csv)
    for name, path in judge_csv.items():  # a wrong file fails now, not after the training
        read_judge_csv(name, path)
    residual = {name: bases[0] for name, bases in (s.residual or {}).items()}
    for name, base in residual.items():
        if name not in models or base not in models or base in residual:
            raise SettingsError(f"--residual {name}={base}: both must be --models members, and the base not itself "
                                f"residual")
    caps = s.max_train_rows if isinstance(s.max_train_rows, dict) else {m: s.max_train_rows for m in models}
    for name in caps:
        if name not in models:
            raise SettingsError(f"--max-train-rows {name}=...: not one of the --models {list(models)}")
    bags = s.bag_seeds or {}
    for name in bags:
        if name not in models:
            raise SettingsError(f"--bag-seeds {name}=...: not one of the --models {list(models)}")
        if s.bag_rows and not caps.get(name):
            raise SettingsError(f"--bag-rows: {name}'s blocks are --max-train-rows rows each; pass --max-train-rows "
                                f"{name}=N")
    if s.bag_rows and not bags:
        raise SettingsError("--bag-rows splits the rows of a seed bag: pass --bag-seeds MODEL=S1,S2,... too")
    out = Path(s.out)
    # nothing under a backbone folder: a model given by path is an input, read and never written
    check_outside(out, {f"the backbone folder of {m}": resolve_preset(preset_of(m), dict(member=s.member)).model_dir
                        for m in list(models) + list(s.judges)})
    train_seed = s.seed if s.train_seed is None else s.train_seed
    return _Plan(member_order(models), residual, caps, bags, judge_csv, train_seed, out)  # the stronger member: 0.7


@dataclass
class _Trained:
    """Every member's and judge's out-of-fold predictions, with what the report says of each."""
    members: list = field(default_factory=list)
    judged: list = field(default_factory=list)
    bagged: dict = field(default_factory=dict)  # member -> {seed: its models' predictions}
    timings: dict = field(default_factory=dict)  # training minutes summed over folds
    params: dict = field(default_factory=dict)
    cut: dict = field(default_factory=dict)


def _train_and_score(s: CvSettings, plan: _Plan) -> _Trained:
    """Tokenize, train and score out of fold every member (a residual member's base first), then every judge."""
    trained = _Trained()
    for model in sorted(plan.models, key=lambda m: m in plan.residual) + list(s.judges):
        is_judge = model in s.judges and model not in plan.models
        tok_dir = _tokenized(s, plan, model, is_judge, trained.cut)
        dirs, seed_dirs = _train_folds(s, plan, model, tok_dir)
        (trained.judged if is_judge else trained.members).append(load_member(model, dirs, need_test=False))
        if model in plan.bags:
            trained.bagged[model] = {sd: load_member(model, d, need_test=False) for sd, d in seed_dirs.items()}
        # training minutes as recorded by each fold (also for folds reused from an earlier call)
        trained.timings[model] = sum(read_json(d / "metrics.json", "rerun the train stage there")["train_seconds"]
                                     for d in dirs) / 60
        trained.params[model] = params_of(dirs[0])
    trained.members = sorted(trained.members, key=lambda m: plan.models.index(m.name))  # the blend's order
    return trained


def _tokenized(s: CvSettings, plan: _Plan, model: str, is_judge: bool, cut: dict) -> Path:
    """The member's cache under ``out`` (made, or reused when made with the same settings); its cut rate goes
    into ``cut``. With the first cache, every external judge is checked to cover the rows to be scored."""
    preset = preset_of(model)  # PRESET@TAG: the preset's tokens, the member's own folders and settings
    tok_dir = under(plan.out, "tokenized", preset)  # one folder under out, whatever the name
    extra = [] if is_judge else list(s.extra)  # a judge trains nothing: extra rows would only cost time
    wanted = {"train_sources": [str(p) for p in s.train], "n_folds": s.folds, "seed": s.seed,
              "max_rows": s.max_rows, "extra_sources": [str(p) for p in extra],
              "dedup_similarity": s.dedup_similarity if extra else None}
    kind = None if is_judge else s.member  # a judge keeps its own member type and token budget
    pack = None if is_judge else s.pack
    if _reusable_cache(tok_dir, wanted, preset, None if is_judge else s.max_length, kind, s.overwrite, pack):
        log.info(f"[kit cv] reusing {tok_dir}")
    else:
        # extra rows: training-only (fold -2) in every fold, deduplicated against the held-out prompts
        tokenize_stage(preset, list(s.train), "", max_length=None if is_judge else s.max_length, n_folds=s.folds,
                       seed=s.seed, max_rows=s.max_rows, out=tok_dir, overwrite=s.overwrite, member=kind,
                       extra=extra, dedup_similarity=s.dedup_similarity, pack=pack)
    cut[model] = cut_rate(tok_dir)
    if len(cut) == 1:  # the rows to be scored are known now: every judge must cover them, before training
        scored = pd.read_parquet(tok_dir / "train.parquet", columns=["id", "fold"])
        scored_ids = ids_as_text(scored.loc[scored["fold"] >= 0, "id"]).tolist()
        for name, path in plan.judge_csv.items():
            check_judge_covers(name, path, scored_ids)
    return tok_dir


def _train_folds(s: CvSettings, plan: _Plan, model: str, tok_dir: Path) -> tuple[list[Path], dict]:
    """(every model folder of the member, {seed: its folders}): each fold at each of its bag's seeds trained
    and scored out of fold, or reused when an earlier call already did so with the same settings."""
    caps, bags, preset = plan.caps, plan.bags, preset_of(model)
    recipe = cache_preset(preset, read_cache(tok_dir), {})  # the cache's recipe, the same for every fold
    if s.bag_rows and model in bags:  # every block must hold rows in every fold: say so before any training
        fold_of = pd.read_parquet(tok_dir / "train.parquet", columns=["fold"])["fold"]
        fewest = min(int((fold_of != k).sum()) for k in range(s.folds))
        if (len(bags[model]) - 1) * caps[model] >= fewest:
            raise SettingsError(f"--bag-rows: {len(bags[model])} blocks of {caps[model]} rows for {model}, but a "
                                f"fold has only {fewest} training rows: fewer seeds or a smaller --max-train-rows")
    dirs, seed_dirs = [], {}
    for k, (block, model_seed) in ((k, b) for k in range(s.folds)
                                   for b in enumerate(bags.get(model, [plan.train_seed]))):
        skip = block * caps[model] if s.bag_rows and model in bags else 0  # a row bag's i-th block
        owned = dict(epochs=s.epochs, max_train_rows=caps.get(model), skip_train_rows=skip, seed=model_seed,
                     swap_augment=s.swap_augment, evals_per_run=s.evals_per_run,
                     residual_on=str(under(plan.out, "models", plan.residual[model])) if model in plan.residual else None)
        # CvSettings refuses --recipes that set these by the CV_OWNED list: it must name exactly what is set here
        assert owned.keys() == CV_OWNED, f"CV_OWNED {sorted(CV_OWNED)} != the fields kit cv sets {sorted(owned)}"
        settings = TrainSettings(**owned, **s.recipes.get(model, {}))
        # the training seed's own folder on the first rows, so a bag reuses the folds trained before it
        fold_dir = under(plan.out, "models", model, f"fold{k}" if model_seed == plan.train_seed and not skip
                         else f"fold{k}-seed{model_seed}" + (f"-skip{skip}" if skip else ""))
        seed_dirs.setdefault(model_seed, []).append(fold_dir)
        state = _fold_state(fold_dir, settings, recipe, s.overwrite)  # a killed or extended cv run goes on
        if state == "predicted":
            log.info(f"[kit cv] reusing {fold_dir}")
        else:
            if state == "none":
                train_stage(preset, k, tokenized=tok_dir, out=fold_dir, overwrite=s.overwrite, **settings.to_dict())
            # the fold's model was (re)trained just now, or its predictions are missing or stale
            infer_stage(fold_dir, "oof", tta=s.tta, overwrite=True)
        dirs.append(fold_dir)
    return dirs, seed_dirs


def _evaluate(s: CvSettings, plan: _Plan, trained: _Trained):
    """(blend, its out-of-fold table with the baselines, guardrails, judges, cut rates and single-seed rows,
    the judges' rows, the paired comparisons)."""
    first_cache = under(plan.out, "tokenized", preset_of(plan.models[0]))
    # --blend-judges: the judges' held-out log-probabilities as features too (each keeps its judge row)
    result = blend_members(trained.members + (trained.judged if s.blend_judges else []), s.weights, s.space,
                           s.temperature, s.tie_offset)
    result.table = evaluation_table(result, first_cache)
    apply_guardrails(result, first_cache)  # its own row: "blend + guardrails"
    judges = [held_out_judge(j, result.oof_ids, trained.params[j.name]) for j in trained.judged]
    judges += [external_judge(name, path, result.oof_ids, result.oof_labels, result.oof_folds)
               for name, path in plan.judge_csv.items()]
    table = result.table
    table["params"] = [trained.params.get(name) for name in table.index]
    if judges:
        table = result.table = pd.concat([table, judge_table(judges, result.oof_labels)])
    table["cut"] = [trained.cut.get(name.removeprefix("judge: ")) for name in table.index]
    if trained.bagged:
        seed_rows = _single_seed_rows(trained.members, trained.bagged, result, s.weights, s.space, s.temperature,
                                      s.tie_offset)
        table = result.table = pd.concat([table, seed_rows])
    return result, table, judges, blend_comparisons(result, judges, plan.models)


def _record(s: CvSettings, plan: _Plan, trained: _Trained, result, seconds: float) -> dict:
    """The ``settings`` record of cv.json: what ran, as given and as resolved, and the blend it made."""
    extra_meta = read_cache(under(plan.out, "tokenized", preset_of(plan.models[0]))).extra_rows
    return {"train": [str(p) for p in s.train], "extra": [str(p) for p in s.extra], "residual": plan.residual,
            "extra_rows": extra_meta.get("kept"),
            "extra_removed": extra_meta.get("removed_exact", 0) + extra_meta.get("removed_near", 0),
            "models": list(plan.models), "folds": s.folds, "member": s.member,
            "max_length": s.max_length, "pack": s.pack, "max_rows": s.max_rows, "epochs": s.epochs,
            "max_train_rows": s.max_train_rows, "tta": s.tta, "seed": s.seed, "train_seed": plan.train_seed,
            "bag_seeds": plan.bags or None, "bag_rows": s.bag_rows, "swap_augment": s.swap_augment,
            "evals_per_run": s.evals_per_run, "recipes": s.recipes or None, "judges": list(s.judges),
            "judge_csv": {name: str(path) for name, path in plan.judge_csv.items()} or None,
            "blend_judges": s.blend_judges,
            # every setting as given: cv_stage(**given) redoes this report (scripts/bag_spread.py)
            "given": json.loads(json.dumps(s.to_dict(), default=str)),
            "blend": {"space": s.space, "weights_mode": result.weights_mode,
                      "weights": dict(zip(result.members, result.weights)),
                      "temperature": result.temperature, "tie_offset": result.tie_offset,
                      "oof_score": result.report["oof_score"],
                      "per_fold": result.report["per_fold"], "stacker": result.report.get("stacker"),
                      "guardrails": result.report.get("guardrails")},
            "cut_rates": trained.cut, "train_minutes": trained.timings, "wall_minutes_this_call": seconds / 60}
