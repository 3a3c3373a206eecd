"""``kit cv``: the whole pipeline, fold by fold, on any table in the competition's train columns.

For each model (a neural preset with its head, or ``lexical``): tokenize (K folds grouped
by prompt) -> train one model per fold -> predict its held-out fold (with and without swap
TTA where the head uses it). Then blend the members and score everything on the same
out-of-fold rows: uniform, class prior, TF-IDF baseline, each member, and the blend.
Writes ``DIR/cv.json`` and ``DIR/cv.md``.

With ``weights="fit"`` the ``blend`` figure is cross-fitted (weights fitted on the other
folds, applied to each fold — :func:`kit.blend.blend_members`); the in-sample figure is
reported beside it as ``blend (in-sample fit)``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from .blend import MEMBER_ORDER, blend_members, evaluation_table, load_member
from .inference import infer_stage
from .io import check_free, write_json, write_text
from .tokenization import tokenize_stage
from .training import TrainSettings, train_stage


def cv_stage(train: Sequence[str | Path], models: Sequence[str] = ("minilm", "smollm2"), folds: int = 5, *,
             out: str | Path, max_length: int | None = None, max_rows: int | None = None, weights="fit",
             epochs: float | None = None, max_train_rows: int | dict | None = None, tta: bool = True,
             seed: int = 42, swap_augment: bool = True, evals_per_run: int = 1, head: str | None = None,
             overwrite: bool = False) -> dict:
    """``max_train_rows``: one cap for every model, or {model: cap}; ``head``: every neural model's
    head (None: each preset's own)."""
    from .presets import resolve_preset

    for model in models:  # an unknown name fails here, before any work
        resolve_preset(model, head=head)
    caps = max_train_rows if isinstance(max_train_rows, dict) else {m: max_train_rows for m in models}
    out = Path(out)
    check_free([out / "cv.json", out / "cv.md"], overwrite)
    order = {n: i for i, n in enumerate(MEMBER_ORDER)}
    models = sorted(models, key=lambda m: order.get(m, len(order)))  # the stronger member gets 0.7
    started, timings, members = time.time(), {}, []
    for model in models:
        t0 = time.time()
        tok = tokenize_stage(model, list(train), "", max_length=max_length, n_folds=folds, seed=seed,
                             max_rows=max_rows, out=out / "tokenized" / model, overwrite=overwrite, head=head)
        dirs = []
        for k in range(folds):
            settings = TrainSettings(epochs=epochs, max_train_rows=caps.get(model), seed=seed,
                                     swap_augment=swap_augment, evals_per_run=evals_per_run)
            res = train_stage(model, k, tokenized=tok.out_dir, out=out / "models" / model / f"fold{k}",
                              settings=settings, overwrite=overwrite)
            infer_stage(res.out_dir, "oof", tta=tta, overwrite=overwrite)
            dirs.append(res.out_dir)
        members.append(load_member(model, dirs, need_test=False))
        timings[model] = (time.time() - t0) / 60
    result = blend_members(members, weights)
    table = evaluation_table(result, out / "tokenized" / models[0])
    settings = {"train": [str(p) for p in train], "models": list(models), "folds": folds, "head": head,
                "max_length": max_length, "max_rows": max_rows, "epochs": epochs,
                "max_train_rows": max_train_rows, "tta": tta, "seed": seed, "swap_augment": swap_augment,
                "evals_per_run": evals_per_run,
                "blend": {"weights_mode": result.weights_mode, "weights": dict(zip(result.members, result.weights)),
                          "temperature": result.temperature, "oof_score": result.report["oof_score"],
                          "per_fold": result.report["per_fold"]},
                "minutes": {**timings, "total": (time.time() - started) / 60}}
    payload = {"rows": len(result.oof_ids), "folds": folds, "settings": settings,
               "results": {name: {"log_loss": float(r["log_loss"]), "accuracy": float(r["accuracy"])}
                           for name, r in table.iterrows()}}
    md = (f"# kit cv: {', '.join(Path(p).name for p in train)}\n\n"
          f"{payload['rows']} out-of-fold rows, {folds} folds (grouped by prompt, stratified by label); "
          f"models {', '.join(models)}; head {head or 'preset'}; max_length {max_length or 'preset'}; "
          f"epochs {epochs or 'preset'}; training rows per fold {max_train_rows or 'all'}; "
          f"swap augmentation {swap_augment} (joint head only); swap TTA {tta} (joint head only); blend weights "
          f"{result.weights_mode} {', '.join(f'{n} {w:.3f}' for n, w in zip(result.members, result.weights))}"
          f" (test), the `blend` row {result.report['oof_score']}; "
          f"{', '.join(f'{m} {t:.1f}' for m, t in timings.items())} minutes.\n\n"
          + table[["log_loss", "accuracy"]].to_markdown(floatfmt=".4f") + "\n")
    write_json(payload, out / "cv.json", overwrite)
    write_text(md, out / "cv.md", overwrite)
    return {**payload, "markdown": md, "table": table}
