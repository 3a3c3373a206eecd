"""Judges beside the members: the paper's comparison of a fine-tuned small ensemble with larger
un-finetuned models used as zero-shot judges.

Two kinds of judge rows join the out-of-fold table, scored on exactly the blend's rows and never
blended:

* **zero-shot judges** (the ``zeroshot`` member type, e.g. the ``smollm2-zeroshot`` preset): their
  held-out predictions, as any member's;
* **external judges**: a CSV of verdicts produced elsewhere (GPT-4, a 70B model, a human panel),
  by id — either probabilities (``p_a, p_b, p_tie``, validated like member predictions), or one
  ``verdict`` per row (``A`` / ``B`` / ``tie``), turned into probabilities by the judge's confusion
  matrix cross-fitted on the other folds (Laplace-smoothed: a verdict is worth what it was worth on
  rows the mapping did not see).

Every blend row must have a verdict (a missing id is an error naming it); ids the blend does not
score are counted in the log, not silently used. Where judges judged only some of the blend's rows
(the main job trains on Kaggle rows and PandaLM rows; the judges' files cover PandaLM's),
:func:`external_comparison` compares them on those rows alone, said as such.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import BlendError
from ..core.log import get_logger
from ..core.metrics import metrics
from ..core.schema import PROB_COLUMNS
from .intervals import MethodScores, paired_difference
from ..members import get_member_type
from ..store.io import read_csv_keeping_ids
from ..store.models import read_trained
from ..store.predictions import MemberPredictions, check_predictions
from ..core.files import read_json

log = get_logger(__name__)
SMALL_CSV_BYTES = 512 * 1024 ** 2  # a judge's verdicts or probabilities for the competition's rows: a few MB
VERDICT_CLASSES = {"a": 0, "model_a": 0, "b": 1, "model_b": 1, "tie": 2}


@dataclass
class JudgeRow:
    """One judge's out-of-fold probabilities on the blend's rows, and what it is."""

    name: str
    probs: np.ndarray  # (n, 3), in the blend's out-of-fold row order
    params: int | None  # parameter count, when known
    kind: str  # "zero-shot" | "external (probabilities)" | "external (verdicts)"
    verdicts: np.ndarray | None = None  # an external judge's own verdict per row (0 A, 1 B, 2 tie), if so given


def split_judges(groups: dict[str, list[Path]]) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(members, judges) of trained outputs grouped by preset: a judge's member type trains nothing
    (``is_judge``); it is compared with the members, never blended or scored for a submission."""
    members, judges = {}, {}
    for name, dirs in groups.items():
        member = read_trained(dirs[0]).member
        (judges if get_member_type(member).is_judge else members)[name] = dirs
    return members, judges


def params_of(model_dir: Path) -> int | None:
    """The parameter count a model's train stage recorded (``total_params``), if any."""
    path = Path(model_dir) / "metrics.json"
    if not path.is_file():
        return None
    metrics = read_json(path, "rerun the train stage there")
    return metrics.get("total_params") if isinstance(metrics, dict) else None


def held_out_judge(predictions: MemberPredictions, oof_ids, params: int | None) -> JudgeRow:
    """A zero-shot judge's held-out predictions (its infer stage's, as a member's) on ``oof_ids``."""
    oof = predictions.oof.set_index("id")
    missing = [i for i in oof_ids if i not in oof.index]
    if missing:
        raise BlendError(f"judge {predictions.name}: no held-out prediction for {len(missing)} scored row(s), e.g. "
                         f"{missing[:5]}: score it on the members' folds")
    return JudgeRow(predictions.name, oof.loc[list(oof_ids), PROB_COLUMNS].to_numpy(dtype=float), params, "zero-shot")


