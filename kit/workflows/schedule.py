"""``kit submit``'s clock: the deadline, each model's projected cost, and the order members are scored in.

A Kaggle notebook that passes its 9 hours leaves no submission at all, so :func:`kit.workflows.submit.submit`
works against a deadline — the budget less a margin (:func:`deadline_for`) — and scores the cheapest member
first (:func:`cheapest_first`), so a valid submission exists as early as possible. A model's cost is
projected before it loads (:func:`projected_seconds`): from its recorded timing where it has one of enough
rows (:func:`kit.workflows.preflight.timing_parts`), else by arithmetic (:mod:`kit.ops.compute`).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..members import get_member_type
from ..ops.compute import Work, project_seconds, row_tokens
from ..ops.devices import device_names
from ..store.models import read_trained
from .preflight import recorded_seconds, recorded_timing

__all__ = ["deadline_for", "projected_seconds", "cheapest_first", "uncertain_first", "MARGIN_SHARE", "MAX_MARGIN_S"]

# the deadline keeps back a share of the budget (at most MAX_MARGIN_S) for writing the submission and for what
# the projections did not foresee
MARGIN_SHARE, MAX_MARGIN_S = 0.05, 15 * 60


def deadline_for(started: float, budget_hours: float | None) -> float | None:
    """The time (``time.time()``) by which scoring must end: ``started`` + the budget less its margin; None
    without a budget."""
    if budget_hours is None:
        return None
    budget = budget_hours * 3600
    return started + budget - min(MARGIN_SHARE * budget, MAX_MARGIN_S)


def projected_seconds(trained_dir: Path, frame, devices: Sequence[str], passes: int,
                      backbone: str | None = None) -> float:
    """Seconds the trained model in ``trained_dir`` (its backbone at ``backbone`` if given) will take to score
    ``frame`` (its member's tokenized test rows) ``passes`` times on ``devices``:
    from its recorded timing (load once, then per row and pass) when it has one of at least
    :data:`~kit.workflows.preflight.MIN_TIMED_ROWS` rows on devices of the same kind, else by arithmetic;
    0 when neither applies (a member without a backbone: seconds)."""
    names = device_names(devices)
    recorded = recorded_seconds(recorded_timing(trained_dir), len(frame), passes, names, same_kind_only=True)
    if recorded is not None:
        return recorded
    trained = read_trained(trained_dir)
    preset = trained.preset if backbone is None else replace(trained.preset, model_dir=backbone)
    known = get_member_type(trained.member).compute_shape(preset)
    if known is None:
        return 0.0
    columns, shape = known
    seconds = project_seconds(Work.passes(shape, row_tokens(frame, columns), passes, "score"), names)
    return seconds or 0.0


def cheapest_first(costs: dict[str, float]) -> list[str]:
    """Member names by their projected cost, cheapest first (ties: as given)."""
    return sorted(costs, key=lambda n: costs[n])


def uncertain_first(probs: np.ndarray) -> np.ndarray:
    """Row positions by how unsure the blend is of them (lowest top probability first): where a swapped pass
    can change most."""
    return np.argsort(probs.max(axis=1), kind="stable")


def seconds_left(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.time()
