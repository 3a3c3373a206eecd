"""The Kaggle submission in one call: trained model folders + the hidden test.csv -> submission.csv.

A Kaggle code-competition submission is *one* notebook, run in a session that has not
seen the training session's files except what was attached (read-only, under
/kaggle/input), and a session that passes its 9 hours leaves no submission at all. :func:`submit`
does the whole inference side there, against a deadline (the budget less a margin):

1. finds every trained model folder under ``model_roots`` (:mod:`kit.workflows.discovery`), any
   number of members and folds, grouped by preset, and checks everything that can fail before the
   first model loads (:mod:`kit.workflows.preflight`); with ``average_folds``, each LoRA member's
   models become one averaged model (:mod:`kit.stages.average`), scored once;
2. tokenizes the test table once per member, exactly as the member was tokenized for
   training (preset, head, token budget and packing read from the model's own record);
3. scores it with every model, cheapest member first — one process per model on GPUs (both T4s per
   model) — publishing a valid submission as soon as the first is scored and refining it as each
   finishes; a model that would not end by the deadline is left out, and said
   (:mod:`kit.workflows.submit_run`, :mod:`kit.workflows.schedule`);
4. blends the members with the blend saved at training time (a ``blend.json`` found
   under the roots: weights or the stacker, space, temperature), or the paper's / equal /
   given weights; over the members that finished when some did not (:mod:`kit.ensemble.partial`);
5. writes a validated ``submission.csv`` (every test id, exactly as given, in order) and
   ``submit.json``: what was scored, what was left out and why, the blend applied.

Nothing is written under the model roots: every cache and prediction goes to a fresh
``<work>/submit/<UTC time>/`` folder, so a rerun in the same session starts clean and
never reads an earlier run's output; the published ``submission.csv`` (default
``<work>/submission.csv``, i.e. /kaggle/working on Kaggle) moves an earlier run's aside.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.env import default_inputs, kaggle_input, work_dir
from ..core.errors import SubmitError
from ..core.files import under
from ..core.log import get_logger
from ..core.signature import settings_function
from ..ensemble.judges import split_judges
from ..ensemble.report import read_saved_blend
from ..ensemble.submission import resolve_sample_submission
from ..stages.average import ADAPTER_WEIGHTS, average_models
from ..store.io import write_json
from ..store.models import read_trained
from ..store.predictions import load_member
from .discovery import choose_saved_blend, find_saved_blends, find_trained_models, is_blend_report
from .preflight import preflight
from .schedule import MARGIN_SHARE, deadline_for
from .settings import SubmitSettings
from .submit_run import SubmitRun

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
    left_out: list[str] = field(default_factory=list)  # models (or passes) the deadline left out, and why


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
        model_dir: dict | None = None,
        sample_submission: str | None = "auto",
        quantization: str | None = None,
        average_folds: bool = False,
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
    started = time.time()
    roots, groups, test_path, out, sample = _inputs(s)
    manifests = preflight(groups, test_path, sample, out, Path(s.work or work_dir()), s.devices, s.tta,
                          s.budget_hours)
    saved, weights, why = _chosen_blend(s, roots, groups)
    holdout = shared_holdout(groups, manifests) if weights == "fit" else {}
    log.info(f"[kit submit] preflight passed in {time.time() - started:.1f} s: models, blend, test ids, output, devices, "
             f"projected time")
    run_dir = Path(s.work or work_dir()) / "submit" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir.mkdir(parents=True, exist_ok=False)
    if s.average_folds:
        groups = _averaged(groups, run_dir)
    log.info(f"[kit submit] {len(groups)} member(s): "
             + ", ".join(f"{n} ({len(d)} model(s))" for n, d in groups.items()) + f"; work folder {run_dir}")
    run = SubmitRun(s, groups, run_dir, deadline_for(started, s.budget_hours), sample, out, saved, weights, holdout)
    run.tokenize(test_path)
    run.score()
    if not run.finished:
        raise SubmitError(f"no member finished scoring within BUDGET_HOURS = {s.budget_hours} (its deadline keeps "
                          f"{100 * MARGIN_SHARE:.0f}% back): {'; '.join(run.left_out)}. Raise the budget, attach fewer "
                          f"or smaller members, or AVERAGE_FOLDS = True (one model per member)")
    target, applied = run.publish(final=True, why=why)
    seconds = time.time() - started
    write_json({"models": {n: [str(d) for d in ds] for n, ds in groups.items()}, "test": str(test_path),
                "blend": applied, "submission": str(target), "seconds": seconds,
                "deadline": {"budget_hours": s.budget_hours, "seconds_from_start": None if run.deadline is None
                             else round(run.deadline - started, 1)},
                "scored": {n: [str(d) for d, _ in fr] for n, fr in run.finished.items()},
                "left_out": run.left_out, "tta_rows": run.tta_rows}, run_dir / "submit.json")
    log.info(f"[kit submit] {len(run.ids)} rows -> {target} in {seconds / 60:.1f} min"
             + (f"; left out: {'; '.join(run.left_out)}" if run.left_out else ""))
    return SubmitResult(target, run_dir, groups, applied, seconds, run.left_out)


def _inputs(s: SubmitSettings):
    """(roots, members' model folders, test table, output path, sample submission), each checked to exist."""
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
    out = Path(s.out) if s.out else work_dir() / "submission.csv"
    return roots, groups, test_path, out, resolve_sample_submission(s.sample_submission, test_path)


def _chosen_blend(s: SubmitSettings, roots: list[Path], groups: dict) -> tuple[dict | None, object, str]:
    """(the saved blend or None, the weights mode, why): a saved blend found or given where ``weights`` allows,
    else the weights asked for (``auto`` without a saved blend: the paper's)."""
    weights = s.weights
    if weights not in ("auto", "saved"):
        return None, weights, f"weights {weights!r} as asked"
    if s.blend_json:
        is_blend_report(Path(s.blend_json))  # a blend report's own file must be whole; a hand-made one is yours
        blend_path = choose_saved_blend([Path(s.blend_json)], list(groups), explicit=True)
    else:
        blend_path = choose_saved_blend(find_saved_blends(roots), list(groups))  # a damaged one stops here
    if blend_path is None and weights == "saved":
        raise SubmitError(f"weights='saved' but no saved blend (a blend report's blend.json) under "
                          f"{', '.join(map(str, roots))}")
    if blend_path is not None:
        saved = read_saved_blend(blend_path)
        log.info(f"[kit submit] blending as saved in {blend_path}: {saved['weights_mode']}")
        return saved, weights, f"the saved blend {blend_path} ({'given' if s.blend_json else 'its members are the models found'})"
    why = (f"weights {s.weights!r}: no saved blend under {', '.join(map(str, roots))}, so the paper's "
           f"(0.7/0.3 for two members, equal otherwise)")
    log.info(f"[kit submit] {why}")
    return None, "paper", why


def _averaged(groups: dict[str, list[Path]], run_dir: Path) -> dict[str, list[Path]]:
    """Each LoRA member's models averaged into one (:func:`kit.stages.average.average_models`) under
    ``run_dir``; a member of one model, or without LoRA weights, as it is (said)."""
    out = {}
    for name, dirs in groups.items():
        if len(dirs) > 1 and all((d / "adapter" / ADAPTER_WEIGHTS).is_file() for d in dirs):
            out[name] = [average_models([str(d) for d in dirs], out=str(under(run_dir, "averaged", name))).out_dir]
        else:
            if len(dirs) > 1:
                log.info(f"[kit submit] {name}: no LoRA weights to average, its {len(dirs)} models are scored apart")
            out[name] = dirs
    return out
