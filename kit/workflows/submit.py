"""The Kaggle submission in one call: trained model folders + the hidden test.csv -> submission.csv.

A Kaggle code-competition submission is *one* notebook, run in a session that has not
seen the training session's files except what was attached (read-only, under
/kaggle/input). :func:`submit` does the whole inference side there:

1. finds every trained model folder under ``model_roots`` (a ``config.json`` beside an
   ``adapter/``), any number of members and folds, grouped by preset;
2. tokenizes the test table once per member, exactly as the member was tokenized for
   training (preset, head, token budget and packing read from the model's own record);
3. scores it with every model — one process per model on GPUs (both T4s per model);
4. blends the members with the blend saved at training time (a ``blend.json`` found
   under the roots: weights or the stacker, space, temperature), or the paper's / equal /
   given weights;
5. writes a validated ``submission.csv`` (every test id, exactly as given, in order).

Nothing is written under the model roots: every cache and prediction goes to a fresh
``<work>/submit/<UTC time>/`` folder, so a rerun in the same session starts clean and
never reads an earlier run's output; the published ``submission.csv`` (default
``<work>/submission.csv``, i.e. /kaggle/working on Kaggle) moves an earlier one aside.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..core.env import default_inputs, kaggle_input, work_dir
from ..core.errors import StaleOutput, SubmitError
from ..core.log import get_logger
from ..core.presets import Preset
from ..core.signature import settings_function
from .settings import SubmitSettings
from ..ensemble.combine import apply_saved_blend, blend_members
from ..ensemble.guardrails import apply_saved_guardrails
from ..ensemble.judges import split_judges
from ..ensemble.report import read_saved_blend
from ..ensemble.submission import resolve_sample_submission, write_blended_submission
from ..store.io import publish, write_json
from ..data.ingest import load_conversations
from ..members import get_member_type
from ..ops.devices import check_devices, device_names, visible_devices
from ..store.io import read_csv_keeping_ids
from ..store.manifest import MANIFEST, check_output, read_manifest
from ..store.models import check_trained, finished_training, group_by_preset, is_trained_output, read_model_config
from ..store.predictions import MemberPredictions, load_member, mean_test_predictions
from ..stages.infer import infer_isolated, infer_stage
from ..stages.tokenize import tokenize_stage

log = get_logger(__name__)


@dataclass
class SubmitResult:
    """What ``kit submit`` did: the published submission, its run folder (caches, predictions,
    submit.json), the members found and the blend applied, the seconds taken."""

    submission: Path
    run_dir: Path
    members: dict[str, list[Path]]
    weights: dict = field(default_factory=dict)  # what was applied (a saved blend or a weights mode)
    seconds: float = 0.0


def in_kit_results(path: Path) -> bool:
    """True for a path inside the kit repository's own ``results/`` (the folder beside ``kit/``): its
    committed reports are measurements, never trained outputs or blends to submit with — also when
    the whole repository is attached as a dataset (``/kaggle/input/<kit>/results``)."""
    return any(folder.name == "results" and (folder.parent / "kit" / "__init__.py").is_file()
               for folder in path.parents)


def find_trained_models(roots: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Every finished train-stage output under ``roots`` (recognised by its train manifest, at any
    depth; the kit's own ``results/`` excepted: :func:`in_kit_results`), grouped by the preset it
    was trained from, stronger presets first; folds sorted."""
    found = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise SubmitError(f"model root {root} is not a folder: attach the trained models' dataset "
                              f"(MODEL_ROOTS in the notebook, --model-roots on the CLI)")
        found += [cfg.parent for cfg in sorted(root.rglob("config.json")) if not in_kit_results(cfg)
                  and is_trained_output(cfg.parent) and finished_training(cfg.parent)]
    return group_by_preset(found)


def find_saved_blends(roots: Sequence[str | Path]) -> list[Path]:
    """Every saved blend under ``roots``: a ``blend.json`` that a blend stage wrote — its folder's
    complete manifest (stage ``blend``) vouches for its bytes. Anything else named blend.json (an
    example, an edited file) is not a candidate, nor is any blend in the kit's own ``results/``
    (:func:`in_kit_results`)."""
    found = []
    for path in sorted({p.resolve() for root in map(Path, roots) for p in root.rglob("blend.json")}):
        if in_kit_results(path):
            continue
        try:
            manifest = read_manifest(path.parent / MANIFEST, str(path.parent), "")
            if manifest.get("stage") == "blend":
                check_output(manifest, "blend.json", path, str(path.parent), "")
                found.append(path)
        except StaleOutput:
            log.info(f"[kit submit] {path}: not a blend report's own file (no matching manifest): not a candidate")
    return found


