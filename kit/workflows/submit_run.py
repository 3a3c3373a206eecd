"""One ``kit submit`` run against its deadline: tokenize every member, score cheapest first, publish as they finish.

Guarantees (what :class:`SubmitRun` promises :func:`kit.workflows.submit.submit`):

* every member's test rows are tokenized before any model loads (cheap, and it lets each model's cost be
  projected: :func:`kit.workflows.schedule.projected_seconds`);
* members are scored cheapest first; a valid ``submission.csv`` is published as soon as the first model is
  scored and rewritten (in one rename) as each further model finishes, blending what finished
  (:func:`kit.ensemble.partial.blend_finished`; every member finished: the planned blend);
* no model starts that is projected not to end by the deadline, and a model still scoring at the deadline
  is stopped (:class:`~kit.core.errors.DeadlineReached`); each one left out is recorded with its reason;
* with swap TTA, a position-dependent member scores both passes at once where the time of every member
  still to come allows it; otherwise it scores one pass and, once every member is scored, its swapped pass
  goes to the rows the blend is least sure of, as many as the time left allows (:attr:`tta_rows`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..core.errors import DeadlineReached
from ..core.files import under
from ..core.log import get_logger
from ..core.schema import PROB_COLUMNS
from ..ensemble.combine import apply_saved_blend, blend_members
from ..ensemble.guardrails import apply_saved_guardrails
from ..ensemble.partial import blend_finished
from ..ensemble.submission import write_blended_submission
from ..members import get_member_type
from ..ops.devices import visible_devices
from ..stages.infer import infer_stage
from ..stages.infer_many import infer_isolated
from ..stages.tokenize import tokenize_stage
from ..store.io import manifest_path, publish, read_parquet_keeping_ids
from ..store.manifest import read_manifest
from ..store.models import read_trained
from ..store.predictions import MemberPredictions, mean_predictions, read_predictions
from .preflight import member_tokenization, timing_parts
from .schedule import cheapest_first, projected_seconds, seconds_left, uncertain_first

log = get_logger(__name__)

__all__ = ["SubmitRun"]


class SubmitRun:
    """The scoring side of one submit (see the module docstring): ``tokenize``, then ``score``, then
    ``publish(final=True)``. ``finished``: member -> [(model folder, test predictions)];
    ``left_out``: what the deadline left out, and why; ``tta_rows``: model -> rows given the swapped pass
    after the others were scored."""

    def __init__(self, s, groups: dict[str, list[Path]], run_dir: Path, deadline: float | None, sample, out: Path,
                 saved: dict | None, weights, holdout: dict):
        self.s, self.groups, self.run_dir, self.deadline = s, groups, run_dir, deadline
        self.sample, self.out, self.saved, self.weights, self.holdout = sample, out, saved, weights, holdout
        self.base = s.model_dir or {}
        self.devices = list(s.devices or visible_devices())
        self.isolate = torch.cuda.is_available() if s.isolate is None else s.isolate
        self.tokenized: dict[str, Path] = {}
        self.finished: dict[str, list[tuple[Path, pd.DataFrame]]] = {}
        self.deferred: list[tuple[str, int, Path]] = []  # scored one pass; the swapped pass waits for time
        self.left_out: list[str] = []
        self.tta_rows: dict[str, int] = {}
        self.ids: list[str] = []
        self.published = False

    def tokenize(self, test_path: Path) -> None:
        """Every member's test rows, packed as the member was trained (each member's first fold's record)."""
        for name, dirs in self.groups.items():
            trained = member_tokenization(name, dirs)
            base = self.base.get(name)
            self.tokenized[name] = under(self.run_dir, "tokenized", name)
            tokenize_stage(name, [], test_path, out=self.tokenized[name], max_length=trained.max_length or None,
                           model_dir=base or trained.preset.model_dir, member=trained.member,
                           pack=trained.pack_options)
        first = next(iter(self.tokenized.values()))
        self.ids = read_parquet_keeping_ids(first / "test.parquet", columns=["id"])["id"].tolist()

    def score(self) -> None:
        """Every model, cheapest member first, within the deadline; then the deferred swapped passes."""
        tables = {name: read_parquet_keeping_ids(self.tokenized[name] / "test.parquet") for name in self.groups}
        costs = {(name, i): projected_seconds(d, tables[name], self.devices, 1, self.base.get(name))
                 for name, dirs in self.groups.items() for i, d in enumerate(dirs)}
        by_member = {name: sum(c for (n, _), c in costs.items() if n == name) for name in self.groups}
        queue = [(name, i, d) for name in cheapest_first(by_member) for i, d in enumerate(self.groups[name])]
        log.info("[kit submit] scoring order (cheapest first, projected): "
                 + ", ".join(f"{n} {by_member[n]:.0f} s" for n in cheapest_first(by_member)))
        for pos, (name, i, d) in enumerate(queue):
            cost, left = costs[(name, i)], seconds_left(self.deadline)
            if self.finished and cost > left:  # the first model is always tried: without it there is nothing
                self.left_out.append(f"{name}/{d.name}: projected {cost:.0f} s to score, {left:.0f} s left")
                continue
            reserve = sum(costs[(n, k)] for n, k, _ in queue[pos + 1:])
            member = get_member_type(read_trained(d).member)
            both = self.s.tta and member.uses_tta and (self.deadline is None or 2 * cost + reserve <= left)
            try:
                frame = self._infer(name, i, d, tta=both)
            except DeadlineReached as err:
                self.left_out.append(f"{name}/{d.name}: {err}")
                continue
            self.finished.setdefault(name, []).append((d, frame))
            if self.s.tta and member.uses_tta and not both:
                self.deferred.append((name, len(self.finished[name]) - 1, d))
            if len(self.finished) < len(self.groups) or pos < len(queue) - 1:
                self.publish()
        if self.deferred and self.finished:
            self._swapped_passes()

    def _infer(self, name: str, i: int, d: Path, tta: bool, ids: list[str] | None = None) -> pd.DataFrame:
        tag = "-swap" if ids is not None else ""
        pred = under(self.run_dir, "predictions", name, f"{i}-{d.name}{tag}.csv")
        kwargs = dict(tokenized=self.tokenized[name], out=pred, devices=self.s.devices, tta=tta,
                      max_tokens=self.s.max_tokens, budget_hours=self.s.budget_hours,
                      quantization=self.s.quantization, ids=ids, deadline=self.deadline)
        (infer_isolated if self.isolate else infer_stage)(d, "test", model_dir=self.base.get(name), **kwargs)
        return read_predictions(pred, "test")

    def _swapped_passes(self) -> None:
        """The deferred models' swapped passes, on the rows the current blend is least sure of first, as many
        as each model's measured pace fits into the time left."""
        blended, _ = self._blend()
        order = [blended["id"].iloc[k] for k in uncertain_first(blended[PROB_COLUMNS].to_numpy())]
        for name, k, d in self.deferred:
            key = f"{name}/{d.name}"
            pred = under(self.run_dir, "predictions", name, f"{self.groups[name].index(d)}-{d.name}.csv")
            timing = read_manifest(manifest_path(pred), "predictions", "").get("timing") or {}
            fixed, per_row = timing_parts(timing) if timing.get("rows") else (0.0, 0.0)
            left = seconds_left(self.deadline)
            n = len(order) if per_row <= 0 or self.deadline is None else int((left - fixed) / (2 * per_row))
            if n < 1:
                self.left_out.append(f"{key}: swap TTA (no time left for its swapped pass)")
                continue
            rows = order[:n]
            try:
                both = self._infer(name, self.groups[name].index(d), d, tta=True, ids=rows)
            except DeadlineReached as err:
                self.left_out.append(f"{key}: swap TTA ({err})")
                continue
            frame = self.finished[name][k][1].set_index("id")
            frame.loc[both["id"], PROB_COLUMNS] = both.set_index("id")[PROB_COLUMNS].to_numpy()
            self.finished[name][k] = (d, frame.reset_index())
            self.tta_rows[key] = len(rows)
            if len(rows) < len(order):
                self.left_out.append(f"{key}: swap TTA on {len(rows)} of {len(order)} rows (the least certain)")
            self.publish()

    def _members(self) -> list[MemberPredictions]:
        members = []
        for name in self.groups:  # the planned order: a blend's weights follow it
            if name in self.finished:
                test = mean_predictions([f for _, f in self.finished[name]])
                members.append(MemberPredictions(name, [d for d, _ in self.finished[name]], test,
                                                 self.holdout.get(name)))
        return members

    def _blend(self) -> tuple[pd.DataFrame, dict]:
        members = self._members()
        if len(members) < len(self.groups):
            return blend_finished(members, list(self.groups), saved=self.saved, weights=self.weights,
                                  space=self.s.space)
        if self.saved is not None:
            blended = apply_saved_blend(members, self.saved)
            blended, touched = apply_saved_guardrails(blended, self.saved, self.tokenized[members[0].name])
            return blended, {k: self.saved.get(k) for k in ("members", "weights_mode", "weights", "space",
                                                             "temperature", "tie_offset", "stacker", "guardrails")} \
                | {"guardrail_rows_touched": touched}
        result = blend_members(members, self.weights, self.s.space)
        return result.test, {"members": result.members, "weights_mode": result.weights_mode, "weights": result.weights,
                             "space": result.space, "temperature": result.temperature,
                             "tie_offset": result.tie_offset, "oof_rows": result.oof_rows,
                             "oof_score": result.report["oof_score"],
                             "oof": None if result.table is None else
                             result.table[["log_loss", "accuracy"]].to_dict("index")}

    def publish(self, final: bool = False, why: str = "") -> tuple[Path, dict]:
        """The blend of what finished, validated and published (an earlier version of this run's replaced)."""
        blended, applied = self._blend()
        if final and why:
            applied["why"] = f"{applied['why']} (planned: {why})" if applied.get("why") else why
        first = next(name for name in self.groups if name in self.finished)
        local = write_blended_submission(blended, self.tokenized[first], self.run_dir / "submission.csv",
                                         self.sample, overwrite=True)
        target = publish(local, self.out, "kit submit", refine=self.published)
        self.published = True
        if not final:
            log.info(f"[kit submit] {target} written from {', '.join(applied['members'])} ({applied.get('why', '')})")
        return target, applied
