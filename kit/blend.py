"""Stage 4 — blend: the LoRA-LiteE ensemble of member probabilities -> submission.csv.

A *member* is one backbone (preset); its test probabilities are the mean over its
trained (model, fold) outputs, and its out-of-fold (OOF) probabilities the concatenation
of every fold's held-out predictions. The blend is a weighted mean of the members:

* weights: fixed (default for two members: the paper's 0.7 / 0.3, first member first;
  equal otherwise) or fitted on OOF log loss (scipy SLSQP; non-negative, summing to 1);
* space: ``"prob"`` (arithmetic mean of probabilities) or ``"log"`` (geometric: mean of
  log-probabilities, renormalised);
* optional temperature scaling fitted on the blended OOF predictions.

**Honest figures.** Whatever is fitted (weights, temperature) is *cross-fitted* for the
out-of-fold score: for each fold, it is fitted on the other folds' OOF rows and applied to
that fold's rows, so the ``blend`` row is never scored on the rows it was fitted on. The
test predictions use the values fitted on every OOF row. The in-sample figure is reported
beside it (``blend (in-sample fit)``) to show how much in-sample fitting flatters.

Every choice and fitted value (all-rows and per fold) is returned in :class:`BlendResult`
and the report.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .evaluation import log_loss, metrics, plot_confusion, plot_reliability, prior_probs, tfidf_probs, uniform_probs
from .inference import PROB_COLUMNS, flip_rate_of, trained_outputs
from .io import (check_free, read_csv_keeping_ids, read_parquet_keeping_ids, recover_staged, staged_folder, write_csv,
                 write_json, write_text)
from .stacking import MirrorStacker

PAPER_WEIGHTS = (0.7, 0.3)
MEMBER_ORDER = ("gemma2-9b", "llama3-8b", "smollm2", "minilm", "lexical")  # stronger first: gets the 0.7


class BlendError(ValueError):
    pass


def combine(probs: Sequence[np.ndarray], weights: Sequence[float], space: str = "prob",
            temperature: float = 1.0) -> np.ndarray:
    """Weighted blend of (n, 3) probability arrays, then temperature; rows sum to 1."""
    w = np.asarray(weights, dtype=np.float64)
    if space == "prob":
        logp = np.log(np.clip(sum(wi * p for wi, p in zip(w, probs)), 1e-15, 1))
    elif space == "log":
        logp = sum(wi * np.log(np.clip(p, 1e-15, 1)) for wi, p in zip(w, probs))
    else:
        raise BlendError(f"space must be 'prob' or 'log', got {space!r}")
    z = logp / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_weights(probs: Sequence[np.ndarray], labels: np.ndarray, space: str = "prob") -> np.ndarray:
    """Non-negative weights summing to 1 that minimise OOF log loss (SLSQP, several starts)."""
    from scipy.optimize import minimize

    m = len(probs)
    if m == 1:
        return np.ones(1)
    best = None
    starts = [np.full(m, 1 / m)] + [np.eye(m)[i] * 0.8 + 0.2 / m for i in range(m)]
    for x0 in starts:
        res = minimize(lambda w: log_loss(labels, combine(probs, w, space)), x0, method="SLSQP",
                       bounds=[(0.0, 1.0)] * m, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
        if best is None or res.fun < best.fun:
            best = res
    w = np.clip(best.x, 0, None)
    return w / w.sum()


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(probs, 1e-15, 1))
    res = minimize_scalar(lambda t: log_loss(labels, combine([np.exp(logp)], [1.0], "log", t)),
                          bounds=(0.05, 20.0), method="bounded")
    return float(res.x)


@dataclass
class Member:
    name: str
    model_dirs: list[Path]
    test: pd.DataFrame | None = None  # id + PROB_COLUMNS (+ direct/swap columns)
    oof: pd.DataFrame | None = None  # id + PROB_COLUMNS + label (+ direct/swap columns)
    test_sources: frozenset = frozenset()  # fingerprints of the test tables its predictions were made from


def _read_predictions(path: Path, what: str, model_dir: Path | None = None) -> pd.DataFrame:
    """A predictions file; with ``model_dir``, only if that model's current training run made it
    and the file is what its infer stage wrote (its manifest's fingerprint). The manifest is kept
    in ``frame.attrs["manifest"]``."""
    from .io import manifest_path
    from .manifest import StaleOutput, check_output, read_manifest

    rerun = (f"run the infer stage (`python -m kit infer --model-dir {path.parent.parent} --split {path.stem}"
             f"{' --overwrite' if path.exists() else ''}`)")
    if not path.exists():
        raise BlendError(f"missing {what} predictions {path}: {rerun}")
    manifest = {}
    if model_dir is not None:
        run_id = json.loads((model_dir / "config.json").read_text()).get("run_id")
        try:
            manifest = read_manifest(manifest_path(path), f"{what} predictions {path}", rerun)
            check_output(manifest, "predictions", path, f"{what} predictions", rerun)
        except StaleOutput as e:
            raise BlendError(f"stale {e}") from None
        if manifest.get("run_id") != run_id:
            raise BlendError(f"stale {what} predictions {path}: an earlier training run of that folder made them; "
                             f"{rerun}")
    frame = check_predictions(read_csv_keeping_ids(path), path, rerun)
    frame.attrs["manifest"] = manifest
    return frame


def check_predictions(frame: pd.DataFrame, path, rerun: str = "rerun the infer stage") -> pd.DataFrame:
    """``frame`` if it holds valid probabilities: columns p_a, p_b, p_tie present and numeric,
    every value finite and in [0, 1], every row summing to 1 within 1e-4; else a BlendError
    naming the file, the first bad row (counted from 0) and its id. Nothing is clipped or
    renormalised silently."""
    missing = [c for c in ["id", *PROB_COLUMNS] if c not in frame.columns]
    if missing:
        raise BlendError(f"{path}: missing column(s) {missing} (found {list(frame.columns)}); {rerun}")
    values = frame[PROB_COLUMNS].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    problems = (("not a number", np.isnan(values).any(axis=1)),
                ("infinite", np.isinf(values).any(axis=1)),
                ("outside [0, 1]", ((values < 0) | (values > 1)).any(axis=1)),
                ("not summing to 1 (±1e-4)", np.abs(values.sum(axis=1) - 1) > 1e-4))
    for problem, bad in problems:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise BlendError(f"{path}: {int(bad.sum())} row(s) with probabilities {problem}, first row {row} "
                             f"(id {frame['id'].iloc[row]}): {frame[PROB_COLUMNS].iloc[row].tolist()}; {rerun}")
    return frame


def mean_test_predictions(files: Sequence[str | Path], model_dirs: Sequence[Path] | None = None) -> pd.DataFrame:
    """One member's test predictions: the mean over its models' files (same ids, same order);
    with ``model_dirs``, each file must come from its model's current training run."""
    files = [Path(f) for f in files]
    tests = [_read_predictions(f, "test", d) for f, d in zip(files, model_dirs or [None] * len(files))]
    for f, t in zip(files[1:], tests[1:]):
        if t["id"].tolist() != tests[0]["id"].tolist():
            raise BlendError(f"{f}: test ids differ from {files[0]}'s")
    test = tests[0][["id"]].copy()
    # columns every file has: with TTA on some folds only, the direct/swap columns are left out
    for c in [c for c in tests[0].columns if c != "id" and all(c in t.columns for t in tests)]:
        test[c] = np.mean([t[c].to_numpy() for t in tests], axis=0)
    test.attrs["test_sources"] = {(t.attrs.get("manifest") or {}).get("inputs", {}).get("table", {}).get("test_source")
                                  for t in tests}
    return test


def load_member(name: str, model_dirs: Sequence[str | Path], need_oof: bool = True,
                need_test: bool = True) -> Member:
    """Average a member's test predictions over its models; concatenate its OOF folds."""
    dirs = [Path(d) for d in model_dirs]
    test = mean_test_predictions([d / "predictions" / "test.csv" for d in dirs], dirs) if need_test else None
    oof = None
    folds = [json.loads((d / "config.json").read_text())["fold"] for d in dirs]
    with_oof = [d for d, f in zip(dirs, folds) if f is not None]
    if need_oof and with_oof:
        parts = [_read_predictions(d / "predictions" / "oof.csv", "out-of-fold", d).assign(fold=f)
                 for d, f in zip(dirs, folds) if f is not None]
        oof = pd.concat(parts, ignore_index=True)
        if oof["id"].duplicated().any():
            raise BlendError(f"member {name}: an id is out-of-fold in two models (same fold trained twice?)")
    sources = frozenset(test.attrs.get("test_sources", ())) if test is not None else frozenset()
    return Member(name, dirs, test, oof, sources)


def discover_members(root: str | Path | None = None, models: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Trained outputs under <work>/models grouped by preset, stronger presets first."""
    groups: dict[str, list[Path]] = {}
    for d in trained_outputs(root, models):
        groups.setdefault(d.parent.name, []).append(d)
    order = {n: i for i, n in enumerate(MEMBER_ORDER)}
    return dict(sorted(groups.items(), key=lambda kv: order.get(kv[0], len(order))))


@dataclass
class _Fit:
    """A blend as chosen or fitted: weights (a weighted mean) or a stacker, then a temperature."""
    weights: np.ndarray | None
    mode: str
    temperature: float
    stacker: MirrorStacker | None = None

    def apply(self, probs: Sequence[np.ndarray], space: str) -> np.ndarray:
        if self.stacker is not None:
            return combine([self.stacker.predict(probs)], [1.0], "log", self.temperature)
        return combine(probs, self.weights, space, self.temperature)

    def weight_list(self) -> list[float]:
        """The weights (empty for a stacker: its coefficients are in the report's ``stacker``)."""
        return [] if self.weights is None else [float(x) for x in self.weights]


@dataclass
class BlendResult:
    members: list[str]
    weights: list[float]
    weights_mode: str
    space: str
    temperature: float
    test: pd.DataFrame | None  # id + PROB_COLUMNS (None when no member has test predictions)
    oof_rows: int = 0
    table: pd.DataFrame | None = None  # OOF comparison table
    report: dict = field(default_factory=dict)
    oof_ids: list = field(default_factory=list)  # the OOF rows every member covers
    oof_labels: np.ndarray | None = None
    oof_blend: np.ndarray | None = None
    oof_folds: np.ndarray | None = None


def blend_members(members: Sequence[Member], weights: str | Sequence[float] = "paper", space: str = "prob",
                  temperature: bool = False) -> BlendResult:
    """Blend members; fit weights / temperature on the OOF rows every member covers."""
    names = [m.name for m in members]
    if not members:
        raise BlendError("no members to blend: train and infer at least one model")
    common = None
    if all(m.oof is not None for m in members):
        shared = set.intersection(*(set(m.oof["id"]) for m in members))
        common = [i for i in members[0].oof["id"] if i in shared]  # first member's order
    needs_oof = weights in ("fit", "stack") or temperature
    if needs_oof and not common:
        raise BlendError("fitted weights / temperature need out-of-fold predictions shared by every member")
    oof = [m.oof.set_index("id").loc[common] for m in members] if common else None
    oof_p = [o[PROB_COLUMNS].to_numpy() for o in oof] if oof else None
    labels = oof[0]["label"].to_numpy().astype(int) if oof else None

    def choose(p, y) -> _Fit:
        """What the settings ask for, fitted on rows (p, y) where they ask for fitting."""
        if isinstance(weights, str):
            if weights == "stack":
                stacker = MirrorStacker().fit(p, y)
                t = fit_temperature(stacker.predict(p), y) if temperature else 1.0
                return _Fit(None, "stack", t, stacker)
            if weights == "paper":
                w = np.array(PAPER_WEIGHTS) if len(members) == 2 else np.full(len(members), 1 / len(members))
            elif weights == "equal":
                w = np.full(len(members), 1 / len(members))
            elif weights == "fit":
                w = fit_weights(p, y, space)
            else:
                raise BlendError(f"weights must be 'paper', 'equal', 'fit', 'stack' or numbers, got {weights!r}")
            mode = weights
        else:
            w = np.asarray(weights, dtype=np.float64)
            if len(w) != len(members) or (w < 0).any() or w.sum() <= 0:
                raise BlendError(f"{len(members)} member(s) need as many non-negative weights, got {list(weights)}")
            w, mode = w / w.sum(), "fixed"
        t = fit_temperature(combine(p, w, space), y) if temperature else 1.0
        return _Fit(w, mode, t)

    chosen = choose(oof_p, labels) if oof_p is not None else choose(None, None)
    fold_fits = {}
    if oof:
        oof_folds = oof[0]["fold"].to_numpy() if "fold" in oof[0] else np.zeros(len(labels), dtype=int)
        cross = chosen.apply(oof_p, space) if not needs_oof else np.zeros((len(labels), 3))
        if needs_oof:
            if len(np.unique(oof_folds)) < 2:
                raise BlendError("fitted weights / temperature need out-of-fold rows from at least two folds "
                                 "(they are cross-fitted: fitted on the other folds, scored on each)")
            for k in np.unique(oof_folds):
                rest, here = oof_folds != k, oof_folds == k
                fold_fit = choose([p[rest] for p in oof_p], labels[rest])
                cross[here] = fold_fit.apply([p[here] for p in oof_p], space)
                fold_fits[int(k)] = {"weights": fold_fit.weight_list(), "temperature": float(fold_fit.temperature)}

    test = None
    if all(m.test is not None for m in members):
        test = _blend_test(members, chosen, space)
    mode, t = chosen.mode, chosen.temperature
    result = BlendResult(names, chosen.weight_list(), mode, space, t, test, len(common or []))
    result.report = {"members": names, "weights": result.weights, "weights_mode": mode, "space": space,
                     "temperature": t, "temperature_fitted": bool(temperature), "oof_rows": result.oof_rows,
                     "oof_score": "cross-fitted per fold" if fold_fits else "nothing fitted",
                     "per_fold": fold_fits}
    if chosen.stacker is not None:
        result.report["stacker"] = chosen.stacker.describe(names)
    if oof:
        rows = {}
        for m, o in zip(members, oof):
            # the direct-pass row only where every fold was scored with swap TTA (a mix of TTA and
            # no-TTA folds has no direct pass for some rows; the blended columns are complete either way)
            if "p_a_direct" in o and o[[f"{c}_direct" for c in PROB_COLUMNS]].notna().all().all():
                rows[m.name] = metrics(labels, o[[f"{c}_direct" for c in PROB_COLUMNS]].to_numpy())
                rows[f"{m.name}+tta"] = metrics(labels, o[PROB_COLUMNS].to_numpy())
                rows[f"{m.name}+tta"]["flip_rate"] = flip_rate_of(o)
            else:
                rows[m.name] = metrics(labels, o[PROB_COLUMNS].to_numpy())
        result.oof_ids, result.oof_labels, result.oof_blend, result.oof_folds = common, labels, cross, oof_folds
        rows["blend"] = metrics(labels, result.oof_blend)
        if fold_fits:  # what scoring the fit on its own rows would claim
            rows["blend (in-sample fit)"] = metrics(labels, chosen.apply(oof_p, space))
        result.table = pd.DataFrame(rows).T
    return result


def apply_saved_blend(members: Sequence[Member], saved: dict) -> pd.DataFrame:
    """Test probabilities (id + PROB_COLUMNS) blended as a report's ``blend.json`` says: its
    members (every one needed, in its order), weights or stacker, space and temperature."""
    names = [m.name for m in members]
    if sorted(names) != sorted(saved["members"]):
        raise BlendError(f"the saved blend is for members {saved['members']}, but the models found are {names}: "
                         f"attach the same members, or pass weights='paper' / 'equal' / [w1, ...]")
    by_name = {m.name: m for m in members}
    ordered = [by_name[n] for n in saved["members"]]
    stacker = MirrorStacker.from_description(saved["stacker"]) if saved.get("weights_mode") == "stack" else None
    fitted = _Fit(None if stacker else np.asarray(saved["weights"], dtype=np.float64), saved["weights_mode"],
                  float(saved.get("temperature", 1.0)), stacker)
    return _blend_test(ordered, fitted, saved.get("space", "prob"))


def _blend_test(members: Sequence[Member], fit: _Fit, space: str) -> pd.DataFrame:
    """id + PROB_COLUMNS: the members' test predictions (same ids, same order) blended by ``fit``."""
    test_ids = members[0].test["id"].tolist()
    for m in members[1:]:
        if m.test["id"].tolist() != test_ids:
            raise BlendError(f"member {m.name}'s test ids differ from {members[0].name}'s")
    probs = fit.apply([m.test[PROB_COLUMNS].to_numpy() for m in members], space)
    return pd.DataFrame({"id": test_ids, **{c: probs[:, j] for j, c in enumerate(PROB_COLUMNS)}})


def _texts(tokenized: Path, ids: Sequence, split: str) -> pd.DataFrame | None:
    """The parsed rows (response turn lists) of ``ids`` from the sources the cache was made from;
    None (said on the console) where those files are gone."""
    from .tokenization import load_tables

    meta = json.loads((Path(tokenized) / "meta.json").read_text())
    sources = ([*meta["train_sources"], *meta.get("extra_sources", [])] if split == "train"
               else [meta.get("test_source")])
    missing = [p for p in sources if not p or not Path(p).is_file()]
    if missing or not sources:
        print(f"[kit blend] no guardrails: the {split} source(s) {missing} of {tokenized} are not here", flush=True)
        return None
    frame = load_tables([Path(p) for p in sources], labelled=split == "train").frame.set_index("id")
    return frame.loc[list(ids)].reset_index()


def apply_guardrails(result: BlendResult, tokenized: str | Path) -> None:
    """Fit the guardrails (:mod:`kit.guardrails`) on the blend's out-of-fold rows; add the
    ``blend + guardrails`` row to the table, apply the kept rules to the test predictions, and
    record everything in ``result.report["guardrails"]`` (saved in blend.json for ``kit submit``)."""
    from .guardrails import fit_guardrails

    if result.oof_blend is None or result.table is None:
        return
    texts = _texts(Path(tokenized), result.oof_ids, "train")
    if texts is None:
        return
    rails, adjusted = fit_guardrails(texts, result.oof_labels, result.oof_folds, result.oof_blend)
    result.table.loc["blend + guardrails"] = pd.Series(metrics(result.oof_labels, adjusted))
    report = {"kept": rails.kept, "counts": rails.counts, "rules": rails.report}
    if result.test is not None and rails.kept:
        test_texts = _texts(Path(tokenized), result.test["id"].tolist(), "test")
        if test_texts is not None:
            probs, touched = rails.apply(result.test[PROB_COLUMNS].to_numpy(), test_texts)
            result.test = result.test.assign(**{c: probs[:, j] for j, c in enumerate(PROB_COLUMNS)})
            report["test_rows_touched"] = touched
    result.report["guardrails"] = report


def apply_saved_guardrails(blended: pd.DataFrame, saved: dict, tokenized: str | Path) -> tuple[pd.DataFrame, dict]:
    """``blended`` test predictions with the guardrails a report's ``blend.json`` kept applied
    (their counts as fitted then); rows touched per rule."""
    from .guardrails import Guardrails

    rails = saved.get("guardrails") or {}
    if not rails.get("kept"):
        return blended, {}
    texts = _texts(Path(tokenized), blended["id"].tolist(), "test")
    if texts is None:
        return blended, {}
    probs, touched = Guardrails(rails["counts"], rails["kept"]).apply(blended[PROB_COLUMNS].to_numpy(), texts)
    return blended.assign(**{c: probs[:, j] for j, c in enumerate(PROB_COLUMNS)}), touched


def evaluation_table(result: BlendResult, tokenized_train: str | Path) -> pd.DataFrame:
    """The OOF comparison: uniform, class prior and TF-IDF baselines (cross-fitted on the same
    folds), each member without and with TTA, and the blend — all on the same rows."""
    from .tokenization import check_cache, load_tables

    tokenized_train = Path(tokenized_train)
    check_cache(tokenized_train, "train")
    meta = json.loads((tokenized_train / "meta.json").read_text())
    packed = read_parquet_keeping_ids(tokenized_train / "train.parquet", columns=["id", "label", "fold"])
    sources = [Path(p) for p in [*meta["train_sources"], *meta.get("extra_sources", [])]]
    text = load_tables(sources, labelled=True).frame.set_index("id")
    text = text.loc[packed["id"]].reset_index()
    # baselines fit on every training row outside a fold, predict that fold's rows
    all_labels, all_folds = packed["label"].to_numpy(), packed["fold"].to_numpy()
    where = pd.Index(packed["id"]).get_indexer(result.oof_ids)
    if (where < 0).any():
        lost = [i for i, w in zip(result.oof_ids, where) if w < 0]
        raise BlendError(f"{len(lost)} out-of-fold id(s) of the predictions are not in {tokenized_train / 'train.parquet'} "
                         f"(e.g. {lost[:5]}): the cache was re-tokenized after the models were trained; rerun the "
                         f"train and infer stages on it")
    needed = set(all_folds[where])
    labels = result.oof_labels
    base = {"uniform": metrics(labels, uniform_probs(len(labels))),
            "prior": metrics(labels, prior_probs(all_labels, all_folds)[where]),
            "tfidf": metrics(labels, tfidf_probs(text, all_labels, all_folds, only_folds=needed)[where])}
    return pd.concat([pd.DataFrame(base).T, result.table])


REPORT_FILES = ("report.md", "evaluation.csv", "blend.json", "methods.png", "reliability.png", "confusion.png",
                "manifest.json")


def blend_stage(members: dict[str, Sequence[str | Path]] | None = None, *, weights="paper", space: str = "prob",
                temperature: bool = False, out: str | Path | None = None, report_dir: str | Path | None = None,
                sample_submission: str | Path | None = "auto", baselines: bool = True,
                guardrails: bool = True, overwrite: bool = False) -> BlendResult:
    """Stage 4: blend the members, write and validate submission.csv and the report.
    ``guardrails``: fit the rules of :mod:`kit.guardrails` out of fold; the kept ones change the
    test rows they match (the report's ``blend + guardrails`` row scores them).

    ``members=None`` takes every trained output under <work>/models, grouped by preset.
    ``out`` defaults to <work>/submission.csv; the report (report.md, evaluation.csv,
    blend.json, methods.png, reliability.png, confusion.png) to <work>/report.
    """
    from .env import work_dir

    groups = members if members is not None else discover_members()
    if not groups:
        raise BlendError(f"no trained models found under {work_dir() / 'models'}")
    if sample_submission not in (None, "auto") and not Path(sample_submission).is_file():
        raise BlendError(f"no sample submission at {sample_submission}: pass an existing file, or 'none' to skip "
                         f"the check (--sample-submission)")
    loaded = [load_member(name, dirs) for name, dirs in groups.items()]
    result = blend_members(loaded, weights, space, temperature)

    out = Path(out) if out else work_dir() / "submission.csv"
    report_dir = Path(report_dir) if report_dir else work_dir() / "report"
    if result.table is not None:  # both refused before either is written
        recover_staged(report_dir, REPORT_FILES)
        check_free([out, *(report_dir / n for n in REPORT_FILES)], overwrite)
    tokenized = Path(json.loads((loaded[0].model_dirs[0] / "config.json").read_text())["tokenized"])
    _check_same_test_table(loaded, tokenized)
    if result.table is not None:
        if baselines and not (tokenized / "train.parquet").exists():
            # e.g. Kaggle: the models' cache holds the test table only; the members' OOF rows are
            # still reported, the baselines need the training rows
            print(f"[kit blend] no baselines: {tokenized} holds no train.parquet", flush=True)
        elif baselines:
            result.table = evaluation_table(result, tokenized)
        if guardrails:
            apply_guardrails(result, tokenized)  # may change test rows: before the submission is made
    # validated before anything is written; written last, once the report is in place: a failure
    # anywhere before leaves the previous submission (and report) as they were
    submission = prepare_blended_submission(result.test, tokenized, sample_submission)
    result.report["submission"] = str(out)

    if result.table is not None:
        result.report["report_dir"] = str(report_dir)
        from .manifest import stage_manifest
        from .plots import plot_methods
        # stage-atomic: the whole report is staged and swapped in with one rename; its manifest
        # fingerprints the submission it goes with (a kill between the two leaves them unmatched)
        with staged_folder(report_dir, REPORT_FILES) as stage:
            plot_reliability(result.oof_labels, result.oof_blend, stage / "reliability.png", "blend, out-of-fold")
            plot_confusion(result.oof_labels, result.oof_blend, stage / "confusion.png", "blend, out-of-fold")
            plot_methods(result.table, stage / "methods.png", f"{result.oof_rows} out-of-fold rows")
            write_csv(result.table.reset_index(names="method"), stage / "evaluation.csv")
            write_json(result.report, stage / "blend.json")
            write_text(render_report(result), stage / "report.md")
            write_csv(submission.frame, stage / ".submission.csv", float_format="%.10g")  # its exact bytes
            write_json(stage_manifest(
                "blend", settings={"weights": result.weights_mode, "space": space},
                inputs={m.name: [str(d) for d in m.model_dirs] for m in loaded},
                outputs={n: stage / n for n in REPORT_FILES if (stage / n).exists()}
                | {"submission.csv": stage / ".submission.csv"}), stage / "manifest.json")
            (stage / ".submission.csv").unlink()
    submission.write(out, overwrite)
    return result


def _check_same_test_table(members: Sequence[Member], tokenized: Path) -> None:
    """Every member's test predictions must come from the same source test table (by content)
    as the cache whose ids the submission takes — else one member predicted another test set."""
    from .tokenization import check_cache

    source = check_cache(tokenized, "test").get("inputs", {}).get("test", {}).get("sha256")
    for m in members:
        other = sorted(s for s in m.test_sources if s != source)
        if other:
            raise BlendError(f"member {m.name}: its test predictions were made from another test table "
                             f"(fingerprint {str(other[0])[:12]}) than {tokenized}'s ({str(source)[:12]}): re-tokenize "
                             f"that member's test table from the same file and rerun its infer stage")


@dataclass
class PreparedSubmission:
    """A validated submission frame, ready to be written."""

    frame: pd.DataFrame
    test_ids: list
    sample_submission: str | Path | None

    def write(self, out, overwrite: bool = False) -> Path:
        from .submission import write_submission

        return write_submission(self.frame, out, self.test_ids, self.sample_submission, overwrite)


def prepare_blended_submission(blended: pd.DataFrame, tokenized: str | Path,
                               sample_submission: str | Path | None = "auto") -> PreparedSubmission:
    """Validate the submission made from blended test predictions (id + PROB_COLUMNS), which
    must cover ``tokenized``'s test table in order. ``sample_submission="auto"``: the
    environment's sample, when the cache's test table is the environment's own test table."""
    from .env import default_inputs
    from .submission import make_submission, validate_submission
    from .tokenization import check_cache

    tokenized = Path(tokenized)
    check_cache(tokenized, "test")
    if sample_submission == "auto":  # the sample only describes the environment's own test table
        test_source = json.loads((tokenized / "meta.json").read_text()).get("test_source") or "-"
        defaults = default_inputs()
        same = Path(test_source).resolve() == Path(defaults["test"]).resolve()
        sample_submission = defaults["sample_submission"] if same else None
    test_ids = read_parquet_keeping_ids(tokenized / "test.parquet", columns=["id"])["id"].tolist()
    if test_ids != blended["id"].tolist():
        raise BlendError(f"predictions do not cover the test table {tokenized / 'test.parquet'} in order")
    sub = make_submission(test_ids, blended[PROB_COLUMNS].to_numpy())
    validate_submission(sub, test_ids, sample_submission)
    return PreparedSubmission(sub, test_ids, sample_submission)


def write_blended_submission(blended: pd.DataFrame, tokenized: str | Path, out: str | Path,
                             sample_submission: str | Path | None = "auto", overwrite: bool = False) -> Path:
    """Validate and write submission.csv (:func:`prepare_blended_submission`)."""
    return prepare_blended_submission(blended, tokenized, sample_submission).write(out, overwrite)


def describe_weights(result: BlendResult) -> str:
    """One line: the mode and each member's weight (a stacker's coefficients live in the report)."""
    if result.weights_mode == "stack":
        return ("stack (logistic regression on the members' log-probabilities, mirror-symmetric; "
                "coefficients under `stacker` in the JSON report)")
    return f"{result.weights_mode} " + ", ".join(f"{n} {w:.3f}" for n, w in zip(result.members, result.weights))


def render_report(result: BlendResult) -> str:
    lines = [f"# LoRA-LiteE blend report ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"- members: {', '.join(result.members)}",
             f"- weights: {describe_weights(result)}",
             f"- blending space: {result.space}; temperature: {result.temperature:.3f}"
             f"{' (fitted)' if result.report.get('temperature_fitted') else ''}",
             f"- out-of-fold `blend` score: {result.report.get('oof_score', '-')}"
             + "".join(f"; fold {k}: weights [{', '.join(f'{x:.3f}' for x in v['weights'])}], "
                       f"temperature {v['temperature']:.3f}" for k, v in result.report.get("per_fold", {}).items()),
             f"- out-of-fold rows: {result.oof_rows}; submission: {result.report.get('submission', '-')}", "",
             "## Out-of-fold evaluation", "", result.table.to_markdown(floatfmt=".4f"), "",
             "![log loss per method](methods.png)", "",
             "![reliability](reliability.png)", "", "![confusion](confusion.png)", ""]
    return "\n".join(lines)
