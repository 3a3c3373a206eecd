"""``kit cv``: the whole pipeline, fold by fold, on any table in the competition's train columns.

For each model (a neural preset with its head, or ``lexical``): tokenize (K folds grouped
by prompt) -> train one model per fold -> predict its held-out fold (with and without swap
TTA where the head uses it). Then blend the members and score everything on the same
out-of-fold rows: uniform, class prior, TF-IDF baseline, each member, and the blend.
Writes ``DIR/cv.json``, ``DIR/cv.md`` and ``DIR/cv.png``.

With ``weights="fit"`` the ``blend`` figure is cross-fitted (weights fitted on the other
folds, applied to each fold — :func:`kit.blend.blend_members`); the in-sample figure is
reported beside it as ``blend (in-sample fit)``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from .blend import MEMBER_ORDER, apply_guardrails, describe_weights, blend_members, evaluation_table, load_member
from .inference import infer_stage
from .io import write_json, write_text
from .tokenization import tokenize_stage
from .training import TrainSettings, cache_preset, train_stage


def _reusable_cache(tok_dir: Path, wanted: dict, model: str, max_length, head, overwrite: bool) -> bool:
    """True when tok_dir holds a finished cache made with the same inputs and settings; a
    different one is an error (unless overwrite, which re-tokenizes)."""
    from .presets import resolve_preset

    from .manifest import StaleOutput
    from .tokenization import check_cache

    meta_path = tok_dir / "meta.json"
    if overwrite or not meta_path.exists() or not (tok_dir / "train.parquet").exists():
        return False
    try:
        check_cache(tok_dir, "train")
    except StaleOutput as e:
        raise ValueError(f"cannot reuse {e}; or pass --overwrite to redo the whole cv") from None
    meta = json.loads(meta_path.read_text())
    preset = resolve_preset(model, max_length=max_length, head=head)
    have = {k: meta.get(k) for k in wanted} | {"max_length": meta["preset"].get("max_length"),
                                               "head": meta["preset"].get("head")}
    want = wanted | {"max_length": preset.max_length,
                     "head": "lexical" if preset.kind == "lexical" else preset.head}
    if have != want:
        diff = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
        raise ValueError(f"{tok_dir} was made with other settings {diff} (was, now): pass --overwrite to redo "
                         f"the whole cv, or choose another --out")
    return True


def _fold_state(fold_dir: Path, settings: TrainSettings, preset, overwrite: bool) -> str:
    """"predicted" (a finished model with its checked out-of-fold predictions), "trained" (a
    finished model; a killed call did not predict its fold yet) or "none", for a fold trained
    with `settings` and `preset` (the recipe, its folder aside); one trained otherwise is an error
    (unless overwrite)."""
    from dataclasses import asdict

    from .blend import BlendError, _read_predictions
    from .manifest import StaleOutput
    from .training import check_trained

    if overwrite or not (fold_dir / "config.json").exists():
        return "none"
    try:
        check_trained(fold_dir)
    except StaleOutput:
        return "none"
    config = json.loads((fold_dir / "config.json").read_text())
    recipe = {k: v for k, v in preset.to_dict().items() if k != "model_dir"}
    was = {k: v for k, v in config["preset"].items() if k != "model_dir"}
    if config["train"] != json.loads(json.dumps(asdict(settings))) or was != json.loads(json.dumps(recipe)):
        raise ValueError(f"{fold_dir} was trained with other settings or another recipe: pass --overwrite to "
                         f"redo the whole cv, or choose another --out")
    try:
        _read_predictions(fold_dir / "predictions" / "oof.csv", "out-of-fold", fold_dir)
        return "predicted"
    except BlendError:
        return "trained"


def cv_stage(train: Sequence[str | Path], models: Sequence[str] = ("minilm", "smollm2"), folds: int = 5, *,
             out: str | Path, max_length: int | None = None, max_rows: int | None = None, weights="fit",
             epochs: float | None = None, max_train_rows: int | dict | None = None, tta: bool = True,
             seed: int = 42, swap_augment: bool = True, evals_per_run: int = 1, head: str | None = None,
             space: str = "log", overwrite: bool = False) -> dict:
    """``max_train_rows``: one cap for every model, or {model: cap}; ``head``: every neural model's
    head (None: each preset's own)."""
    from .presets import resolve_preset

    for model in models:  # an unknown name fails here, before any work
        resolve_preset(model, head=head)
    caps = max_train_rows if isinstance(max_train_rows, dict) else {m: max_train_rows for m in models}
    out = Path(out)
    order = {n: i for i, n in enumerate(MEMBER_ORDER)}
    models = sorted(models, key=lambda m: order.get(m, len(order)))  # the stronger member gets 0.7
    started, timings, members = time.time(), {}, []
    for model in models:
        tok_dir = out / "tokenized" / model
        wanted = {"train_sources": [str(p) for p in train], "n_folds": folds, "seed": seed, "max_rows": max_rows}
        if _reusable_cache(tok_dir, wanted, model, max_length, head, overwrite):
            print(f"[kit cv] reusing {tok_dir}", flush=True)
        else:
            tokenize_stage(model, list(train), "", max_length=max_length, n_folds=folds, seed=seed,
                           max_rows=max_rows, out=tok_dir, overwrite=overwrite, head=head)
        dirs = []
        for k in range(folds):
            settings = TrainSettings(epochs=epochs, max_train_rows=caps.get(model), seed=seed,
                                     swap_augment=swap_augment, evals_per_run=evals_per_run)
            fold_dir = out / "models" / model / f"fold{k}"
            recipe = cache_preset(model, tok_dir, json.loads((tok_dir / "meta.json").read_text()), {})
            state = _fold_state(fold_dir, settings, recipe, overwrite)  # a killed or extended cv run goes on
            if state == "predicted":
                print(f"[kit cv] reusing {fold_dir}", flush=True)
            else:
                if state == "none":
                    train_stage(model, k, tokenized=tok_dir, out=fold_dir, settings=settings, overwrite=overwrite)
                # the fold's model was (re)trained just now, or its predictions are missing or stale
                infer_stage(fold_dir, "oof", tta=tta, overwrite=True)
            dirs.append(fold_dir)
        members.append(load_member(model, dirs, need_test=False))
        # training minutes as recorded by each fold (also for folds reused from an earlier call)
        timings[model] = sum(json.loads((d / "metrics.json").read_text())["train_seconds"] for d in dirs) / 60
    result = blend_members(members, weights, space)
    result.table = evaluation_table(result, out / "tokenized" / models[0])
    apply_guardrails(result, out / "tokenized" / models[0])  # its own row: "blend + guardrails"
    table = result.table
    settings = {"train": [str(p) for p in train], "models": list(models), "folds": folds, "head": head,
                "max_length": max_length, "max_rows": max_rows, "epochs": epochs,
                "max_train_rows": max_train_rows, "tta": tta, "seed": seed, "swap_augment": swap_augment,
                "evals_per_run": evals_per_run,
                "blend": {"space": space, "weights_mode": result.weights_mode, "weights": dict(zip(result.members, result.weights)),
                          "temperature": result.temperature, "oof_score": result.report["oof_score"],
                          "per_fold": result.report["per_fold"], "stacker": result.report.get("stacker"),
                          "guardrails": result.report.get("guardrails")},
                "train_minutes": timings, "wall_minutes_this_call": (time.time() - started) / 60}
    payload = {"rows": len(result.oof_ids), "folds": folds, "settings": settings,
               "results": {name: {"log_loss": float(r["log_loss"]), "accuracy": float(r["accuracy"])}
                           for name, r in table.iterrows()}}
    md = (f"# kit cv: {', '.join(Path(p).name for p in train)}\n\n"
          f"{payload['rows']} out-of-fold rows, {folds} folds (grouped by prompt, stratified by label); "
          f"models {', '.join(models)}; head {head or 'preset'}; max_length {max_length or 'preset'}; "
          f"epochs {epochs or 'preset'}; training rows per fold {max_train_rows or 'all'}; "
          f"swap augmentation {swap_augment} (joint head only); swap TTA {tta} (joint head only); blend weights "
          f"{describe_weights(result)} in {space} space"
          f" (test), the `blend` row {result.report['oof_score']}; "
          f"training minutes summed over folds: {', '.join(f'{m} {t:.1f}' for m, t in timings.items())}.\n\n"
          + table[["log_loss", "accuracy"]].to_markdown(floatfmt=".4f") + "\n")
    # derived from the folds above, which were all checked or made by this call
    from .plots import plot_methods
    plot_methods(table, out / "cv.png", title=f"kit cv: {payload['rows']} out-of-fold rows, {folds} folds",
                 overwrite=True)
    md += "\n![out-of-fold log loss per method](cv.png)\n"
    write_json(payload, out / "cv.json", overwrite=True)
    write_text(md, out / "cv.md", overwrite=True)
    return {**payload, "markdown": md, "table": table}
