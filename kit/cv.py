"""``kit cv``: the whole pipeline, fold by fold, on any table in the competition's train columns.

For each model: tokenize (K folds grouped by prompt) -> train one LoRA model per fold ->
predict its held-out fold (with and without swap TTA). Then blend the members and score
everything on the same out-of-fold rows: uniform, class prior, TF-IDF baseline, each
member without / with TTA, and the blend. Writes ``DIR/cv.json`` and ``DIR/cv.md``.

Fitted blend weights (``weights="fit"``) are fitted on the very OOF rows they are scored
on, so that blend row is optimistic; the default is the paper's fixed 0.7 / 0.3.
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
             out: str | Path, max_length: int | None = None, max_rows: int | None = None, weights="paper",
             epochs: float | None = None, max_train_rows: int | None = None, tta: bool = True, seed: int = 42,
             swap_augment: bool = True, evals_per_run: int = 1, overwrite: bool = False) -> dict:
    out = Path(out)
    check_free([out / "cv.json", out / "cv.md"], overwrite)
    order = {n: i for i, n in enumerate(MEMBER_ORDER)}
    models = sorted(models, key=lambda m: order.get(m, len(order)))  # the stronger member gets 0.7
    started, timings, members = time.time(), {}, []
    for model in models:
        t0 = time.time()
        tok = tokenize_stage(model, list(train), "", max_length=max_length, n_folds=folds, seed=seed,
                             max_rows=max_rows, out=out / "tokenized" / model, overwrite=overwrite)
        dirs = []
        for k in range(folds):
            settings = TrainSettings(epochs=epochs, max_train_rows=max_train_rows, seed=seed,
                                     swap_augment=swap_augment, evals_per_run=evals_per_run)
            res = train_stage(model, k, tokenized=tok.out_dir, out=out / "models" / model / f"fold{k}",
                              settings=settings, overwrite=overwrite)
            infer_stage(res.out_dir, "oof", tta=tta, overwrite=overwrite)
            dirs.append(res.out_dir)
        members.append(load_member(model, dirs, need_test=False))
        timings[model] = (time.time() - t0) / 60
    result = blend_members(members, weights)
    table = evaluation_table(result, out / "tokenized" / models[0])
    settings = {"train": [str(p) for p in train], "models": list(models), "folds": folds,
                "max_length": max_length, "max_rows": max_rows, "epochs": epochs,
                "max_train_rows": max_train_rows, "tta": tta, "seed": seed, "swap_augment": swap_augment,
                "evals_per_run": evals_per_run,
                "blend": {"weights_mode": result.weights_mode, "weights": dict(zip(result.members, result.weights))},
                "minutes": {**timings, "total": (time.time() - started) / 60}}
    payload = {"rows": len(result.oof_ids), "folds": folds, "settings": settings,
               "results": {name: {"log_loss": float(r["log_loss"]), "accuracy": float(r["accuracy"])}
                           for name, r in table.iterrows()}}
    md = (f"# kit cv: {', '.join(Path(p).name for p in train)}\n\n"
          f"{payload['rows']} out-of-fold rows, {folds} folds (grouped by prompt, stratified by label); "
          f"models {', '.join(models)}; max_length {max_length or 'preset'}; epochs {epochs or 'preset'}; "
          f"training rows per fold {max_train_rows or 'all'}; swap augmentation {swap_augment}; "
          f"swap TTA {tta}; blend weights "
          f"{result.weights_mode} {', '.join(f'{n} {w:.2f}' for n, w in zip(result.members, result.weights))}.\n\n"
          + table[["log_loss", "accuracy"]].to_markdown(floatfmt=".4f") + "\n")
    write_json(payload, out / "cv.json", overwrite)
    write_text(md, out / "cv.md", overwrite)
    return {**payload, "markdown": md, "table": table}
