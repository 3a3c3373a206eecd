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
folds, applied to each fold — :func:`kit.blend.blend_members`); the in-sample figure is
reported beside it as ``blend (in-sample fit)``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence
from dataclasses import asdict, replace

import pandas as pd

from ..core.errors import BlendError, SettingsError, StaleOutput
from ..core.log import get_logger
from ..core.metrics import metrics
from ..core.provenance import provenance
from ..core.presets import member_order, preset_of, resolve_preset
from ..core.settings import TrainSettings
from ..core.signature import settings_function
from ..core.values import one_path_each
from .settings import CvSettings
from ..ensemble.combine import blend_members, describe_weights
from ..ensemble.evaluation import evaluation_table, table_scores
from ..ensemble.guardrails import apply_guardrails
from ..ensemble.intervals import N_DRAWS, differences_markdown
from ..ensemble.report import blend_comparisons
from ..ensemble.judges import (check_judge_covers, comparison_markdown, external_judge, held_out_judge, judge_table,
                               params_of, read_judge_csv)
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


def _reusable_cache(tok_dir: Path, wanted: dict, model: str, max_length, member, overwrite: bool) -> bool:
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
    if trained.train != json.loads(json.dumps(asdict(settings))) or not same_recipe:
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
                 for seed in _shared_seeds(bagged)})
    return pd.DataFrame.from_dict(rows, orient="index")[["log_loss", "accuracy", "macro_f1"]]


def _shared_seeds(bagged: dict) -> list:
    """The seeds every bagged member was trained with, in the first bag's order; none for a single bag
    (its 'seed N alone' rows already are the recipe at one seed)."""
    if len(bagged) < 2:
        return []
    first, *rest = bagged.values()
    return [seed for seed in first if all(seed in other for other in rest)]


