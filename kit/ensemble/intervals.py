"""Paired bootstrap intervals for "X vs Y" on the same out-of-fold rows, resampled by prompt.

With ~1,000 rows one accuracy point is about two thirds of a standard error, so a difference
between two methods means little without its interval. Both methods are scored on the *same*
rows; a bootstrap draw resamples whole prompt groups (the folds are grouped by prompt, and rows of
one prompt are not independent) and recomputes the difference of the two methods' log loss and
accuracy on the drawn rows. The interval is the draws' 2.5th-97.5th percentiles.

Guarantees: the same ``seed`` gives the same interval; a difference of a method with itself is
exactly 0 with a zero-width interval; a method known only by its verdicts (an external judge)
gets an accuracy difference and no log-loss difference (its probabilities would be a mapping
fitted on the labels, not the judge's own confidence).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from ..core.metrics import EPS

__all__ = ["Difference", "MethodScores", "compare", "paired_difference", "paired_differences", "differences_markdown"]

N_DRAWS = 2000
TOLERANCE = 1e-12  # float noise of identical methods (e.g. a blend of one member) is no difference


@dataclass
class MethodScores:
    """One method's per-row outcome on the compared rows: its probabilities (None for a judge known
    only by its verdicts) and its predicted class per row."""

    name: str
    probs: np.ndarray | None
    predicted: np.ndarray

    @classmethod
    def from_probs(cls, name: str, probs: np.ndarray) -> "MethodScores":
        probs = np.asarray(probs, dtype=np.float64)
        return cls(name, probs, probs.argmax(axis=1))

    def row_losses(self, labels: np.ndarray) -> np.ndarray | None:
        if self.probs is None:
            return None
        probs = self.probs / self.probs.sum(axis=1, keepdims=True)  # as the competition's metric does
        return -np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0))


@dataclass
class Difference:
    """``a`` minus ``b`` on ``metric`` over the same rows, with its paired bootstrap 95 % interval."""

    a: str
    b: str
    metric: str  # "log_loss" (lower is better) or "accuracy"
    difference: float
    low: float
    high: float
    rows: int
    groups: int

    @property
    def settled(self) -> bool:
        """True when the interval leaves out 0: the sign of the difference holds over resampled prompts."""
        return self.low > TOLERANCE or self.high < -TOLERANCE

    def to_dict(self) -> dict:
        return {**asdict(self), "settled": self.settled}


def _group_sums(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(codes, weights=values, minlength=n_groups)


def paired_difference(a: MethodScores, b: MethodScores, labels: np.ndarray, groups, n_draws: int = N_DRAWS,
                      seed: int = 0) -> list[Difference]:
    """``a`` vs ``b``: accuracy (and log loss where both have probabilities) differences with their
    paired bootstrap intervals, prompt groups resampled with replacement (``groups``: one key per
    row, e.g. the prompt text)."""
    labels = np.asarray(labels)
    codes, uniques = pd.factorize(pd.Series(list(groups)))
    codes = np.asarray(codes)
    n_groups = len(uniques)
    sizes = _group_sums(np.ones(len(labels)), codes, n_groups)
    draws = np.random.default_rng(seed).multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_draws)
    rows = draws @ sizes  # rows in each draw
    per_row = {"accuracy": (a.predicted == labels).astype(float) - (b.predicted == labels).astype(float)}
    losses_a, losses_b = a.row_losses(labels), b.row_losses(labels)
    if losses_a is not None and losses_b is not None:
        per_row["log_loss"] = losses_a - losses_b
    out = []
    for metric, values in per_row.items():
        boot = (draws @ _group_sums(values, codes, n_groups)) / rows
        low, high = np.percentile(boot, [2.5, 97.5])
        out.append(Difference(a.name, b.name, metric, float(values.mean()), float(low), float(high), len(labels),
                              n_groups))
    return sorted(out, key=lambda d: d.metric != "log_loss")


def paired_differences(probs: dict[str, np.ndarray], pairs, labels: np.ndarray, groups) -> list[Difference]:
    """:func:`paired_difference` for each ``(a, b)`` of ``pairs``, methods named by their keys in ``probs``
    (name -> (n, 3) probabilities on the same rows), in the order of ``pairs``."""
    return [d for a, b in pairs for d in paired_difference(MethodScores.from_probs(a, probs[a]),
                                                           MethodScores.from_probs(b, probs[b]), labels, groups)]


def differences_markdown(differences: list[Difference]) -> str:
    """A markdown table: each comparison's difference and its 95 % interval, and whether the
    interval leaves out 0."""
    if not differences:
        return ""
    lines = ["| comparison | metric | difference | 95 % interval (paired bootstrap over prompts) | sign holds |",
             "|:--|:--|--:|:--|:--|"]
    for d in differences:
        lines.append(f"| {d.a} − {d.b} | {d.metric.replace('_', ' ')} | {d.difference:+.4f} | "
                     f"[{d.low:+.4f}, {d.high:+.4f}] | {'yes' if d.settled else 'no'} |")
    return "\n".join(lines) + "\n"


def compare(methods: dict[str, MethodScores], labels: np.ndarray, groups, members: list[str],
            n_draws: int = N_DRAWS, seed: int = 0) -> list[Difference]:
    """The report's comparisons, each with its interval: the blend against every judge (``judge: *``),
    every ``blend without X``, every member and TF-IDF; and every member against every other."""
    pairs = []
    if "blend" in methods:
        others = [n for n in methods if n.startswith("judge: ")] + [n for n in methods if n.startswith("blend without ")]
        others += [m for m in members if m in methods] + (["tfidf"] if "tfidf" in methods else [])
        pairs += [("blend", other) for other in others]
    present = [m for m in members if m in methods]
    pairs += [(a, b) for i, a in enumerate(present) for b in present[i + 1:]]
    named = {name: replace(m, name=name) for name, m in methods.items()}  # the report's names
    return [d for a, b in pairs for d in paired_difference(named[a], named[b], labels, groups, n_draws, seed)]
