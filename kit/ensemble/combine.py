"""The LoRA-LiteE ensemble: member probabilities -> blended probabilities.

A *member* is one backbone (preset); its test probabilities are the mean over its
trained (model, fold) outputs, and its out-of-fold (OOF) probabilities the concatenation
of every fold's held-out predictions. The blend is a weighted mean of the members:

* weights: fixed (default for two members: the paper's 0.7 / 0.3, first member first;
  equal otherwise) or fitted on OOF log loss (scipy SLSQP; non-negative, summing to 1);
* space: ``"prob"`` (arithmetic mean of probabilities) or ``"log"`` (geometric: mean of
  log-probabilities, renormalised);
* optional temperature scaling fitted on the blended OOF predictions;
* optional **tie offset**: a number added to the blend's tie log-probability, fitted on the
  OOF rows together with whatever else is fitted (the weights when fitted, the temperature when
  asked). Members trained to be sharp can put too little mass on ties (on PandaLM's five-seed Gemma
  bag the fitted offset is +1.11: results/cv_pandalm_bag5/tie_offset/, where it did not lower the
  cross-fitted log loss beyond the seed spread). The offset moves p_A and p_B alike, so the blend
  stays symmetric under A<->B.

**Honest figures.** Whatever is fitted (weights, temperature) is *cross-fitted* for the
out-of-fold score: the OOF rows are split into parts, and each part is blended by what was
fitted on the other parts, so the ``blend`` row is never scored on the rows it was fitted on.
The parts are the training folds when there are at least ``HOLDOUT_PARTS`` (5) of them;
with fewer (the main job's 2, one shared held-out fold) they are ``HOLDOUT_PARTS`` parts by
id (:func:`cross_fit_parts` says why). The test predictions use the values fitted on every
OOF row. The in-sample figure is reported beside it (``blend (in-sample fit)``) to show how
much in-sample fitting flatters.

Every choice and fitted value (all-rows and per fold) is returned in :class:`BlendResult`
and the report.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.errors import BlendError
from ..core.metrics import log_loss, metrics
from ..store.predictions import PROB_COLUMNS, MemberPredictions, flip_rate_of
from .stacking import MirrorStacker

PAPER_WEIGHTS = (0.7, 0.3)
HOLDOUT_PARTS = 5  # fewer training folds than this: the blend is cross-fitted on this many parts by id


def holdout_parts(ids: Sequence) -> np.ndarray:
    """A stable part (0 .. HOLDOUT_PARTS-1) for each id, from its text's sha1: the same rows land in
    the same part in every session and process."""
    return np.array([hashlib.sha1(str(i).encode()).digest()[0] % HOLDOUT_PARTS for i in ids])


def cross_fit_parts(folds: np.ndarray, ids: Sequence) -> tuple[np.ndarray, str]:
    """The parts the blend's fitted values are cross-fitted on, and the scheme's description.

    * ``HOLDOUT_PARTS`` or more training folds: the folds themselves.
    * Fewer (2-4 folds, or one held-out fold every member shares): ``HOLDOUT_PARTS`` parts by id.
      With two folds, a per-fold fit sees one half of the rows, all scored by one fold's models,
      and is applied to the other fold's models: on the main job's two folds the fitted weights swung
      from one member to another between the folds, and in every main-job run of
      results/blend_schemes.md the parts by id score the lower cross-fitted blend (docs/design.md).
      A part's fit sees 80 % of the rows from every fold's models: what the test weights are fitted
      on, less one part.
      Parts by id do not keep a prompt's rows together; a fit of a few weights (or the mirror
      stacker's few coefficients) on member probabilities cannot memorise a prompt.

    Every part is never blended by a fit that saw it, whichever scheme. Raises :class:`BlendError`
    for one fold with fewer than ``2 * HOLDOUT_PARTS`` rows (too few to fit on parts)."""
    n_folds = len(np.unique(folds))
    if n_folds >= HOLDOUT_PARTS:
        return folds, "cross-fitted per fold"
    if len(ids) < 2 * HOLDOUT_PARTS:
        if n_folds >= 2:
            return folds, "cross-fitted per fold (too few rows for parts)"
        raise BlendError(f"fitted weights / temperature need at least {2 * HOLDOUT_PARTS} out-of-fold rows "
                         f"shared by every member, got {len(ids)}: hold out more rows, or pass fixed "
                         f"weights (paper / equal / numbers)")
    where = "the one held-out fold every member shares" if n_folds < 2 else f"the out-of-fold rows of {n_folds} folds"
    return holdout_parts(ids), f"cross-fitted on {HOLDOUT_PARTS} parts (by id) of {where}"


def combine(probs: Sequence[np.ndarray], weights: Sequence[float], space: str = "prob",
            temperature: float = 1.0, tie_offset: float = 0.0) -> np.ndarray:
    """Weighted blend of (n, 3) probability arrays, then temperature, then ``tie_offset`` added to the
    tie's log-probability; rows sum to 1."""
    w = np.asarray(weights, dtype=np.float64)
    if space == "prob":
        logp = np.log(np.clip(sum(wi * p for wi, p in zip(w, probs)), 1e-15, 1))
    elif space == "log":
        logp = sum(wi * np.log(np.clip(p, 1e-15, 1)) for wi, p in zip(w, probs))
    else:
        raise BlendError(f"space must be 'prob' or 'log', got {space!r}")
    z = logp / temperature
    if tie_offset:
        z = z + np.array([0.0, 0.0, tie_offset])
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _weight_starts(m: int) -> list[np.ndarray]:
    """Where the weight searches start: equal weights, then each member leading in turn."""
    return [np.full(m, 1 / m)] + [np.eye(m)[i] * 0.8 + 0.2 / m for i in range(m)]


