"""``kit submit``'s preflight: everything that can fail before the first model loads, each as one line.

Every model folder whole (all its fingerprinted files), pickle-free and of a known member type;
the folds of a member tokenized alike; the test table readable and its ids those of the sample
submission; the output and work folders writable; the devices there; the projected scoring time
(from each model's recorded timing) against the budget: what will fit is said, and only a budget that not even
the cheapest member fits stops here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..core.errors import StaleOutput, SubmitError
from ..core.log import get_logger
from ..data.ingest import load_conversations
from ..members import get_member_type
from ..ops.devices import check_devices, device_names, visible_devices
from ..store.io import read_csv_keeping_ids
from ..store.manifest import read_manifest
from ..store.models import TrainedModel, check_trained, read_trained

log = get_logger(__name__)


def recorded_timing(model_dir: Path) -> dict | None:
    """How fast ``model_dir`` scored rows when its session ran the infer stage (the ``timing`` of
    its predictions' manifests, held-out rows preferred: they come from the training table, as
    the hidden test rows do); None when none was recorded (scores reused from the train stage)."""
    for split in ("oof", "test"):
        path = model_dir / "predictions" / f"{split}.manifest.json"
        try:
            timing = read_manifest(path, "predictions", "").get("timing")
        except StaleOutput:
            continue
        if timing and timing.get("rows") and timing.get("seconds") is not None:
            return timing
    return None


# a call's own fixed costs (a first batch, building the features) spread over fewer rows than this make the
# seconds per row too high to project from (results/projection.md measures the projection against the truth)
MIN_TIMED_ROWS = 100


def timing_parts(timing: dict) -> tuple[float, float]:
    """(seconds paid once — loading the model, a warm-up's one-off costs —, seconds per row and pass) of a
    recorded timing: the pace after the run's warm-up (its first fifth of the tokens) is the per-row cost;
    what the warm-up took beyond that pace is paid once. A record of an older kit holds only the total: all of it per row, which overstates a quick member whose loading
    dominates the few rows it was timed on."""
    rows_passes = timing["rows"] * max(timing.get("passes") or 1, 1)
    if timing.get("score_seconds") is None:
        return 0.0, timing["seconds"] / rows_passes
    load, score, warm = float(timing.get("load_seconds") or 0.0), float(timing["score_seconds"]), timing.get("warm_up")
    if not warm or not 0 < warm["share"] < 1 or warm["seconds"] >= score:
        return load, score / rows_passes
    # past the warm-up the run went at its steady pace; the warm-up's excess over that pace is paid once
    per_row = (score - warm["seconds"]) / (rows_passes * (1 - warm["share"]))
    return load + max(0.0, warm["seconds"] - warm["share"] * rows_passes * per_row), per_row


def recorded_seconds(timing: dict | None, rows: int, passes: int, devices: Sequence[str],
                     same_kind_only: bool = False) -> float | None:
    """Seconds to score ``rows`` rows ``passes`` times on ``devices`` (names), from a recorded ``timing``: its
    load once, then its pace per row and pass (:func:`timing_parts`), scaled by the number of devices when they
    are of the kind it was timed on. None without a record of at least :data:`MIN_TIMED_ROWS` rows, or (with
    ``same_kind_only``) one timed on devices of another kind."""
    if timing is None or timing["rows"] < MIN_TIMED_ROWS:
        return None
    then = timing.get("device_names") or timing.get("devices") or ["cpu"]
    alike = sorted(set(then)) == sorted(set(devices))
    if same_kind_only and not alike:
        return None
    fixed, per_row = timing_parts(timing)
    return fixed + rows * passes * per_row * (len(then) / len(devices) if alike else 1.0)


def project_scoring_hours(groups: dict[str, list[Path]], test_rows: int, devices: Sequence[str], tta: bool,
                          budget_hours: float | None) -> float | None:
    """The hidden test's scoring time, projected before any model loads: each model's recorded
    seconds per row and pass (:func:`recorded_timing`) times the test rows and the passes it will
    make (2 with swap TTA for a member type that uses it), over the devices it will have (timed on
    2 T4s and run on 2 T4s: as recorded; on more or fewer devices of the same kind: scaled by
    their number). Models with no recorded timing are left out (said).

    Over ``budget_hours``, submit's deadline keeps the submission (cheapest member first): what will fit and
    what will be left out is said now. A SubmitError only when even the cheapest member's projection exceeds
    the budget: then no submission could be written."""
    now = device_names(devices)
    total, per_model, untimed, by_member = 0.0, [], [], {}
    for name, dirs in groups.items():
        member = get_member_type(read_trained(dirs[0]).member)
        passes = 2 if tta and member.uses_tta else 1
        for d in dirs:
            timing = recorded_timing(d)
            seconds = recorded_seconds(timing, test_rows, passes, now)
            if seconds is None:
                untimed.append(f"{name}/{d.name}" + (f" (timed on {timing['rows']} rows only)" if timing else ""))
                continue
            then = timing.get("device_names") or timing.get("devices") or ["cpu"]
            hours = seconds / 3600
            total += hours
            by_member[name] = by_member.get(name, 0.0) + hours
            per_model.append((hours, f"{name}/{d.name} {hours:.2f} h (timed on {len(then)}x {then[0]})"))
    if untimed:
        log.info(f"[kit submit] cannot project the scoring time of {', '.join(untimed)}: no recorded timing on at "
                 f"least {MIN_TIMED_ROWS} rows, so left out of the projection (the infer stage projects each one "
                 f"after its first batches)")
    if not per_model:
        return None
    slowest = ", ".join(text for _, text in sorted(per_model, reverse=True)[:3])
    log.info(f"[kit submit] projected scoring time for {test_rows} test rows: {total:.2f} h ({slowest})")
    if budget_hours is not None and total > budget_hours:
        cheapest = min(by_member, key=by_member.get)
        if by_member[cheapest] > budget_hours:
            raise SubmitError(f"projected scoring time {total:.2f} h for {test_rows} test rows exceeds BUDGET_HOURS = "
                              f"{budget_hours} even for the cheapest member, {cheapest} ({by_member[cheapest]:.2f} h; "
                              f"{slowest}): attach fewer folds (or AVERAGE_FOLDS = True), turn swap TTA off (TTA = "
                              f"False), or pass BUDGET_HOURS = None (--budget-hours none) to go on anyway")
        fits, used = [], 0.0
        for name in sorted(by_member, key=by_member.get):
            if used + by_member[name] <= budget_hours:
                fits.append(name)
                used += by_member[name]
        log.warning(f"[kit submit] projected {total:.2f} h exceeds BUDGET_HOURS = {budget_hours}: scoring goes "
                    f"cheapest member first against the deadline; projected to fit: {', '.join(fits)}; projected to "
                    f"be left out (in part or whole): {', '.join(n for n in by_member if n not in fits)}. To fit more: "
                    f"AVERAGE_FOLDS = True, fewer folds, TTA = False")
    return total


def preflight(groups: dict[str, list[Path]], test_path: Path, sample_submission, out: Path, work: Path,
              devices: Sequence[str] | None, tta: bool = True, budget_hours: float | None = None) -> dict[Path, dict]:
    """Everything that can fail before the first model loads, each as one line: every model folder
    whole, free of pickles and of a known member type; the test table readable; its ids against the
    sample submission's (ids, not row counts); the output and work folders writable; the devices
    there; the projected scoring time within ``budget_hours`` (:func:`project_scoring_hours`).
    Returns each model folder's checked train manifest."""
    manifests = {}
    for name, dirs in groups.items():
        for d in dirs:
            manifests[d] = check_trained(d)
            trained = read_trained(d)
            get_member_type(trained.member)
            if trained.train.get("residual_on"):
                raise SubmitError(f"{d} is a residual member (trained on {trained.train['residual_on']}'s "
                                  f"out-of-fold logits): kit submit cannot score its base on the hidden test yet; "
                                  f"submit the member trained plainly, blended with the base")
    test_ids = load_conversations(test_path, labelled=False).frame["id"].tolist()
    if sample_submission is not None and Path(sample_submission).is_file():
        sample_ids = read_csv_keeping_ids(sample_submission, usecols=["id"])["id"].tolist()
        if set(sample_ids) != set(test_ids):
            absent = [i for i in test_ids if i not in set(sample_ids)]
            raise SubmitError(f"{test_path} and {sample_submission} hold different ids ({len(test_ids)} test rows, "
                              f"{len(sample_ids)} sample rows, {len(absent)} test ids not in the sample, e.g. "
                              f"{absent[:3]}): pass the sample that goes with this test table, or validate against "
                              f"the test ids alone (SAMPLE_SUBMISSION = None, --sample-submission none)")
    for folder in (out.parent, work):
        probe = folder
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise SubmitError(f"{folder} cannot be made: {probe} is a file, not a folder: pass OUT / WORK (--out, "
                              f"--work) under a folder")
        if not os.access(probe, os.W_OK):
            raise SubmitError(f"{folder} cannot be written (read-only; on Kaggle only /kaggle/working is writable): "
                              f"pass OUT / WORK (--out, --work) under a writable folder")
    if devices:
        check_devices(list(devices))
    project_scoring_hours(groups, len(test_ids), list(devices or visible_devices()), tta, budget_hours)
    return manifests


def member_tokenization(name: str, dirs: list[Path]) -> TrainedModel:
    """The record of the member's first fold, once every fold is checked to have been tokenized alike
    (backbone, member type, token budget, packing): how the hidden test rows must be packed."""
    records = [read_trained(d) for d in dirs]
    keys = ("name", "kind", "model_dir", "max_length", "member")
    first = records[0]
    for d, rec in zip(dirs[1:], records[1:]):
        same_preset = all(getattr(rec.preset, k) == getattr(first.preset, k) for k in keys)
        if not same_preset or rec.pack_options != first.pack_options:
            raise SubmitError(f"member {name}: {d} was tokenized differently from {dirs[0]} (backbone, member type or "
                              f"token budget): submit them as separate members or retrain alike")
    return first
