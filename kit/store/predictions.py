"""Prediction files (``<model>/predictions/{test,oof}.csv`` + ``<split>.manifest.json``): their
writer, reader and checks, and one member's predictions gathered over its folds.

A predictions file holds ``id`` and the probabilities ``p_a, p_b, p_tie`` (with swap TTA also
the direct and swapped passes' columns; out-of-fold files also ``label``). Guarantees of the
reader (:func:`read_predictions`): the probabilities are numbers in [0, 1] summing to 1 (±1e-4)
— refused, never repaired; with a model folder, the file is what that model's *current*
training run's infer stage wrote (run id and content fingerprint).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.errors import BlendError, StaleOutput
from ..core.schema import PROB_COLUMNS
from .io import manifest_path, read_csv_keeping_ids, write_csv, write_json
from .manifest import check_output, read_manifest, sha256_of, stage_manifest
from .models import read_model_config



@dataclass
class MemberPredictions:
    """One member's predictions, as the blend reads them: test probabilities averaged over its
    models, out-of-fold probabilities concatenated over its folds (with each row's ``fold``)."""

    name: str
    model_dirs: list[Path]
    test: pd.DataFrame | None = None  # id + PROB_COLUMNS (+ direct/swap columns)
    oof: pd.DataFrame | None = None  # id + PROB_COLUMNS + label (+ direct/swap columns)
    test_sources: frozenset = frozenset()  # fingerprints of the test tables its predictions were made from


def read_predictions(path: Path, what: str, model_dir: Path | None = None) -> pd.DataFrame:
    """A predictions file; with ``model_dir``, only if that model's current training run made it
    and the file is what its infer stage wrote (its manifest's fingerprint). The manifest is kept
    in ``frame.attrs["manifest"]``."""
    rerun = (f"run the infer stage (`python -m kit infer --trained {path.parent.parent} --split {path.stem}"
             f"{' --overwrite' if path.exists() else ''}`)")
    if not path.exists():
        raise BlendError(f"missing {what} predictions {path}: {rerun}")
    manifest = {}
    if model_dir is not None:
        run_id = read_model_config(model_dir).get("run_id")
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


def is_current(path: Path, model_dir: Path, table: Path) -> bool:
    """Whether ``path`` holds predictions that scoring ``table`` with ``model_dir`` now would make:
    written whole by the infer stage (its manifest's fingerprint), by the model's current training
    run, from a table with ``table``'s content. Any doubt is False (then the file is not reused)."""
    path, table = Path(path), Path(table)
    if not path.is_file() or not table.is_file():
        return False
    try:
        frame = read_predictions(path, path.stem, model_dir)
    except (BlendError, StaleOutput):
        return False
    made_from = frame.attrs["manifest"].get("inputs", {}).get("table", {}).get("sha256")
    return made_from == sha256_of(table)


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


def mean_predictions(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The mean of one member's models' predictions (same ids, same order): id, then every column all of them
    have (with TTA on some models only, the direct/swap columns are left out)."""
    test = frames[0][["id"]].copy()
    for c in [c for c in frames[0].columns if c != "id" and all(c in f.columns for f in frames)]:
        test[c] = np.mean([f[c].to_numpy() for f in frames], axis=0)
    return test


def mean_test_predictions(files: Sequence[str | Path], model_dirs: Sequence[Path] | None = None) -> pd.DataFrame:
    """One member's test predictions: the mean over its models' files (same ids, same order);
    with ``model_dirs``, each file must come from its model's current training run."""
    files = [Path(f) for f in files]
    tests = [read_predictions(f, "test", d) for f, d in zip(files, model_dirs or [None] * len(files))]
    for f, t in zip(files[1:], tests[1:]):
        if t["id"].tolist() != tests[0]["id"].tolist():
            raise BlendError(f"{f}: test ids differ from {files[0]}'s")
    test = mean_predictions(tests)
    test.attrs["test_sources"] = {(t.attrs.get("manifest") or {}).get("inputs", {}).get("table", {}).get("test_source")
                                  for t in tests}
    return test


def load_member(name: str, model_dirs: Sequence[str | Path], need_oof: bool = True,
                need_test: bool = True) -> MemberPredictions:
    """Average a member's test predictions over its models; concatenate its OOF folds.

    A fold trained by several models (a seed-bagged member: the same rows, other training seeds)
    contributes the mean of their held-out probabilities, row by row; its models must hold out the
    same ids, and every fold must have as many models as the others (a BlendError otherwise)."""
    dirs = [Path(d) for d in model_dirs]
    test = mean_test_predictions([d / "predictions" / "test.csv" for d in dirs], dirs) if need_test else None
    oof = None
    folds = [read_model_config(d)["fold"] for d in dirs]
    with_oof = [d for d, f in zip(dirs, folds) if f is not None]
    if need_oof and with_oof:
        by_fold: dict[int, list[tuple[Path, pd.DataFrame]]] = {}
        for d, f in zip(dirs, folds):
            if f is not None:
                by_fold.setdefault(f, []).append((d, read_predictions(d / "predictions" / "oof.csv", "out-of-fold", d)))
        counts = {f: len(v) for f, v in sorted(by_fold.items())}
        if len(set(counts.values())) > 1:
            raise BlendError(f"member {name}: its folds have {counts} models (fold: count): train every fold with "
                             f"the same seeds, or leave the extra models out")
        parts = []
        for f, models in by_fold.items():
            (first_dir, first), rest = models[0], models[1:]
            for d, other in rest:
                if sorted(other["id"]) != sorted(first["id"]):
                    raise BlendError(f"member {name}: {d} and {first_dir} both hold out fold {f} but score other "
                                     f"rows: they were trained on other fold assignments; retrain one of them")
            if rest:  # seed bagging: each row's mean over the fold's models (probability space, as the test rows)
                frames = [first.set_index("id")] + [o.set_index("id").loc[first["id"]] for _, o in rest]
                shared = [c for c in frames[0].columns if all(c in fr.columns for fr in frames)
                          and pd.api.types.is_float_dtype(frames[0][c])]
                mean = frames[0].copy()
                mean[shared] = sum(fr[shared].to_numpy() for fr in frames) / len(frames)
                first = mean.reset_index()
            parts.append(first.assign(fold=f))
        oof = pd.concat(parts, ignore_index=True)
        if oof["id"].duplicated().any():
            raise BlendError(f"member {name}: an id is out-of-fold in two folds' models (trained on other fold "
                             f"assignments?)")
    sources = frozenset(test.attrs.get("test_sources", ())) if test is not None else frozenset()
    return MemberPredictions(name, dirs, test, oof, sources)


def flip_rate_of(predictions: pd.DataFrame) -> float | None:
    """Flip rate from a predictions table written with TTA (None without the swap pass)."""
    if "p_a_swap" not in predictions:
        return None
    direct = predictions[[f"{c}_direct" for c in PROB_COLUMNS]].to_numpy()
    swapped = predictions[[f"{c}_swap" for c in PROB_COLUMNS]].to_numpy()
    return float((direct.argmax(1) != swapped.argmax(1)).mean())


def write_predictions(frame: pd.DataFrame, out: Path, overwrite: bool, *, manifest: dict) -> Path:
    """Write a predictions file, then its manifest (``stage_manifest`` keyword arguments in
    ``manifest``, the file fingerprinted as output ``predictions``). Written after the predictions:
    a kill in between leaves an old or no manifest, whose fingerprint does not match."""
    write_csv(frame, out, overwrite)
    write_json(stage_manifest("infer", outputs={"predictions": out}, **manifest), manifest_path(out), True)
    return out


@dataclass
class BaseMargins:
    """A base member's log-probabilities by row, for a residual member (one trained on top of it):
    each training-table row's from the base model that held it out (its out-of-fold predictions),
    each test row's the mean over the base's models. Read from the base's trained folders (every
    fold, each with ``predictions/oof.csv`` — and ``predictions/test.csv`` for test rows)."""

    root: Path
    oof: pd.DataFrame  # index id: log p_a, p_b, p_tie; fold
    test: pd.DataFrame | None  # index id: log p_a, p_b, p_tie
    folds_fingerprint: str | None  # the base's fold assignment (its train manifests'), one for all folds

    @classmethod
    def load(cls, root: str | Path) -> "BaseMargins":
        root = Path(root)
        dirs = sorted({p.parent for p in root.rglob("config.json") if (p.parent / "adapter").is_dir()})
        if not dirs:
            raise BlendError(f"residual base {root}: no trained model folders under it: train the base member first "
                             f"(every fold), with its held-out predictions")
        folds = {read_model_config(d)["fold"] for d in dirs}
        member = load_member(root.name, dirs, need_test=all((d / "predictions" / "test.csv").exists() for d in dirs))
        if member.oof is None or None in folds:
            raise BlendError(f"residual base {root}: its models must be fold models with held-out predictions "
                             f"(predictions/oof.csv); a model trained on every row has none")
        prints = {read_manifest(d / "manifest.json", f"residual base {d}", "retrain the base").get("inputs", {})
                  .get("cache", {}).get("folds") for d in dirs}
        if len(prints) != 1:
            raise BlendError(f"residual base {root}: its folds were trained on different fold assignments")
        logp = lambda frame: np.log(np.clip(frame[PROB_COLUMNS].to_numpy(dtype=np.float64), 1e-15, 1))  # noqa: E731
        oof = pd.DataFrame(logp(member.oof), index=member.oof["id"].to_numpy(), columns=PROB_COLUMNS)
        oof["fold"] = member.oof["fold"].to_numpy()
        test = None
        if member.test is not None:
            test = pd.DataFrame(logp(member.test), index=member.test["id"].to_numpy(), columns=PROB_COLUMNS)
        return cls(root, oof, test, prints.pop())

    def for_rows(self, frame: pd.DataFrame, where: str) -> np.ndarray:
        """(n, 3) base log-probabilities of ``frame``'s rows (a cache table): training-table rows
        (fold >= 0) from the out-of-fold predictions, test rows (fold -1) from the test predictions;
        a row without one is a BlendError naming it (extra rows, fold -2, have none)."""
        out = np.zeros((len(frame), 3))
        folds = frame["fold"].to_numpy() if "fold" in frame else np.full(len(frame), -1)
        for is_test, table in ((False, self.oof), (True, self.test)):
            rows = np.flatnonzero((folds == -1) == is_test)
            if not len(rows):
                continue
            ids = frame["id"].to_numpy()[rows]
            if table is None:
                raise BlendError(f"residual base {self.root}: no test predictions for the {len(rows)} test row(s) of "
                                 f"{where}: run the base's infer stage on the test split")
            where_ids = table.index.get_indexer(ids)
            if (where_ids < 0).any():
                missing = ids[where_ids < 0]
                raise BlendError(f"residual base {self.root}: no {'test' if is_test else 'held-out'} prediction for "
                                 f"{len(missing)} row(s) of {where} (e.g. ids {list(missing[:5])}; extra rows are never "
                                 f"held out): train the base on the same rows and folds")
            out[rows] = table[PROB_COLUMNS].to_numpy()[where_ids]
        return out