def read_judge_csv(name: str, path: str | Path) -> pd.DataFrame:
    """An external judge's file, checked whole before it is used: a readable, non-empty UTF-8 CSV with an
    id column, each id once, and p_a, p_b, p_tie or a verdict column (A / B / tie) whose every value is
    one. ``kit cv`` calls it before any training, so a wrong file fails in seconds; every failure is one
    BlendError naming the judge, the file and what to fix."""
    path = Path(path)
    where = f"judge {name}: {path}"
    if path.is_dir():
        raise BlendError(f"{where} is a folder, not a CSV file (--judge-csv NAME=CSV)")
    if not path.is_file():
        raise BlendError(f"{where} not found (--judge-csv NAME=CSV)")
    if path.stat().st_size == 0:
        raise BlendError(f"{where} is empty: write the judge's verdicts there (an id column and a verdict column)")
    try:
        frame = read_csv_keeping_ids(path, max_bytes=SMALL_CSV_BYTES)
    except UnicodeDecodeError as e:
        raise BlendError(f"{where} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise BlendError(f"{where} is not a readable CSV ({' '.join(str(e).split())[:160]}): fix the file") from None
    if "id" not in frame.columns:
        raise BlendError(f"{where} has no id column (found {list(frame.columns)}): give each verdict the id of its row")
    if not all(c in frame.columns for c in PROB_COLUMNS) and "verdict" not in frame.columns:
        raise BlendError(f"{where} needs columns {PROB_COLUMNS} or a verdict column (A / B / tie); found "
                         f"{list(frame.columns)}")
    dup = frame["id"][frame["id"].duplicated()].tolist()
    if dup:
        raise BlendError(f"{where} repeats id(s) {dup[:5]}: one verdict per row")
    if all(c in frame.columns for c in PROB_COLUMNS):
        check_predictions(frame, path, f"fix the judge's file {path}")
    else:
        verdicts = frame["verdict"].astype(str).str.strip().str.lower().map(VERDICT_CLASSES)
        if verdicts.isna().any():
            row = int(np.flatnonzero(verdicts.isna().to_numpy())[0])
            raise BlendError(f"{where} row {row + 2} (id {frame['id'].iloc[row]}), column verdict: "
                             f"{frame['verdict'].iloc[row]!r} is not A, B or tie")
    return frame


def check_judge_covers(name: str, path: str | Path, ids) -> None:
    """A BlendError unless the judge's file holds a verdict for every one of ``ids`` (the rows that will be
    scored): ``kit cv`` checks it once the table is tokenized, before any fold trains."""
    have = set(read_judge_csv(name, path)["id"])
    missing = [i for i in ids if i not in have]
    if missing:
        raise BlendError(f"judge {name}: {path} has no verdict for {len(missing)} of the {len(ids)} rows to be scored "
                         f"(e.g. ids {missing[:5]}): judge every row, or compare on fewer rows")


def external_judge(name: str, path: str | Path, oof_ids, labels: np.ndarray, folds: np.ndarray,
                   params: int | None = None) -> JudgeRow:
    """A judge read from ``path`` (see the module docstring), aligned to ``oof_ids``."""
    frame = read_judge_csv(name, path)
    path = Path(path)
    index = pd.Index(frame["id"])
    where = index.get_indexer(list(oof_ids))
    if (where < 0).any():
        missing = [i for i, w in zip(oof_ids, where) if w < 0]
        raise BlendError(f"judge {name}: {path} has no verdict for {len(missing)} of the {len(oof_ids)} scored rows "
                         f"(e.g. ids {missing[:5]}): judge every row, or compare on fewer rows")
    unused = len(frame) - len(set(where))
    if unused:
        log.info(f"[kit] judge {name}: {unused} row(s) of {path} are not among the scored rows: not used")
    rows = frame.iloc[where].reset_index(drop=True)
    if all(c in rows.columns for c in PROB_COLUMNS):
        check_predictions(rows, path, f"fix the judge's file {path}")
        return JudgeRow(name, rows[PROB_COLUMNS].to_numpy(dtype=np.float64), params, "external (probabilities)")
    verdicts = rows["verdict"].astype(str).str.strip().str.lower().map(VERDICT_CLASSES)
    if verdicts.isna().any():
        row = int(np.flatnonzero(verdicts.isna().to_numpy())[0])
        raise BlendError(f"judge {name}: {path} row with id {rows['id'].iloc[row]}: verdict "
                         f"{rows['verdict'].iloc[row]!r} is not A, B or tie")
    said = verdicts.to_numpy(dtype=np.int64)
    return JudgeRow(name, confusion_probs(said, labels, folds), params, "external (verdicts)", said)


@dataclass
class JudgedRows:
    """The blend, its members and the external judges on the out-of-fold rows every judge judged:
    their figures (``table``) and the blend minus each judge with its paired bootstrap interval."""

    rows: int  # the rows compared
    of_rows: int  # the blend's out-of-fold rows
    table: pd.DataFrame
    differences: list


def external_comparison(result, judge_csv: dict[str, str | Path]) -> JudgedRows:
    """External judges (``{name: csv}``) against the blend of ``result`` (a
    :class:`kit.ensemble.combine.BlendResult` with out-of-fold rows and their prompts) on the rows
    every judge has a verdict for; a BlendError when no row has. Each member's row is its final
    probabilities (after swap TTA where it ran)."""
    ids = list(result.oof_ids)
    covered = set(ids)
    for name, path in judge_csv.items():
        covered &= set(read_judge_csv(name, path)["id"])
    if not covered:
        raise BlendError(f"judges {', '.join(judge_csv)}: none of the {len(ids)} out-of-fold rows has a verdict from "
                         f"every judge (their files' ids are other rows'): pass judges of these rows")
    keep = np.array([i in covered for i in ids])
    rows = [i for i in ids if i in covered]
    labels, folds = result.oof_labels[keep], result.oof_folds[keep]
    judges = [external_judge(name, path, rows, labels, folds) for name, path in judge_csv.items()]
    methods = {"blend": result.oof_methods["blend"]}
    for m in result.members:
        methods[m] = result.oof_methods.get(f"{m}+tta", result.oof_methods[m])
    table = pd.concat([pd.DataFrame({n: metrics(labels, p[keep]) for n, p in methods.items()}).T,
                       judge_table(judges, labels)])
    differences = []
    if result.oof_groups is not None:
        groups = [g for g, k in zip(result.oof_groups, keep) if k]
        blend = MethodScores.from_probs("blend", methods["blend"][keep])
        for j in judges:
            other = (MethodScores(f"judge: {j.name}", None, j.verdicts) if j.verdicts is not None
                     else MethodScores.from_probs(f"judge: {j.name}", j.probs))
            differences += paired_difference(blend, other, labels, groups)
    return JudgedRows(len(rows), len(ids), table, differences)


def confusion_probs(verdicts: np.ndarray, labels: np.ndarray, folds: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """P(label | verdict) for each row, estimated on the other folds' rows (add-``smoothing``)."""
    out = np.zeros((len(verdicts), 3))
    for k in np.unique(folds):
        rest = folds != k
        counts = np.full((3, 3), smoothing)
        np.add.at(counts, (verdicts[rest], labels[rest]), 1)
        table = counts / counts.sum(axis=1, keepdims=True)
        out[folds == k] = table[verdicts[folds == k]]
    return out


def judge_table(judges: list[JudgeRow], labels: np.ndarray) -> pd.DataFrame:
    """The judges' rows for the out-of-fold table: log loss, accuracy, macro-F1 (and recalls), params,
    kind. A judge known by its verdicts is scored on its verdicts (accuracy, macro-F1, recalls) and
    has no log loss: probabilities made from its verdicts would be a mapping fitted on the labels,
    not the judge's confidence."""
    rows = {}
    for j in judges:
        if j.verdicts is not None:
            said = np.eye(3)[j.verdicts]  # one-hot: the metrics of the verdicts themselves
            rows[f"judge: {j.name}"] = {**metrics(labels, said), "log_loss": float("nan"), "params": j.params,
                                        "kind": j.kind}
        else:
            rows[f"judge: {j.name}"] = {**metrics(labels, j.probs), "params": j.params, "kind": j.kind}
    return pd.DataFrame(rows).T


def comparison_markdown(table: pd.DataFrame, recalls: bool = False) -> str:
    """log loss, accuracy (and per-class recall), parameter counts (M), judges' kind: the paper's
    comparison, in one table."""
    scores = ["log_loss", "accuracy", *(["macro_f1"] if "macro_f1" in table else []),
              *(c for c in table.columns if recalls and c.startswith("recall_"))]
    shown = table[scores].copy().astype(object)
    for column in scores:  # a judge known by its verdicts has no log loss: a dash, not "nan"
        shown[column] = [f"{v:.4f}" if isinstance(v, (int, float)) and v == v else "—" for v in table[column]]
    if "params" in table:
        shown["params (M)"] = [f"{p / 1e6:.0f}" if isinstance(p, (int, float)) and p == p and p else "—"
                               for p in table["params"]]
    if "cut" in table:
        shown["rows cut"] = [f"{c:.1%}" if isinstance(c, float) and c == c else "—" for c in table["cut"]]
    if "kind" in table:
        shown["judge"] = table["kind"].fillna("")
    return shown.to_markdown(colalign=("left",) + ("right",) * len(scores) + ("left",) * (len(shown.columns) - len(scores)),
                             disable_numparse=True)  # the figures as formatted above (4 decimals)