def _seed_spread_line(table: pd.DataFrame, bagged: dict, bag_rows: bool = False) -> str:
    """One markdown line per bagged member, and one for the whole recipe at one seed (two or more bags):
    the blend's range over those single-seed rows beside the bag's."""
    def spread(what: str, subject: str, row_names: list) -> str:
        rows = table.loc[row_names]
        return (f"\nSeed spread ({what}): {subject} scores "
                f"{rows['log_loss'].min():.4f}–{rows['log_loss'].max():.4f} log loss and "
                f"{rows['accuracy'].min():.4f}–{rows['accuracy'].max():.4f} accuracy; bagged, "
                f"{table.loc['blend', 'log_loss']:.4f} and {table.loc['blend', 'accuracy']:.4f}.\n")

    lines = [spread(f"{name}, {len(by_seed)} seeds" + (", each on its own block of rows" if bag_rows else ""),
                    "the blend with one seed's models", [f"blend, {name} seed {sd} alone" for sd in by_seed])
             for name, by_seed in bagged.items()]
    shared = _shared_seeds(bagged)
    if shared:
        lines.append(spread(f"the whole recipe, every bagged member at one seed, {len(shared)} seeds: "
                            f"{', '.join(map(str, shared))}", "the blend",
                            [f"blend, every bag at seed {sd}" for sd in shared]))
    return "".join(lines)


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
        space: str = "log",
        temperature: bool = False,
        tie_offset: bool = False,
        extra: Sequence[str] = (),
        dedup_similarity: float = 0.9,
        residual: dict | None = None,
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
    train, models, folds, out = s.train, s.models, s.folds, s.out
    max_length, max_rows, weights, epochs = s.max_length, s.max_rows, s.weights, s.epochs
    max_train_rows, tta, seed, swap_augment = s.max_train_rows, s.tta, s.seed, s.swap_augment
    evals_per_run, member, space, overwrite = s.evals_per_run, s.member, s.space, s.overwrite
    train_seed = seed if s.train_seed is None else s.train_seed
    repeated = sorted({m for m in models if list(models).count(m) > 1})
    if repeated:
        raise SettingsError(f"--models {' '.join(repeated)}: given twice; to train one preset two ways, name the "
                            f"second PRESET@TAG (e.g. {preset_of(repeated[0])}@all) with its own --max-train-rows "
                            f"or --bag-seeds")
    for model in models:  # an unknown name fails here, before any work
        resolve_preset(preset_of(model), dict(member=member))
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
    caps = max_train_rows if isinstance(max_train_rows, dict) else {m: max_train_rows for m in models}
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
    out = Path(out)
    # nothing under a backbone folder: a model given by path is an input, read and never written
    check_outside(out, {f"the backbone folder of {m}": resolve_preset(preset_of(m), dict(member=member)).model_dir
                        for m in list(models) + list(s.judges)})
    models = member_order(models)  # the stronger member gets 0.7
    started, timings, members, judged, params, cut, bagged = time.time(), {}, [], [], {}, {}, {}
    # a residual member's base is trained (and scored out of fold) first
    for model in sorted(models, key=lambda m: m in residual) + list(s.judges):
        is_judge = model in s.judges and model not in models
        preset = preset_of(model)  # PRESET@TAG: the preset's tokens, the member's own folders and settings
        tok_dir = under(out, "tokenized", preset)  # one folder under out, whatever the name
        extra = [] if is_judge else list(s.extra)  # a judge trains nothing: extra rows would only cost time
        wanted = {"train_sources": [str(p) for p in train], "n_folds": folds, "seed": seed, "max_rows": max_rows,
                  "extra_sources": [str(p) for p in extra], "dedup_similarity": s.dedup_similarity if extra else None}
        kind = None if is_judge else member  # a judge keeps its own member type and token budget
        if _reusable_cache(tok_dir, wanted, preset, None if is_judge else max_length, kind, overwrite):
            log.info(f"[kit cv] reusing {tok_dir}")
        else:
            # extra rows: training-only (fold -2) in every fold, deduplicated against the held-out prompts
            tokenize_stage(preset, list(train), "", max_length=None if is_judge else max_length, n_folds=folds,
                           seed=seed, max_rows=max_rows, out=tok_dir, overwrite=overwrite, member=kind,
                           extra=extra, dedup_similarity=s.dedup_similarity)
        cut[model] = cut_rate(tok_dir)
        if len(cut) == 1:  # the rows to be scored are known now: every judge must cover them, before training
            scored = pd.read_parquet(tok_dir / "train.parquet", columns=["id", "fold"])
            scored_ids = ids_as_text(scored.loc[scored["fold"] >= 0, "id"]).tolist()
            for name, path in judge_csv.items():
                check_judge_covers(name, path, scored_ids)
        recipe = cache_preset(preset, read_cache(tok_dir), {})  # the cache's recipe, the same for every fold
        if s.bag_rows and model in bags:  # every block must hold rows in every fold: say so before any training
            fold_of = pd.read_parquet(tok_dir / "train.parquet", columns=["fold"])["fold"]
            fewest = min(int((fold_of != k).sum()) for k in range(folds))
            if (len(bags[model]) - 1) * caps[model] >= fewest:
                raise SettingsError(f"--bag-rows: {len(bags[model])} blocks of {caps[model]} rows for {model}, but a "
                                    f"fold has only {fewest} training rows: fewer seeds or a smaller --max-train-rows")
        dirs, seed_dirs = [], {}
        for k, (block, model_seed) in ((k, b) for k in range(folds)
                                       for b in enumerate(bags.get(model, [train_seed]))):
            skip = block * caps[model] if s.bag_rows and model in bags else 0  # a row bag's i-th block
            settings = TrainSettings(epochs=epochs, max_train_rows=caps.get(model), skip_train_rows=skip,
                                     seed=model_seed, swap_augment=swap_augment, evals_per_run=evals_per_run,
                                     residual_on=str(under(out, "models", residual[model])) if model in residual else None)
            # the training seed's own folder on the first rows, so a bag reuses the folds trained before it
            fold_dir = under(out, "models", model, f"fold{k}" if model_seed == train_seed and not skip
                             else f"fold{k}-seed{model_seed}" + (f"-skip{skip}" if skip else ""))
            seed_dirs.setdefault(model_seed, []).append(fold_dir)
            state = _fold_state(fold_dir, settings, recipe, overwrite)  # a killed or extended cv run goes on
            if state == "predicted":
                log.info(f"[kit cv] reusing {fold_dir}")
            else:
                if state == "none":
                    train_stage(preset, k, tokenized=tok_dir, out=fold_dir, settings=settings, overwrite=overwrite)
                # the fold's model was (re)trained just now, or its predictions are missing or stale
                infer_stage(fold_dir, "oof", tta=tta, overwrite=True)
            dirs.append(fold_dir)
        (judged if is_judge else members).append(load_member(model, dirs, need_test=False))
        if model in bags:
            bagged[model] = {sd: load_member(model, d, need_test=False) for sd, d in seed_dirs.items()}
        # training minutes as recorded by each fold (also for folds reused from an earlier call)
        timings[model] = sum(read_json(d / "metrics.json", "rerun the train stage there")["train_seconds"]
                             for d in dirs) / 60
        params[model] = params_of(dirs[0])
    members = sorted(members, key=lambda m: models.index(m.name))  # the blend's order: stronger first
    # --blend-judges: the judges' held-out log-probabilities as features too (each keeps its judge row)
    result = blend_members(members + (judged if s.blend_judges else []), weights, space, s.temperature, s.tie_offset)
    result.table = evaluation_table(result, under(out, "tokenized", preset_of(models[0])))
    apply_guardrails(result, under(out, "tokenized", preset_of(models[0])))  # its own row: "blend + guardrails"
    judges = [held_out_judge(j, result.oof_ids, params[j.name]) for j in judged]
    judges += [external_judge(name, path, result.oof_ids, result.oof_labels, result.oof_folds)
               for name, path in judge_csv.items()]
    table = result.table
    table["params"] = [params.get(name) for name in table.index]
    if judges:
        table = result.table = pd.concat([table, judge_table(judges, result.oof_labels)])
    table["cut"] = [cut.get(name.removeprefix("judge: ")) for name in table.index]
    if bagged:
        seed_rows = _single_seed_rows(members, bagged, result, weights, space, s.temperature, s.tie_offset)
        table = result.table = pd.concat([table, seed_rows])
    differences = blend_comparisons(result, judges, models)
    extra_meta = read_cache(under(out, "tokenized", preset_of(models[0]))).extra_rows
    settings = {"train": [str(p) for p in train], "extra": [str(p) for p in s.extra], "residual": residual,
                "extra_rows": extra_meta.get("kept"),
                "extra_removed": extra_meta.get("removed_exact", 0) + extra_meta.get("removed_near", 0),
                "models": list(models), "folds": folds, "member": member,
                "max_length": max_length, "max_rows": max_rows, "epochs": epochs,
                "max_train_rows": max_train_rows, "tta": tta, "seed": seed, "train_seed": train_seed,
                "bag_seeds": bags or None, "bag_rows": s.bag_rows, "swap_augment": swap_augment,
                "evals_per_run": evals_per_run, "judges": list(s.judges),
                "judge_csv": {name: str(path) for name, path in judge_csv.items()} or None,
                "blend_judges": s.blend_judges,
                # every setting as given: cv_stage(**given) redoes this report (scripts/bag_spread.py)
                "given": json.loads(json.dumps(s.to_dict(), default=str)),
                "blend": {"space": space, "weights_mode": result.weights_mode, "weights": dict(zip(result.members, result.weights)),
                          "temperature": result.temperature, "tie_offset": result.tie_offset,
                          "oof_score": result.report["oof_score"],
                          "per_fold": result.report["per_fold"], "stacker": result.report.get("stacker"),
                          "guardrails": result.report.get("guardrails")},
                "cut_rates": cut, "train_minutes": timings, "wall_minutes_this_call": (time.time() - started) / 60}
    payload = {"rows": len(result.oof_ids), "folds": folds, "settings": settings, "provenance": provenance(started),
               "results": table_scores(table),
               "comparisons": [d.to_dict() for d in differences]}
    md = (f"# kit cv: {', '.join(Path(p).name for p in train)}\n\n"
          f"{payload['rows']} out-of-fold rows, {folds} folds (grouped by prompt, stratified by label); "
          + (f"extra training rows in every fold: {settings['extra_rows']} from "
             f"{', '.join(Path(p).name for p in s.extra)} ({settings['extra_removed']} removed as duplicates of "
             f"train prompts); " if s.extra else "")
          + (f"residual members: {', '.join(f'{m} on {b}' for m, b in residual.items())}; " if residual else "")
          + f"models {', '.join(models)}; member type {member or 'preset'}; max_length {max_length or 'preset'}; "
          f"epochs {epochs or 'preset'}; "
          + (f"folds seeded {seed}, training seeded {train_seed}; " if train_seed != seed else "")
          + (f"seed-bagged (each fold's models averaged): {', '.join(f'{m} over seeds {bags[m]}' for m in bags)}"
             + (f", the i-th seed on the i-th block of the fold's training rows (disjoint rows); " if s.bag_rows
                else "; ") if bags else "")
          + f"training rows per fold {max_train_rows or 'all'}; "
          f"swap augmentation {swap_augment} (joint head only); swap TTA {tta} (joint head only); blend weights "
          f"{describe_weights(result)} in {space} space"
          + (f" (the judges {', '.join(s.judges)} blended as members too)" if s.blend_judges and s.judges else "")
          + (f", temperature {result.temperature:.2f}" if s.temperature else "")
          + (f", tie offset {result.tie_offset:+.2f} (fitted with them)" if s.tie_offset else "")
          + f" (test), the `blend` row {result.report['oof_score']}; "
          f"training minutes summed over folds: {', '.join(f'{m} {t:.1f}' for m, t in timings.items())}.\n\n"
          + comparison_markdown(table) + "\n"
          + ("\n'rows cut': the share of rows of which the packing cut some text (a turn, the prompt or a "
             "response) to fit the member's token budget.\n" if any(v is not None for v in cut.values()) else "")
          + (_seed_spread_line(table, bagged, s.bag_rows) if bagged else "")
          + ("\nA judge known by its verdicts is scored on them (accuracy, macro-F1); its log loss is not "
             "comparable and not shown.\n" if any(j.verdicts is not None for j in judges) else "")
          + (f"\n## Differences on the same rows, with paired bootstrap 95 % intervals\n\nEach row: the first "
             f"method's figure minus the second's, on the {payload['rows']} out-of-fold rows; the interval resamples "
             f"whole prompts ({differences[0].groups} of them, {N_DRAWS} draws). Log loss: negative favours the first; "
             f"accuracy: positive favours the first. 'sign holds': the interval leaves out 0.\n\n"
             + differences_markdown(differences) if differences else ""))
    # derived from the folds above, which were all checked or made by this call
    plot_methods(table, out / "cv.png", title=f"kit cv: {payload['rows']} out-of-fold rows, {folds} folds",
                 overwrite=True)
    md += "\n![out-of-fold log loss and accuracy per method](cv.png)\n"
    write_json(payload, out / "cv.json", overwrite=True)
    write_text(md, out / "cv.md", overwrite=True)
    return {**payload, "markdown": md, "table": table}
