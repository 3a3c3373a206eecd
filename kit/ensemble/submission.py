"""The competition's submission.csv: build, validate, write.

A valid submission has exactly the columns ``id, winner_model_a, winner_model_b,
winner_tie``; its ids equal the test ids, in their order; no NaN; every row sums to 1
within 1e-6; every probability lies strictly inside (0, 1) (clipped away from 0 and 1,
where log loss explodes); and, when sample_submission.csv is at hand, the same header
and id order as it. :func:`validate_submission` raises :class:`SubmissionError` naming
the offending rows; :func:`write_submission` validates, then writes atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.env import default_inputs
from ..core.errors import BlendError, SubmissionError
from ..core.schema import PROB_COLUMNS, SUBMISSION_COLUMNS
from ..store.cache import check_cache, read_cache
from ..store.io import ids_as_text, read_csv_keeping_ids, read_parquet_keeping_ids, write_csv

PROB_TARGETS = SUBMISSION_COLUMNS[1:]
DEFAULT_CLIP = 1e-6


def _rows(mask: np.ndarray, ids: Sequence, limit: int = 10) -> str:
    where = np.flatnonzero(mask)
    shown = ", ".join(f"row {i} (id {ids[i]})" for i in where[:limit])
    return f"{len(where)} row(s): {shown}{' ...' if len(where) > limit else ''}"


def make_submission(ids: Sequence, probs: np.ndarray, clip: float = DEFAULT_CLIP) -> pd.DataFrame:
    """Submission frame from (n, 3) probabilities (A, B, tie): clipped to [clip, 1 - clip]
    and renormalised so every row sums to 1."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(ids), 3):
        raise SubmissionError(f"probabilities have shape {probs.shape}, expected ({len(ids)}, 3)")
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        raise SubmissionError(f"non-finite probabilities in {_rows(bad, list(ids))}")
    p = np.clip(probs, clip, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    p = np.clip(p, clip, 1 - clip)  # the renormalisation can nudge a value back onto a bound
    p = p / p.sum(axis=1, keepdims=True)
    return pd.DataFrame({"id": list(ids), **{c: p[:, j] for j, c in enumerate(PROB_TARGETS)}})


def validate_submission(sub: pd.DataFrame, test_ids: Sequence, sample_submission: str | Path | None = None,
                        tol: float = 1e-6) -> None:
    """Raise SubmissionError for the first defect found (see the module docstring)."""
    if list(sub.columns) != SUBMISSION_COLUMNS:
        extra = [c for c in sub.columns if c not in SUBMISSION_COLUMNS]
        missing = [c for c in SUBMISSION_COLUMNS if c not in sub.columns]
        raise SubmissionError(f"columns must be exactly {SUBMISSION_COLUMNS}; got {list(sub.columns)} "
                              f"(extra {extra}, missing {missing})")
    # ids compare as text: "001" and 1 are different ids, 7 and "7" the same
    ids = ids_as_text(sub["id"]).tolist()
    test_ids = ids_as_text(pd.Series(list(test_ids), dtype=object)).tolist()
    if ids != test_ids:
        have, want = set(ids), set(test_ids)
        missing, extra = [i for i in test_ids if i not in have], [i for i in ids if i not in want]
        dup = [i for i in pd.Series(ids)[pd.Series(ids).duplicated()]]
        if missing or extra or dup:
            raise SubmissionError(f"ids differ from the test ids: missing {missing[:10]}, extra {extra[:10]}, "
                                  f"duplicated {dup[:10]}")
        first = next(i for i, (a, b) in enumerate(zip(ids, test_ids)) if a != b)
        raise SubmissionError(f"ids are not in the test order: row {first} has id {ids[first]}, "
                              f"expected {test_ids[first]}")
    values = sub[PROB_TARGETS].to_numpy(dtype=np.float64)
    nan = np.isnan(values).any(axis=1)
    if nan.any():
        raise SubmissionError(f"NaN probabilities in {_rows(nan, ids)}")
    off = np.abs(values.sum(axis=1) - 1) > tol
    if off.any():
        raise SubmissionError(f"probabilities do not sum to 1 (±{tol}) in {_rows(off, ids)}")
    edge = ((values <= 0) | (values >= 1)).any(axis=1)
    if edge.any():
        raise SubmissionError(f"probabilities not strictly inside (0, 1) in {_rows(edge, ids)}")
    if sample_submission is not None and Path(sample_submission).exists():
        sample = read_csv_keeping_ids(sample_submission)
        if list(sample.columns) != SUBMISSION_COLUMNS:
            raise SubmissionError(f"header {SUBMISSION_COLUMNS} differs from {sample_submission}: "
                                  f"{list(sample.columns)}")
        sample_ids = sample["id"].tolist()
        if set(sample_ids) != set(ids):  # by ids, not row counts
            absent, unknown = [i for i in ids if i not in set(sample_ids)], [i for i in sample_ids if i not in set(ids)]
            raise SubmissionError(f"the ids differ from {sample_submission}'s: {len(absent)} of the {len(ids)} test ids "
                                  f"are not in it (e.g. {absent[:5]}) and {len(unknown)} of its ids are not test ids "
                                  f"(e.g. {unknown[:5]}): it describes another test table — pass the sample that goes "
                                  f"with this one, or none (--sample-submission none, SAMPLE_SUBMISSION = None)")
        if sample_ids != ids:
            first = next(i for i, (a, b) in enumerate(zip(ids, sample_ids)) if a != b)
            raise SubmissionError(f"id order differs from {sample_submission}: row {first} has id {ids[first]}, the "
                                  f"sample has {sample_ids[first]}")


def write_submission(sub: pd.DataFrame, path: str | Path, test_ids: Sequence,
                     sample_submission: str | Path | None = None, overwrite: bool = False) -> Path:
    """Validate, then write atomically (full float precision)."""
    validate_submission(sub, test_ids, sample_submission)
    return write_csv(sub, path, overwrite, float_format="%.10g")


@dataclass
class PreparedSubmission:
    """A validated submission frame, ready to be written."""

    frame: pd.DataFrame
    test_ids: list
    sample_submission: str | Path | None

    def write(self, out, overwrite: bool = False) -> Path:
        return write_submission(self.frame, out, self.test_ids, self.sample_submission, overwrite)


def resolve_sample_submission(sample_submission, test_table) -> str | Path | None:
    """``"auto"``: this environment's sample submission when ``test_table`` is this environment's own
    test table (a sample describes only its own table), else None; anything else as given."""
    if sample_submission != "auto":
        return sample_submission
    defaults = default_inputs()
    same = Path(test_table).resolve() == Path(defaults["test"]).resolve()
    return defaults["sample_submission"] if same else None


def prepare_blended_submission(blended: pd.DataFrame, tokenized: str | Path,
                               sample_submission: str | Path | None = "auto") -> PreparedSubmission:
    """Validate the submission made from blended test predictions (id + PROB_COLUMNS), which
    must cover ``tokenized``'s test table in order. ``sample_submission="auto"``: the
    environment's sample, when the cache's test table is the environment's own test table."""
    tokenized = Path(tokenized)
    check_cache(tokenized, "test")
    sample_submission = resolve_sample_submission(sample_submission, read_cache(tokenized).test_source or "-")
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
