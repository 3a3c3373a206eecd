"""Guardrails, fitted: outcome rates of rows of a recognisable kind, applied after blending.

Rules (by the rows' text):

* ``identical`` — both responses the same text (after NFKC, case-folding, collapsing whitespace);
* ``one_empty`` — exactly one response empty (every turn blank). Rows where B is the empty
  one are mirrored (A and B exchanged) so both orientations pool into one estimate.

For a row a rule matches, the blend's probabilities ``p`` become ``(c + k·p) / (n + k)``: ``c``
the outcome counts of the rule's *training* rows (labelled, mirrored where needed), ``n`` their
number, ``k`` = :data:`STRENGTH` — the blend is the prior, the counts move it as they grow.
Out of fold the counts come from the other folds only (cross-fitted), and a rule is kept only if
that lowers the out-of-fold log loss of the rows it touches; test rows use the counts of every
out-of-fold row. Only rows a kept rule matches are changed — never another row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.metrics import log_loss, metrics
from ..core.schema import PROB_COLUMNS, SWAP, SWAP_INDEX
from ..data.dedup import normalise_prompt
from ..data.ingest import source_rows
from ..store.cache import cache_sources
from .combine import BlendResult

STRENGTH = 10.0  # pseudo-rows of the blend's own prediction behind each rule's estimate
RULES = ("identical", "one_empty")


def _empty(turns) -> bool:
    return all(not str(t).strip() for t in turns)


def rule_masks(texts: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """rule -> (rows it matches, rows to mirror), for a frame with response_a/response_b turn lists."""
    a = texts["response_a"].map(normalise_prompt)
    b = texts["response_b"].map(normalise_prompt)
    empty_a, empty_b = texts["response_a"].map(_empty).to_numpy(), texts["response_b"].map(_empty).to_numpy()
    identical = (a == b).to_numpy() & ~(empty_a & empty_b)
    one_empty = empty_a ^ empty_b
    return {"identical": (identical, np.zeros(len(texts), dtype=bool)),
            "one_empty": (one_empty, one_empty & empty_b)}


def _counts(labels: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    oriented = np.where(mirror, SWAP_INDEX[labels], labels)
    return np.bincount(oriented, minlength=3).astype(np.float64)


def _adjust(p: np.ndarray, counts: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    q = np.where(mirror[:, None], p[:, SWAP], p)
    q = (counts[None, :] + STRENGTH * q) / (counts.sum() + STRENGTH)
    return np.where(mirror[:, None], q[:, SWAP], q)


@dataclass
class Guardrails:
    """Fitted rules: counts on every out-of-fold row, which were kept, and the report."""

    counts: dict[str, list[float]] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    def apply(self, probs: np.ndarray, texts: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
        """The kept rules applied to ``probs`` (rows of ``texts``); rows touched per rule."""
        out, touched = probs.copy(), {}
        masks = rule_masks(texts)
        for rule in self.kept:
            rows, mirror = masks[rule]
            if rows.any():
                out[rows] = _adjust(probs[rows], np.asarray(self.counts[rule]), mirror[rows])
            touched[rule] = int(rows.sum())
        return out, touched


def fit_guardrails(texts: pd.DataFrame, labels: np.ndarray, folds: np.ndarray, blend: np.ndarray
                   ) -> tuple[Guardrails, np.ndarray]:
    """Fit every rule on out-of-fold rows (``texts`` row-aligned with ``labels``, ``folds`` and
    the cross-fitted ``blend``); returns the guardrails and the out-of-fold probabilities with
    the kept rules applied (cross-fitted: each fold's rows adjusted with the other folds' counts)."""
    masks = rule_masks(texts)
    fitted, out = Guardrails(), blend.copy()
    for rule in RULES:
        rows, mirror = masks[rule]
        entry = {"rows": int(rows.sum())}
        if rows.sum():
            cross = blend.copy()
            for k in np.unique(folds):
                here, rest = rows & (folds == k), rows & (folds != k)
                if here.any():
                    cross[here] = _adjust(blend[here], _counts(labels[rest], mirror[rest]), mirror[here])
            before, after = log_loss(labels[rows], blend[rows]), log_loss(labels[rows], cross[rows])
            entry.update(log_loss_before=before, log_loss_after=after, kept=bool(after < before))
            fitted.counts[rule] = _counts(labels[rows], mirror[rows]).tolist()
            entry["counts_oriented"] = fitted.counts[rule]
            if after < before:
                fitted.kept.append(rule)
                out[rows] = cross[rows]
        else:
            entry["kept"] = False
        fitted.report[rule] = entry
    return fitted, out


def _texts(tokenized: str | Path, ids: Sequence, split: str) -> pd.DataFrame | None:
    """The rows of ``ids`` as parsed text, from the (checked) sources the cache ``tokenized`` was made
    from; None (no guardrails) where those tables are not here."""
    sources = cache_sources(tokenized, split)
    return None if sources is None else source_rows(sources, ids, labelled=split == "train")


def apply_guardrails(result: BlendResult, tokenized: str | Path) -> None:
    """Fit the guardrails (this module) on the blend's out-of-fold rows; add the
    ``blend + guardrails`` row to the table, apply the kept rules to the test predictions, and
    record everything in ``result.report["guardrails"]`` (saved in blend.json for ``kit submit``)."""
    if result.oof_blend is None or result.table is None:
        return
    texts = _texts(tokenized, result.oof_ids, "train")
    if texts is None:
        return
    rails, adjusted = fit_guardrails(texts, result.oof_labels, result.oof_folds, result.oof_blend)
    result.table.loc["blend + guardrails"] = pd.Series(metrics(result.oof_labels, adjusted))
    report = {"kept": rails.kept, "counts": rails.counts, "rules": rails.report}
    if result.test is not None and rails.kept:
        test_texts = _texts(tokenized, result.test["id"].tolist(), "test")
        if test_texts is not None:
            probs, touched = rails.apply(result.test[PROB_COLUMNS].to_numpy(), test_texts)
            result.test = result.test.assign(**{c: probs[:, j] for j, c in enumerate(PROB_COLUMNS)})
            report["test_rows_touched"] = touched
    result.report["guardrails"] = report


def apply_saved_guardrails(blended: pd.DataFrame, saved: dict, tokenized: str | Path) -> tuple[pd.DataFrame, dict]:
    """``blended`` test predictions with the guardrails a report's ``blend.json`` kept applied
    (their counts as fitted then); rows touched per rule."""
    rails = saved.get("guardrails") or {}
    if not rails.get("kept"):
        return blended, {}
    texts = _texts(tokenized, blended["id"].tolist(), "test")
    if texts is None:
        return blended, {}
    probs, touched = Guardrails(rails["counts"], rails["kept"]).apply(blended[PROB_COLUMNS].to_numpy(), texts)
    return blended.assign(**{c: probs[:, j] for j, c in enumerate(PROB_COLUMNS)}), touched
