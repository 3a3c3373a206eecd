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

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .blend import (MEMBER_ORDER, Member, apply_saved_blend, apply_saved_guardrails, blend_members,
                    mean_test_predictions, write_blended_submission)
from .env import default_inputs, kaggle_input, work_dir
from .inference import finished_training
from .io import publish, write_json


class SubmitError(ValueError):
    pass


@dataclass
class SubmitResult:
    submission: Path
    run_dir: Path
    members: dict[str, list[Path]]
    weights: dict = field(default_factory=dict)  # what was applied (a saved blend or a weights mode)
    seconds: float = 0.0


def find_trained_models(roots: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Every train-stage output under ``roots`` (a folder with ``config.json`` and ``adapter/``),
    grouped by the preset it was trained from, stronger presets first; folds sorted."""
    groups: dict[str, list[Path]] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise SubmitError(f"model root {root} is not a folder: attach the trained models' dataset "
                              f"(MODEL_ROOTS in the notebook, --model-roots on the CLI)")
        for cfg in sorted(root.rglob("config.json")):
            folder = cfg.parent
            if not (folder / "adapter").is_dir():
                continue  # a backbone's own config.json, not a trained output
            preset = json.loads(cfg.read_text()).get("preset", {}).get("name")
            if preset and finished_training(folder):
                groups.setdefault(preset, []).append(folder)
    order = {n: i for i, n in enumerate(MEMBER_ORDER)}
    return dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def find_saved_blend(roots: Sequence[str | Path]) -> Path | None:
    """The one ``blend.json`` (a blend report) under ``roots``; None if there is none."""
    found = sorted({p.resolve() for root in map(Path, roots) for p in root.rglob("blend.json")})
    if len(found) > 1:
        raise SubmitError(f"{len(found)} saved blends found ({', '.join(map(str, found))}): pass the one to use "
                          f"(BLEND_JSON in the notebook, --blend-json on the CLI)")
    return found[0] if found else None


def _member_tokenization(name: str, dirs: list[Path]) -> tuple[dict, dict | None]:
    """(preset, pack config) every fold of a member was tokenized with — they must agree."""
    records = [json.loads((d / "config.json").read_text()) for d in dirs]
    keys = ("name", "kind", "model_dir", "max_length", "head")
    first = records[0]
    for d, rec in zip(dirs[1:], records[1:]):
        same_preset = all(rec["preset"].get(k) == first["preset"].get(k) for k in keys)
        if not same_preset or rec["tokenization"].get("pack") != first["tokenization"].get("pack"):
            raise SubmitError(f"member {name}: {d} was tokenized differently from {dirs[0]} (backbone, head or "
                              f"token budget): submit them as separate members or retrain alike")
    return first["preset"], first["tokenization"].get("pack")


def submit(model_roots: Sequence[str | Path] | None = None, test: str | Path | None = None, *,
           weights="auto", blend_json: str | Path | None = None, out: str | Path | None = None,
           work: str | Path | None = None, devices: Sequence[str] | None = None, isolate: bool | None = None,
           tta: bool = True, max_tokens: int | None = None, budget_hours: float | None = 9.0,
           base_model_dirs: dict[str, str] | None = None,
           sample_submission: str | Path | None = "auto") -> SubmitResult:
    """Tokenize -> score -> blend -> submission.csv for the test table (see the module docstring).

    ``model_roots``: folders holding trained outputs (default: every attached dataset, i.e.
    /kaggle/input on Kaggle). ``weights``: "auto" (the saved blend if one is found, else
    "paper"), "saved", "paper", "equal" or a list. ``base_model_dirs``: {preset: folder} where a
    backbone is attached somewhere other than where it was at training time.
    """
    from .inference import infer_isolated, infer_stage
    from .tokenization import tokenize_stage

    started = time.time()
    roots = [Path(r) for r in (model_roots or [kaggle_input()])]
    groups = find_trained_models(roots)
    if not groups:
        raise SubmitError(f"no trained models (config.json + adapter/) under {', '.join(map(str, roots))}: "
                          f"attach the training session's output")
    test_path = Path(test) if test else Path(default_inputs()["test"])
    if not test_path.is_file():
        raise SubmitError(f"test table {test_path} not found (TEST in the notebook, --test on the CLI)")
    saved = None
    if weights in ("auto", "saved"):
        blend_path = Path(blend_json) if blend_json else find_saved_blend(roots)
        if blend_path is None and weights == "saved":
            raise SubmitError(f"weights='saved' but no blend.json under {', '.join(map(str, roots))}")
        if blend_path is not None:
            saved = json.loads(blend_path.read_text())
            print(f"[kit submit] blending as saved in {blend_path}: {saved['weights_mode']}", flush=True)
        else:
            weights = "paper"
            print("[kit submit] no saved blend found: the paper's weights (0.7/0.3 for two members, equal "
                  "otherwise)", flush=True)
    base_model_dirs = base_model_dirs or {}
    import torch
    isolate = torch.cuda.is_available() if isolate is None else isolate

    run_dir = Path(work or work_dir()) / "submit" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir.mkdir(parents=True, exist_ok=False)
    print(f"[kit submit] {len(groups)} member(s): "
          + ", ".join(f"{n} ({len(d)} model(s))" for n, d in groups.items()) + f"; work folder {run_dir}",
          flush=True)
    members = []
    for name, dirs in groups.items():
        preset, pack = _member_tokenization(name, dirs)
        base = base_model_dirs.get(name)
        tokenized = run_dir / "tokenized" / name
        lexical = preset["kind"] == "lexical"
        tokenize_stage(name, [], test_path, out=tokenized, max_length=None if lexical else preset["max_length"],
                       model_dir=base or preset.get("model_dir"), head=None if lexical else preset["head"],
                       pack=None if lexical else {k: v for k, v in (pack or {}).items() if k != "max_length"})
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
        members.append(Member(name, dirs, mean_test_predictions(files), None))

    if saved is not None:
        blended = apply_saved_blend(members, saved)
        blended, touched = apply_saved_guardrails(blended, saved, run_dir / "tokenized" / members[0].name)
        applied = {k: saved.get(k) for k in ("members", "weights_mode", "weights", "space", "temperature", "stacker",
                                             "guardrails")} | {"guardrail_rows_touched": touched}
    else:
        result = blend_members(members, weights)
        blended = result.test
        applied = {"members": result.members, "weights_mode": result.weights_mode, "weights": result.weights,
                   "space": result.space, "temperature": result.temperature}
    local = write_blended_submission(blended, run_dir / "tokenized" / members[0].name, run_dir / "submission.csv",
                                     sample_submission)
    target = publish(local, Path(out) if out else work_dir() / "submission.csv", "kit submit")
    seconds = time.time() - started
    write_json({"models": {n: [str(d) for d in ds] for n, ds in groups.items()}, "test": str(test_path),
                "blend": applied, "submission": str(target), "seconds": seconds}, run_dir / "submit.json")
    print(f"[kit submit] {len(blended)} rows -> {target} in {seconds / 60:.1f} min", flush=True)
    return SubmitResult(target, run_dir, groups, applied, seconds)