def fit_weights(probs: Sequence[np.ndarray], labels: np.ndarray, space: str = "prob") -> np.ndarray:
    """Non-negative weights summing to 1 that minimise OOF log loss (SLSQP, several starts)."""
    from scipy.optimize import minimize

    m = len(probs)
    if m == 1:
        return np.ones(1)
    best = None
    for x0 in _weight_starts(m):
        res = minimize(lambda w: log_loss(labels, combine(probs, w, space)), x0, method="SLSQP",
                       bounds=[(0.0, 1.0)] * m, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
        if best is None or res.fun < best.fun:
            best = res
    w = np.clip(best.x, 0, None)
    return w / w.sum()


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises the log loss of ``probs`` (bounded scalar search)."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(probs, 1e-15, 1))
    res = minimize_scalar(lambda t: log_loss(labels, combine([np.exp(logp)], [1.0], "log", t)),
                          bounds=(0.05, 20.0), method="bounded")
    return float(res.x)


TIE_OFFSET_BOUND = 3.0  # |offset| <= 3: ties up to ~20x likelier or less likely than the members say


def fit_with_tie_offset(probs: Sequence[np.ndarray], labels: np.ndarray, space: str, weights: np.ndarray | None,
                        temperature: bool) -> tuple[np.ndarray, float, float]:
    """Weights (fitted when ``weights`` is None, else kept), temperature (fitted when asked, else 1) and
    the tie offset, fitted *together* to minimise the log loss of ``combine(probs, w, space, t, offset)``
    (SLSQP: weights non-negative summing to 1, temperature in [0.05, 20], |offset| <= TIE_OFFSET_BOUND).

    Together, because they trade off: a temperature fitted afterwards divides the offset too, and
    weights fitted without it pick whichever member's ties happen to be least starved."""
    from scipy.optimize import minimize

    m = len(probs)
    fit_w = weights is None
    n_w = m if fit_w else 0

    def unpack(x):
        w = np.clip(x[:n_w], 0, None) if fit_w else weights
        w = w / w.sum() if fit_w and w.sum() > 0 else w
        t = float(np.exp(x[n_w])) if temperature else 1.0
        return w, t, float(x[-1])

    def loss(x):
        w, t, b = unpack(x)
        return log_loss(labels, combine(probs, w, space, t, b))

    bounds = [(0.0, 1.0)] * n_w + ([(np.log(0.05), np.log(20.0))] if temperature else []) \
        + [(-TIE_OFFSET_BOUND, TIE_OFFSET_BOUND)]
    constraints = [{"type": "eq", "fun": lambda x: x[:n_w].sum() - 1}] if fit_w and m > 1 else []
    starts = _weight_starts(m) if fit_w and m > 1 else [np.full(n_w, 1.0)]
    best = None
    for w0 in starts:
        x0 = np.concatenate([w0, [0.0] if temperature else [], [0.0]])
        res = minimize(loss, x0, method="SLSQP", bounds=bounds, constraints=constraints)
        if best is None or res.fun < best.fun:
            best = res
    w, t, b = unpack(best.x)
    return np.asarray(w, dtype=np.float64), t, b


@dataclass
class Fit:
    """A blend as chosen or fitted: weights (a weighted mean) or a stacker, then a temperature, then a
    tie offset."""
    weights: np.ndarray | None
    mode: str
    temperature: float
    stacker: MirrorStacker | None = None
    tie_offset: float = 0.0

    def apply(self, probs: Sequence[np.ndarray], space: str) -> np.ndarray:
        if self.stacker is not None:
            return combine([self.stacker.predict(probs)], [1.0], "log", self.temperature, self.tie_offset)
        return combine(probs, self.weights, space, self.temperature, self.tie_offset)

    def weight_list(self) -> list[float]:
        """The weights (empty for a stacker: its coefficients are in the report's ``stacker``)."""
        return [] if self.weights is None else [float(x) for x in self.weights]


@dataclass
class BlendResult:
    """A blend: its members, weights (mode, space, temperature), the blended test probabilities, the
    out-of-fold comparison table and rows, and the record written to blend.json."""

    members: list[str]
    weights: list[float]
    weights_mode: str
    space: str
    temperature: float
    test: pd.DataFrame | None  # id + PROB_COLUMNS (None when no member has test predictions)
    oof_rows: int = 0
    tie_offset: float = 0.0
    table: pd.DataFrame | None = None  # OOF comparison table
    report: dict = field(default_factory=dict)
    oof_ids: list = field(default_factory=list)  # the OOF rows every member covers
    oof_labels: np.ndarray | None = None
    oof_blend: np.ndarray | None = None
    oof_folds: np.ndarray | None = None
    oof_methods: dict = field(default_factory=dict)  # table row -> its (n, 3) out-of-fold probabilities
    oof_groups: list | None = None  # each out-of-fold row's prompt (evaluation_table): bootstrap groups
    judged: object | None = None  # external judges on the rows they judged (kit.ensemble.judges.JudgedRows)


@dataclass
class Chooser:
    """What the blend settings ask for, fitted on rows (p, y) where they ask for fitting: ``weights`` (a mode or
    numbers) over ``n`` members in ``space``, with a fitted temperature and tie offset when asked. Called on
    every cross-fitting part's rows alike, so each part's blend is made as the test blend is."""
    weights: str | Sequence[float]
    space: str
    temperature: bool
    tie_offset: bool
    n: int

    def __call__(self, p, y, tie: bool | None = None) -> Fit:
        tie = self.tie_offset if tie is None else tie  # ``tie``: with a tie offset (False: the blend without)
        weights, space, temperature, n = self.weights, self.space, self.temperature, self.n
        if isinstance(weights, str):
            if weights == "stack":
                stacker = MirrorStacker().fit(p, y)
                if tie:
                    _, t, b = fit_with_tie_offset([stacker.predict(p)], y, "log", np.ones(1), temperature)
                    return Fit(None, "stack", t, stacker, b)
                t = fit_temperature(stacker.predict(p), y) if temperature else 1.0
                return Fit(None, "stack", t, stacker)
            if weights == "paper":
                w = np.array(PAPER_WEIGHTS) if n == 2 else np.full(n, 1 / n)
            elif weights == "equal":
                w = np.full(n, 1 / n)
            elif weights == "fit":
                if tie:
                    w, t, b = fit_with_tie_offset(p, y, space, None, temperature)
                    return Fit(w, "fit", t, None, b)
                w = fit_weights(p, y, space)
            else:
                raise BlendError(f"weights must be 'paper', 'equal', 'fit', 'stack' or numbers, got {weights!r}")
            mode = weights
        else:
            w = np.asarray(weights, dtype=np.float64)
            if len(w) != n or (w < 0).any() or w.sum() <= 0:
                raise BlendError(f"{n} member(s) need as many non-negative weights, got {list(weights)}")
            w, mode = w / w.sum(), "fixed"
        if tie:
            _, t, b = fit_with_tie_offset(p, y, space, w, temperature)
            return Fit(w, mode, t, None, b)
        t = fit_temperature(combine(p, w, space), y) if temperature else 1.0
        return Fit(w, mode, t)


def blend_members(members: Sequence[MemberPredictions], weights: str | Sequence[float] = "paper", space: str = "prob",
                  temperature: bool = False, tie_offset: bool = False) -> BlendResult:
    """Blend members; fit weights / temperature / tie offset on the OOF rows every member covers."""
    names = [m.name for m in members]
    if not members:
        raise BlendError("no members to blend: train and infer at least one model")
    common = None
    if all(m.oof is not None for m in members):
        shared = set.intersection(*(set(m.oof["id"]) for m in members))
        common = [i for i in members[0].oof["id"] if i in shared]  # first member's order
    needs_oof = weights in ("fit", "stack") or temperature or tie_offset
    if needs_oof and not common:
        raise BlendError("fitted weights / temperature / tie offset need out-of-fold predictions shared by every member")
    oof = [m.oof.set_index("id").loc[common] for m in members] if common else None
    oof_p = [o[PROB_COLUMNS].to_numpy() for o in oof] if oof else None
    labels = oof[0]["label"].to_numpy().astype(int) if oof else None
    choose = Chooser(weights, space, temperature, tie_offset, len(members))
    chosen = choose(oof_p, labels) if oof_p is not None else choose(None, None)
    fold_fits, scheme = {}, "nothing fitted"
    if oof:
        oof_folds = oof[0]["fold"].to_numpy() if "fold" in oof[0] else np.zeros(len(labels), dtype=int)
        cross = chosen.apply(oof_p, space)  # replaced by the cross-fitted blend when something is fitted
        cross_folds, scheme = oof_folds, "cross-fitted per fold"
        if needs_oof:
            cross_folds, scheme = cross_fit_parts(oof_folds, common)
            cross, fold_fits = cross_fitted(choose, oof_p, labels, cross_folds, space)

    test = None
    if all(m.test is not None for m in members):
        test = _blend_test(members, chosen, space)
    mode, t = chosen.mode, chosen.temperature
    result = BlendResult(names, chosen.weight_list(), mode, space, t, test, len(common or []), chosen.tie_offset)
    result.report = {"members": names, "weights": result.weights, "weights_mode": mode, "space": space,
                     "temperature": t, "temperature_fitted": bool(temperature), "tie_offset": chosen.tie_offset,
                     "tie_offset_fitted": bool(tie_offset), "oof_rows": result.oof_rows,
                     "oof_score": scheme if fold_fits else "nothing fitted",
                     "per_fold": fold_fits}
    if chosen.stacker is not None:
        result.report["stacker"] = chosen.stacker.describe(names)
    if oof:
        result.oof_ids, result.oof_labels, result.oof_blend, result.oof_folds = common, labels, cross, oof_folds
        result.table = _oof_table(result, members, oof, choose, chosen, cross_folds, bool(needs_oof), bool(fold_fits))
    return result


def _oof_table(result: BlendResult, members: Sequence[MemberPredictions], oof: list[pd.DataFrame], choose: Chooser,
               chosen: Fit, parts: np.ndarray, needs_oof: bool, fitted: bool) -> pd.DataFrame:
    """The out-of-fold table (one row per member, its swap-TTA and temperature rows, the blend, in-sample and
    ablation rows); each row's probabilities go into ``result.oof_methods`` for the paired comparisons."""
    rows, methods, labels, space = {}, result.oof_methods, result.oof_labels, choose.space
    oof_p = [o[PROB_COLUMNS].to_numpy() for o in oof]

    def row(name: str, probs: np.ndarray) -> dict:  # the table's row and, for paired comparisons, its rows
        methods[name] = np.asarray(probs, dtype=np.float64)
        rows[name] = metrics(labels, probs)
        return rows[name]

    for m, o in zip(members, oof):
        # the direct-pass row only where every fold was scored with swap TTA (a mix of TTA and
        # no-TTA folds has no direct pass for some rows; the blended columns are complete either way)
        if "p_a_direct" in o and o[[f"{c}_direct" for c in PROB_COLUMNS]].notna().all().all():
            row(m.name, o[[f"{c}_direct" for c in PROB_COLUMNS]].to_numpy())
            row(f"{m.name}+tta", o[PROB_COLUMNS].to_numpy())["flip_rate"] = flip_rate_of(o)
        else:
            row(m.name, o[PROB_COLUMNS].to_numpy())
    if needs_oof or len(np.unique(result.oof_folds)) >= 2:
        # a member's calibration alone: its temperature cross-fitted as the blend is (an
        # overconfident member shows here what blending with a temperature can recover)
        def calibrate(p, y) -> Fit:
            return Fit(np.ones(1), "fit", fit_temperature(p[0], y))
        for m, p in zip(members, oof_p):
            row(f"{m.name} + temperature", cross_fitted(calibrate, [p], labels, parts, space)[0])
    row("blend", result.oof_blend)
    if fitted:  # what scoring the fit on its own rows would claim
        row("blend (in-sample fit)", chosen.apply(oof_p, space))
    if fitted and choose.weights in ("fit", "stack") and len(members) >= 3:
        # what each member adds: the same blend refitted (cross-fitted alike) without it, same rows
        for j, name in enumerate(result.members):
            rest = [p for i, p in enumerate(oof_p) if i != j]
            row(f"blend without {name}", cross_fitted(choose, rest, labels, parts, space)[0])
    if fitted and choose.tie_offset:  # what the offset adds: the same blend fitted without it, same rows
        row("blend without tie offset", cross_fitted(lambda p, y: choose(p, y, tie=False), oof_p, labels,
                                                      parts, space)[0])
    return pd.DataFrame(rows).T


def cross_fitted(choose, probs: list[np.ndarray], labels: np.ndarray, parts: np.ndarray,
                 space: str) -> tuple[np.ndarray, dict]:
    """Each part's rows blended by what ``choose`` fits on the other parts' rows, and each part's fit:
    no row is scored by a fit that saw it."""
    cross, fits = np.zeros((len(labels), 3)), {}
    for k in np.unique(parts):
        rest, here = parts != k, parts == k
        fold_fit = choose([p[rest] for p in probs], labels[rest])
        cross[here] = fold_fit.apply([p[here] for p in probs], space)
        fits[int(k)] = {"weights": fold_fit.weight_list(), "temperature": float(fold_fit.temperature),
                        "tie_offset": float(fold_fit.tie_offset)}
    return cross, fits


def apply_saved_blend(members: Sequence[MemberPredictions], saved: dict) -> pd.DataFrame:
    """Test probabilities (id + PROB_COLUMNS) blended as a report's ``blend.json`` says: its
    members (every one needed, in its order), weights or stacker, space, temperature and tie offset
    (0 in reports written before it existed)."""
    names = [m.name for m in members]
    if sorted(names) != sorted(saved["members"]):
        raise BlendError(f"the saved blend is for members {saved['members']}, but the models found are {names}: "
                         f"attach the same members, or pass weights='paper' / 'equal' / [w1, ...]")
    by_name = {m.name: m for m in members}
    ordered = [by_name[n] for n in saved["members"]]
    stacker = MirrorStacker.from_description(saved["stacker"]) if saved.get("weights_mode") == "stack" else None
    fitted = Fit(None if stacker else np.asarray(saved["weights"], dtype=np.float64), saved["weights_mode"],
                  float(saved.get("temperature", 1.0)), stacker, float(saved.get("tie_offset", 0.0)))
    return _blend_test(ordered, fitted, saved.get("space", "prob"))


def _blend_test(members: Sequence[MemberPredictions], fit: Fit, space: str) -> pd.DataFrame:
    """id + PROB_COLUMNS: the members' test predictions (same ids, same order) blended by ``fit``."""
    test_ids = members[0].test["id"].tolist()
    for m in members[1:]:
        if m.test["id"].tolist() != test_ids:
            raise BlendError(f"member {m.name}'s test ids differ from {members[0].name}'s")
    probs = fit.apply([m.test[PROB_COLUMNS].to_numpy() for m in members], space)
    return pd.DataFrame({"id": test_ids, **{c: probs[:, j] for j, c in enumerate(PROB_COLUMNS)}})


def describe_weights(result: BlendResult) -> str:
    """One line: the mode and each member's weight (a stacker's coefficients live in the report)."""
    if result.weights_mode == "stack":
        return ("stack (logistic regression on the members' log-probabilities, mirror-symmetric; "
                "coefficients under `stacker` in the JSON report)")
    return f"{result.weights_mode} " + ", ".join(f"{n} {w:.3f}" for n, w in zip(result.members, result.weights))