def choose_saved_blend(candidates: Sequence[Path], members: Sequence[str], explicit: bool = False) -> Path | None:
    """The saved blend whose members are exactly ``members`` (the models found); None when there is
    no candidate at all; a SubmitError naming every candidate and its members otherwise."""
    if not candidates:
        return None
    blends = {path: read_saved_blend(path) for path in candidates}
    matching = [path for path, saved in blends.items() if sorted(saved["members"]) == sorted(members)]
    if len(matching) == 1:
        return matching[0]
    listed = "; ".join(f"{path} (members {saved['members']})" for path, saved in blends.items())
    if explicit:
        raise SubmitError(f"the saved blend {listed} does not match the models found {list(members)}: attach the "
                          f"same members, or pass WEIGHTS = 'paper' / 'equal' / [w1, ...] (--weights)")
    why = "several match" if matching else "none matches"
    raise SubmitError(f"{len(blends)} saved blend(s) under the roots, {why} the models found {list(members)}: {listed}. "
                      f"Pass the one to use (BLEND_JSON, --blend-json) or fixed weights (WEIGHTS = 'paper' / 'equal')")


def shared_holdout(groups: dict[str, list[Path]], manifests: dict[Path, dict]) -> dict:
    """Each member's held-out predictions (``predictions/oof.csv`` beside its models, vouched for by
    their manifests), for weights fitted where members trained apart meet: every member must have
    been trained on the same fold assignment (the same fold fingerprint in the train ``manifests``
    that :func:`preflight` checked) — the shared holdout."""
    fingerprints = {}
    for name, dirs in groups.items():
        for d in dirs:
            folds = manifests[d].get("inputs", {}).get("cache", {}).get("folds")
            fingerprints.setdefault(folds, []).append(f"{name}:{d.name}")
    if len(fingerprints) > 1:
        listed = "; ".join(f"{', '.join(v)} (folds {str(k)[:12]})" for k, v in fingerprints.items())
        raise SubmitError(f"fitted weights need one held-out split shared by every member, but the models were trained "
                          f"on different fold assignments: {listed}. Tokenize every member's session with the same "
                          f"--train, --folds and --seed (TRAIN, N_FOLDS, SEED), or pass fixed weights (paper / equal)")
    holdout = {}
    for name, dirs in groups.items():
        held = [d for d in dirs if read_model_config(d)["fold"] is not None]
        if not held:
            raise SubmitError(f"member {name}: its models were trained on every row (fold 'full'), so none has held-out "
                              f"predictions to fit weights on: train one fold (FOLD = 0) and run 03_infer with SPLITS "
                              f"['oof'] in its session, or pass fixed weights (paper / equal)")
        holdout[name] = load_member(name, held, need_test=False).oof
    return holdout


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


