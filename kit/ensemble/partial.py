"""The blend of the members that finished: what ``kit submit`` publishes before (or instead of) the full blend.

A submission that must not time out is written as soon as the first member is scored and rewritten as each
one finishes (:mod:`kit.workflows.submit`). When every planned member finished, the blend is the one planned
(the saved blend as saved, or the weights mode asked for). When some did not, :func:`blend_finished` blends
those that did:

* a saved blend's weights, restricted to the finished members and renormalised (a saved stacker needs every
  member: the finished ones get equal weights); the full blend's temperature and tie offset are left out,
  since they were fitted for every member together;
* fixed weights (``paper``, ``equal``, ``w1,w2,...``): the planned weights, restricted and renormalised;
* fitted weights (``fit``, ``stack``): fitted again on the finished members' shared held-out rows.

The record it returns says which case applied (``why``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..core.errors import BlendError
from ..core.schema import PROB_COLUMNS
from ..store.predictions import MemberPredictions
from .combine import PAPER_WEIGHTS, apply_saved_blend, blend_members, combine

__all__ = ["blend_finished", "planned_weights"]


def planned_weights(names: Sequence[str], weights) -> np.ndarray | None:
    """The weights a fixed mode gives the planned members ``names``; None for a fitted mode."""
    n = len(names)
    if isinstance(weights, str):
        if weights == "paper":
            return np.array(PAPER_WEIGHTS) if n == 2 else np.full(n, 1 / n)
        if weights == "equal":
            return np.full(n, 1 / n)
        return None
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != n:
        raise BlendError(f"{len(w)} weights for {n} members ({list(names)}): give one weight per member")
    return w


def _weighted(members: Sequence[MemberPredictions], weights: np.ndarray, space: str) -> pd.DataFrame:
    ids = members[0].test["id"].tolist()
    for m in members[1:]:
        if m.test["id"].tolist() != ids:
            raise BlendError(f"member {m.name}'s test ids differ from {members[0].name}'s")
    probs = combine([m.test[PROB_COLUMNS].to_numpy() for m in members], weights / weights.sum(), space)
    return pd.DataFrame({"id": ids, **{c: probs[:, j] for j, c in enumerate(PROB_COLUMNS)}})


def blend_finished(finished: Sequence[MemberPredictions], planned: Sequence[str], *, saved: dict | None = None,
                   weights="paper", space: str = "prob") -> tuple[pd.DataFrame, dict]:
    """(test probabilities, record) of the ``finished`` members, ``planned`` being every member the blend was
    meant for (see the module docstring). The record holds the members, weights, space and ``why``."""
    names = [m.name for m in finished]
    whole = sorted(names) == sorted(planned)
    if saved is not None:
        if whole:
            return apply_saved_blend(finished, saved), {"members": names, "weights_mode": saved["weights_mode"],
                                                        "why": "the saved blend, every member finished"}
        if saved.get("weights_mode") == "stack":
            w, how = np.ones(len(names)), "equal weights (the saved stacker needs every member)"
        else:
            saved_w = dict(zip(saved["members"], saved["weights"]))
            w, how = np.array([saved_w[n] for n in names], dtype=np.float64), "the saved weights, renormalised"
        space = saved.get("space", "prob")
    else:
        fixed = planned_weights(planned, weights)
        if fixed is None:
            result = blend_members(finished, weights, space)
            return result.test, {"members": names, "weights_mode": result.weights_mode, "weights": result.weights,
                                 "space": result.space, "why": f"weights {weights!r} fitted on the finished members"}
        by_name = dict(zip(planned, fixed))
        w, how = np.array([by_name[n] for n in names], dtype=np.float64), f"weights {weights!r}, renormalised"
    if w.sum() <= 0:  # every finished member had weight 0 in the plan: nothing to renormalise, said in the record
        w, how = np.ones(len(names)), f"equal weights ({how} would be all zero)"
    w = w / w.sum()
    what = "every member finished" if whole else f"{len(names)} of {len(planned)} members finished"
    return _weighted(finished, w, space), {"members": names, "weights_mode": "renormalised",
                                           "weights": [round(float(x), 6) for x in w], "space": space,
                                           "why": f"{how}: {what}"}
