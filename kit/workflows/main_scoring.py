"""The main job's scoring side (``kit main``, ``07_one_session``), kept within the session's deadline.

Once the members are trained, :class:`SessionScoring` scores each member's test rows with ``03_infer_two_t4``,
the member projected cheapest first, each run against the deadline (the session's budget less a margin,
:func:`kit.workflows.schedule.deadline_for`). Guarantees:

* a valid submission is published as soon as the first member's test rows are scored, and replaced in one
  rename as each further member finishes: a fixed weights mode (``paper``, ``equal``, numbers) renormalised
  over the finished members; a fitted mode (``fit``, ``stack``) with equal weights until the held-out rows are
  scored (:func:`kit.ensemble.partial.blend_finished`);
* a member projected past the deadline is not started, and one still scoring at it is stopped and left out;
* then the finished members' held-out rows are scored and ``04_blend`` blends them as planned and writes the
  report; its submission replaces the partial one. Should the deadline stop that, the partial one stands;
* ``<run>/session.json`` records what was scored, what was left out and why, and which blend was published.

Without a budget (or with time for everything) every member is scored and blended as planned: the same
predictions, blend and report as scoring all of them at once.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..core.declare import to_parameters
from ..core.errors import DeadlineReached
from ..core.log import get_logger
from ..core.settings import BlendSettings, InferSettings
from ..ensemble.judges import split_judges
from ..ensemble.partial import blend_finished, planned_weights
from ..ensemble.submission import write_blended_submission
from ..ops.devices import visible_devices
from ..store.io import atomic_write, publish, read_parquet_keeping_ids
from ..store.models import discover_members, read_trained
from ..members import get_member_type
from ..store.predictions import load_member
from .schedule import cheapest_first, projected_seconds, seconds_left

__all__ = ["SessionScoring"]

log = get_logger(__name__)

# a notebook is given this much beyond the deadline before it is stopped from outside (the stage itself stops
# at the deadline; this catches a kernel that hangs before it gets there)
KERNEL_GRACE_S = 60


class SessionScoring:
    """Score and blend the models trained under ``run_dir``/models (grouped by preset, as the blend finds them;
    a judge's held-out rows only) against ``deadline`` (a ``time.time()``; None: no deadline), publishing into
    ``target``; ``execute`` runs one notebook (:func:`kit.workflows.main.execute_notebook`)."""

    def __init__(self, run_dir: Path, target: Path, deadline: float | None, blend: BlendSettings,
                 execute: Callable[..., Path], common: dict):
        self.members, self.judges = split_judges(discover_members(run_dir / "models"))
        self.run_dir, self.target, self.deadline = run_dir, target, deadline
        self.blend, self.execute, self.common = blend, execute, common
        self.scored: list[str] = []
        self.left_out: list[str] = []
        self.published: str | None = None  # which blend the published submission is
        self.costs: dict[str, float] = {}  # projected seconds to score each member's test rows

    def run(self) -> Path:
        """Test rows cheapest member first, each publication as it comes; then the planned blend."""
        for name in self.order():
            left = seconds_left(self.deadline)
            if self.scored and self.costs[name] > left:  # the first is always tried: without it there is nothing
                self.left_out.append(f"{name} (test): projected {self.costs[name]:.0f} s to score, {max(left, 0):.0f} "
                                     f"s left before the deadline: not started")
                continue
            if self._infer(name, self.members[name], "test"):
                self.scored.append(name)
                self._publish_partial()
        if not self.scored:
            raise DeadlineReached(f"no member's test rows were scored before the deadline: {'; '.join(self.left_out)}")
        finished = {n: d for n, d in self.members.items() if n in self.scored}
        held_out = {**finished, **self.judges}  # the judges are compared on the held-out rows, never blended
        # the blend itself runs in the deadline's margin, which is kept for writing the submission
        if seconds_left(self.deadline) > 0 and all(self._infer(n, d, "oof") for n, d in held_out.items()):
            given = {} if len(finished) == len(self.members) else {"members": {n: [str(p) for p in d]
                                                                               for n, d in held_out.items()}}
            self.execute("04_blend", self.run_dir, {**to_parameters(replace(self.blend, **given)), **self.common})
            publish(self.run_dir / "submission.csv", self.target, "kit main", refine=self.published is not None)
            self.published = f"04_blend: {self.blend.weights!r} over {', '.join(finished)}"
        else:
            self.left_out.append("04_blend: the held-out rows were not scored before the deadline; the partial "
                                 "submission stands")
        self._record()
        return self.target

    def order(self) -> list[str]:
        """The members by their projected scoring time on this machine's devices, cheapest first."""
        devices = visible_devices()
        costs = self.costs
        for name, dirs in self.members.items():
            first = read_trained(dirs[0])
            table = read_parquet_keeping_ids(Path(first.tokenized) / "test.parquet")
            passes = 2 if get_member_type(first.member).uses_tta else 1
            costs[name] = sum(projected_seconds(d, table, devices, passes) for d in dirs)
        order = cheapest_first(costs)
        log.info("[kit main] scoring order (cheapest first, projected): "
                 + ", ".join(f"{n} {costs[n]:.0f} s" for n in order))
        return order

    def _infer(self, name: str, dirs: list[Path], split: str) -> bool:
        """``03_infer_two_t4`` on one member's models and split; False (and said) when the deadline stopped it."""
        import papermill  # only the main job needs it

        left = seconds_left(self.deadline)
        params = {"TRAINED": [str(d) for d in dirs], "SPLITS": [split],
                  **to_parameters(InferSettings(deadline=self.deadline)), **self.common}
        try:
            self.execute("03_infer_two_t4", self.run_dir, params, f"{split}-{name}",
                         timeout=None if self.deadline is None else max(left, 0) + KERNEL_GRACE_S)
        except papermill.PapermillExecutionError as err:
            if err.ename != "DeadlineReached":
                raise
            self.left_out.append(f"{name} ({split}): {' '.join(str(err.evalue).split())}")
            return False
        except TimeoutError:  # the notebook's kernel outlived the deadline and its grace: stopped from here
            self.left_out.append(f"{name} ({split}): still running {KERNEL_GRACE_S} s past the deadline: stopped")
            return False
        return True

    def _publish_partial(self) -> None:
        finished = [load_member(n, self.members[n], need_oof=False) for n in self.members if n in self.scored]
        planned = list(self.members)
        mode = self.blend.weights if planned_weights(planned, self.blend.weights) is not None else "equal"
        blended, record = blend_finished(finished, planned, weights=mode, space=self.blend.space)
        if mode != self.blend.weights:
            record["why"] += f" (weights {self.blend.weights!r} are fitted once the held-out rows are scored)"
        local = write_blended_submission(blended, read_trained(finished[0].model_dirs[0]).tokenized,
                                         self.run_dir / "partial" / "submission.csv",
                                         self.blend.sample_submission, overwrite=True)
        publish(local, self.target, "kit main", refine=self.published is not None)
        self.published = f"partial: {record['why']}"
        log.info(f"[kit main] {self.target} written from {', '.join(record['members'])} ({record['why']})")

    def _record(self) -> None:
        record = {"scored": self.scored, "left_out": self.left_out, "published": self.published,
                  "deadline": None if self.deadline is None else time.strftime(
                      "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.deadline))}
        atomic_write(self.run_dir / "session.json", lambda p: p.write_text(json.dumps(record, indent=2)),
                     overwrite=True)
        if self.left_out:
            log.info("[kit main] left out: " + "; ".join(self.left_out))