def project_scoring_hours(groups: dict[str, list[Path]], test_rows: int, devices: Sequence[str], tta: bool,
                          budget_hours: float | None) -> float | None:
    """The hidden test's scoring time, projected before any model loads: each model's recorded
    seconds per row and pass (:func:`recorded_timing`) times the test rows and the passes it will
    make (2 with swap TTA for a member type that uses it), over the devices it will have (timed on
    2 T4s and run on 2 T4s: as recorded; on more or fewer devices of the same kind: scaled by
    their number). Models with no recorded timing are left out (said). A projection over
    ``budget_hours`` is a SubmitError naming the slowest models and what to change."""
    now = device_names(devices)
    total, per_model, untimed = 0.0, [], []
    for name, dirs in groups.items():
        member = get_member_type(Preset.from_dict(read_model_config(dirs[0])["preset"]).member)
        passes = 2 if tta and member.uses_tta else 1
        for d in dirs:
            timing = recorded_timing(d)
            if timing is None:
                untimed.append(f"{name}/{d.name}")
                continue
            per_row = timing["seconds"] / (timing["rows"] * max(timing.get("passes") or 1, 1))
            then = timing.get("device_names") or timing.get("devices") or ["cpu"]
            scale = len(then) / len(now) if sorted(set(then)) == sorted(set(now)) else 1.0
            hours = test_rows * passes * per_row * scale / 3600
            total += hours
            per_model.append((hours, f"{name}/{d.name} {hours:.2f} h (timed on {len(then)}x {then[0]})"))
    if untimed:
        log.info(f"[kit submit] no recorded scoring time for {', '.join(untimed)}: left out of the projection "
                 f"(the infer stage projects each one after its first batches)")
    if not per_model:
        return None
    slowest = ", ".join(text for _, text in sorted(per_model, reverse=True)[:3])
    log.info(f"[kit submit] projected scoring time for {test_rows} test rows: {total:.2f} h ({slowest})")
    if budget_hours is not None and total > budget_hours:
        raise SubmitError(f"projected scoring time {total:.2f} h for {test_rows} test rows exceeds BUDGET_HOURS = "
                          f"{budget_hours} ({slowest}): attach fewer folds per member, turn swap TTA off (TTA = False), "
                          f"or pass BUDGET_HOURS = None (--budget-hours none) to go on anyway")
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
            config = read_model_config(d)
            get_member_type(Preset.from_dict(config["preset"]).member)
            if (config.get("train") or {}).get("residual_on"):
                raise SubmitError(f"{d} is a residual member (trained on {config['train']['residual_on']}'s "
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


def _member_tokenization(name: str, dirs: list[Path]) -> tuple[dict, dict | None]:
    """(preset, pack config) every fold of a member was tokenized with — they must agree."""
    records = [read_model_config(d) for d in dirs]
    for rec in records:  # records of older kits name the member type "head"
        rec["preset"] = Preset.from_dict(rec["preset"]).to_dict()
    keys = ("name", "kind", "model_dir", "max_length", "member")
    first = records[0]
    for d, rec in zip(dirs[1:], records[1:]):
        same_preset = all(rec["preset"].get(k) == first["preset"].get(k) for k in keys)
        if not same_preset or rec["tokenization"].get("pack") != first["tokenization"].get("pack"):
            raise SubmitError(f"member {name}: {d} was tokenized differently from {dirs[0]} (backbone, member type or "
                              f"token budget): submit them as separate members or retrain alike")
    return first["preset"], first["tokenization"].get("pack")


@settings_function(SubmitSettings)
def submit(
        model_roots: list[str] | None = None,
        test: str | None = None,
        weights: str = "auto",
        blend_json: str | None = None,
        space: str = "prob",
        out: str | None = None,
        work: str | None = None,
        devices: list[str] | None = None,
        isolate: bool | None = None,
        tta: bool = True,
        max_tokens: int | None = None,
        budget_hours: float | None = 9.0,
        base_model_dirs: dict | None = None,
        sample_submission: str | None = "auto",
) -> SubmitResult:
    """Tokenize -> score -> blend -> submission.csv for the test table (see the module docstring).

    Every parameter is a field of :class:`kit.workflows.settings.SubmitSettings`: its type and default are in the signature, its
    meaning under Args (generated from the field's help).

    Returns:
        :class:`SubmitResult`: the published submission, the run folder, the members and the
        blend applied.

    Example:
        >>> submit(["artifacts/models"], "data/kaggle/test.csv", weights="equal")  # doctest: +SKIP
    """
    s = SubmitSettings(**locals())
    weights, blend_json, devices, tta, max_tokens = s.weights, s.blend_json, s.devices, s.tta, s.max_tokens
    budget_hours, sample_submission, out = s.budget_hours, s.sample_submission, s.out
    started = time.time()
    roots = [Path(r) for r in (s.model_roots or [kaggle_input()])]
    groups, judges = split_judges(find_trained_models(roots))
    if judges:
        log.info(f"[kit submit] {', '.join(judges)}: zero-shot judge(s), compared in reports, not submitted: skipped")
    if not groups:
        raise SubmitError(f"no trained models (config.json + adapter/) under {', '.join(map(str, roots))}: "
                          f"attach the training session's output")
    test_path = Path(s.test) if s.test else Path(default_inputs()["test"])
    if not test_path.is_file():
        raise SubmitError(f"test table {test_path} not found (TEST in the notebook, --test on the CLI)")
    out = Path(out) if out else work_dir() / "submission.csv"
    sample_submission = resolve_sample_submission(sample_submission, test_path)
    manifests = preflight(groups, test_path, sample_submission, out, Path(s.work or work_dir()), devices, tta,
                          budget_hours)
    saved = None
    if weights in ("auto", "saved"):
        if blend_json:
            blend_path = choose_saved_blend([Path(blend_json)], list(groups), explicit=True)
        else:
            blend_path = choose_saved_blend(find_saved_blends(roots), list(groups))
        if blend_path is None and weights == "saved":
            raise SubmitError(f"weights='saved' but no saved blend (a blend report's blend.json) under "
                              f"{', '.join(map(str, roots))}")
        if blend_path is not None:
            saved = read_saved_blend(blend_path)
            log.info(f"[kit submit] blending as saved in {blend_path}: {saved['weights_mode']}")
        else:
            weights = "paper"
            log.info("[kit submit] no saved blend found: the paper's weights (0.7/0.3 for two members, equal "
                     "otherwise)")
    holdout = shared_holdout(groups, manifests) if weights == "fit" else {}
    log.info(f"[kit submit] preflight passed in {time.time() - started:.1f} s: models, blend, test ids, output, devices, "
             f"projected time")
    base_model_dirs = s.base_model_dirs or {}
    isolate = torch.cuda.is_available() if s.isolate is None else s.isolate

    run_dir = Path(s.work or work_dir()) / "submit" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir.mkdir(parents=True, exist_ok=False)
    log.info(f"[kit submit] {len(groups)} member(s): "
             + ", ".join(f"{n} ({len(d)} model(s))" for n, d in groups.items()) + f"; work folder {run_dir}")
    members = []
    for name, dirs in groups.items():
        preset, pack = _member_tokenization(name, dirs)
        base = base_model_dirs.get(name)
        tokenized = run_dir / "tokenized" / name
        tokenize_stage(name, [], test_path, out=tokenized, max_length=preset.get("max_length") or None,
                       model_dir=base or preset.get("model_dir"), member=preset["member"],
                       pack={k: v for k, v in pack.items() if k != "max_length"} if pack else None)
        files = []
        for i, model_dir in enumerate(dirs):
            pred = run_dir / "predictions" / name / f"{i}-{model_dir.name}.csv"
            kwargs = dict(tokenized=tokenized, out=pred, devices=devices, tta=tta, max_tokens=max_tokens,
                          budget_hours=budget_hours)
            if isolate:
                infer_isolated(model_dir, "test", base_model_dir=base, **kwargs)
            else:
                infer_stage(model_dir, "test", base_model_dir=base, **kwargs)
            files.append(pred)
        members.append(MemberPredictions(name, dirs, mean_test_predictions(files), holdout.get(name)))

    if saved is not None:
        blended = apply_saved_blend(members, saved)
        blended, touched = apply_saved_guardrails(blended, saved, run_dir / "tokenized" / members[0].name)
        applied = {k: saved.get(k) for k in ("members", "weights_mode", "weights", "space", "temperature", "stacker",
                                             "guardrails")} | {"guardrail_rows_touched": touched}
    else:
        result = blend_members(members, weights, s.space)
        blended = result.test
        applied = {"members": result.members, "weights_mode": result.weights_mode, "weights": result.weights,
                   "space": result.space, "temperature": result.temperature, "oof_rows": result.oof_rows,
                   "oof_score": result.report["oof_score"],
                   "oof": None if result.table is None else result.table[["log_loss", "accuracy"]].to_dict("index")}
    local = write_blended_submission(blended, run_dir / "tokenized" / members[0].name, run_dir / "submission.csv",
                                     sample_submission)
    target = publish(local, out, "kit submit")
    seconds = time.time() - started
    write_json({"models": {n: [str(d) for d in ds] for n, ds in groups.items()}, "test": str(test_path),
                "blend": applied, "submission": str(target), "seconds": seconds}, run_dir / "submit.json")
    log.info(f"[kit submit] {len(blended)} rows -> {target} in {seconds / 60:.1f} min")
    return SubmitResult(target, run_dir, groups, applied, seconds)
