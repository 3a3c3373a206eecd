"""The Kaggle submission in one call: trained model folders + the hidden test.csv -> submission.csv.

A Kaggle code-competition submission is *one* notebook, run in a session that has not
seen the training session's files except what was attached (read-only, under
/kaggle/input). :func:`submit` does the whole inference side there:

1. finds every trained model folder under ``model_roots`` (:mod:`kit.workflows.discovery`), any
   number of members and folds, grouped by preset, and checks everything that can fail before the
   first model loads (:mod:`kit.workflows.preflight`);
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

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.env import default_inputs, kaggle_input, work_dir
from ..core.files import under
from ..core.errors import SubmitError
from ..core.log import get_logger
from ..core.signature import settings_function
from .settings import SubmitSettings
from ..ensemble.combine import apply_saved_blend, blend_members
from ..ensemble.guardrails import apply_saved_guardrails
from ..ensemble.judges import split_judges
from ..ensemble.report import read_saved_blend
from ..ensemble.submission import resolve_sample_submission, write_blended_submission
from ..store.io import publish, write_json
from ..store.models import read_trained
from ..store.predictions import MemberPredictions, load_member, mean_test_predictions
from ..stages.infer import infer_stage
from ..stages.infer_many import infer_isolated
from ..stages.tokenize import tokenize_stage
from .discovery import choose_saved_blend, find_saved_blends, find_trained_models, is_blend_report
from .preflight import member_tokenization, preflight

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
        held = [d for d in dirs if read_trained(d).fold is not None]
        if not held:
            raise SubmitError(f"member {name}: its models were trained on every row (fold 'full'), so none has held-out "
                              f"predictions to fit weights on: train one fold (FOLD = 0) and run 03_infer with SPLITS "
                              f"['oof'] in its session, or pass fixed weights (paper / equal)")
        holdout[name] = load_member(name, held, need_test=False).oof
    return holdout


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
        quantization: str | None = None,
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
    saved, why = None, f"weights {weights!r} as asked"
    if weights in ("auto", "saved"):
        if blend_json:
            is_blend_report(Path(blend_json))  # a blend report's own file must be whole; a hand-made one is yours
            blend_path = choose_saved_blend([Path(blend_json)], list(groups), explicit=True)
        else:
            blend_path = choose_saved_blend(find_saved_blends(roots), list(groups))  # a damaged one stops here
        if blend_path is None and weights == "saved":
            raise SubmitError(f"weights='saved' but no saved blend (a blend report's blend.json) under "
                              f"{', '.join(map(str, roots))}")
        if blend_path is not None:
            saved = read_saved_blend(blend_path)
            why = f"the saved blend {blend_path} ({'given' if blend_json else 'its members are the models found'})"
            log.info(f"[kit submit] blending as saved in {blend_path}: {saved['weights_mode']}")
        else:
            weights = "paper"
            why = (f"weights {s.weights!r}: no saved blend under {', '.join(map(str, roots))}, so the paper's "
                   f"(0.7/0.3 for two members, equal otherwise)")
            log.info(f"[kit submit] {why}")
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
        trained = member_tokenization(name, dirs)
        base = base_model_dirs.get(name)
        tokenized = under(run_dir, "tokenized", name)
        tokenize_stage(name, [], test_path, out=tokenized, max_length=trained.max_length or None,
                       model_dir=base or trained.preset.model_dir, member=trained.member, pack=trained.pack_options)
        files = []
        for i, model_dir in enumerate(dirs):
            pred = under(run_dir, "predictions", name, f"{i}-{model_dir.name}.csv")
            kwargs = dict(tokenized=tokenized, out=pred, devices=devices, tta=tta, max_tokens=max_tokens,
                          budget_hours=budget_hours, quantization=s.quantization)
            if isolate:
                infer_isolated(model_dir, "test", base_model_dir=base, **kwargs)
            else:
                infer_stage(model_dir, "test", base_model_dir=base, **kwargs)
            files.append(pred)
        members.append(MemberPredictions(name, dirs, mean_test_predictions(files), holdout.get(name)))

    if saved is not None:
        blended = apply_saved_blend(members, saved)
        blended, touched = apply_saved_guardrails(blended, saved, under(run_dir, "tokenized", members[0].name))
        applied = {k: saved.get(k) for k in ("members", "weights_mode", "weights", "space", "temperature",
                                             "tie_offset", "stacker", "guardrails")} | {"guardrail_rows_touched": touched,
                                                                                        "why": why}
    else:
        result = blend_members(members, weights, s.space)
        blended = result.test
        applied = {"members": result.members, "weights_mode": result.weights_mode, "weights": result.weights,
                   "space": result.space, "temperature": result.temperature, "tie_offset": result.tie_offset,
                   "oof_rows": result.oof_rows, "why": why,
                   "oof_score": result.report["oof_score"],
                   "oof": None if result.table is None else result.table[["log_loss", "accuracy"]].to_dict("index")}
    local = write_blended_submission(blended, under(run_dir, "tokenized", members[0].name), run_dir / "submission.csv",
                                     sample_submission)
    target = publish(local, out, "kit submit")
    seconds = time.time() - started
    write_json({"models": {n: [str(d) for d in ds] for n, ds in groups.items()}, "test": str(test_path),
                "blend": applied, "submission": str(target), "seconds": seconds}, run_dir / "submit.json")
    log.info(f"[kit submit] {len(blended)} rows -> {target} in {seconds / 60:.1f} min")
    return SubmitResult(target, run_dir, groups, applied, seconds)
