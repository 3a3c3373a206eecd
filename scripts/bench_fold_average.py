"""Fold averaging measured: one LoRA model averaged from K fold models, against the K models' mean prediction.

    .venv/bin/python scripts/bench_fold_average.py [--model gemma3-270m] [--folds 5] [--rows-per-fold 200]
                                                   [--out results/fold_average.md]

PandaLM's rows are split by prompt into a test split (a fifth of the prompts) that no model trains on, and
the rest, tokenized into ``--folds`` prompt-grouped folds. One model per fold trains on ``--rows-per-fold``
of its training rows (the kit's recipe for Gemma-3-270M's bag member), all from the same seed, as the
1st-place LMSYS solution trained its folds. On the test split the table compares:

* each fold's model alone;
* the mean of the K models' probabilities (what ``kit submit`` does with K attached folds: K scorings);
* the averaged model (:func:`kit.average_models`: the LoRA deltas' exact mean, the heads' mean; one scoring);

with log loss, accuracy, paired bootstrap 95 % intervals over prompts, and the scoring seconds (each
scoring in this process, its load included). Written to ``--out``, its ``.json`` twin and a ``.png``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from kit.core.metrics import log_loss
from kit.core.schema import PROB_COLUMNS
from kit.core.settings import TrainSettings
from kit.data.ingest import load_conversations
from kit.ensemble.intervals import differences_markdown, paired_differences
from kit.stages.average import average_models
from kit.stages.infer import infer_stage
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from kit.store.io import benchmark_command, write_benchmark

ROOT = Path(__file__).resolve().parent.parent
PANDALM = ROOT / "data" / "pandalm" / "pandalm_kaggle.csv"


def split_tables(work: Path, rows: int | None, seed: int = 0) -> tuple[Path, Path]:
    """(train.csv, test.csv) under ``work``: PandaLM's rows (the first ``rows``) split by prompt, a fifth of
    the prompts held out."""
    table = pd.read_csv(PANDALM, dtype={"id": str}, keep_default_na=False)
    table = table.head(rows) if rows else table
    train_idx, test_idx = next(GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
                               .split(table, groups=table["prompt"]))
    train, test = work / "train.csv", work / "test.csv"
    table.iloc[train_idx].to_csv(train, index=False)
    table.iloc[test_idx].to_csv(test, index=False)
    return train, test


def measure(a: argparse.Namespace, work: Path) -> tuple[list[dict], str]:
    train_csv, test_csv = split_tables(work, a.rows)
    truth = load_conversations(test_csv, labelled=True).frame.set_index("id")
    tok = work / "tok"
    backbone = {"model_dir": a.model_dir} if a.model_dir else {}
    tokenize_stage(a.model, [str(train_csv)], str(test_csv), n_folds=a.folds, out=str(tok),
                   max_length=a.max_length, **backbone)
    # one evaluation, at the end (as kit cv trains): the model is the run's last weights; the held-out rows
    # are not the measure here (the test split is), so only a few are scored
    settings = TrainSettings(max_train_rows=a.rows_per_fold, evals_per_run=1, max_eval_rows=16,
                             **({"max_steps": a.max_steps} if a.max_steps else {}))
    folds, scored, seconds, train_seconds = [], {}, {}, 0.0
    for k in range(a.folds):
        res = train_stage(a.model, k, tokenized=str(tok), out=str(work / "models" / f"fold{k}"), **settings.to_dict(),
                          **({"load_in_4bit": False} if a.model_dir else {}))
        train_seconds += res.metrics.get("train_seconds", 0.0)
        folds.append(res.out_dir)
        pred = infer_stage(res.out_dir, "test", out=str(work / f"fold{k}.csv"))
        scored[f"fold {k} alone"], seconds[f"fold {k} alone"] = pred.predictions, pred.seconds
        print(f"fold {k}: trained and scored", flush=True)
    averaged = average_models([str(d) for d in folds], out=str(work / "models" / "average"))
    pred = infer_stage(averaged.out_dir, "test", out=str(work / "average.csv"))
    fold_names = list(scored)
    probs = {n: scored[n].set_index("id").loc[truth.index, PROB_COLUMNS].to_numpy() for n in fold_names}
    probs[f"mean of {a.folds} models' probabilities"] = np.mean([probs[n] for n in fold_names], axis=0)
    seconds[f"mean of {a.folds} models' probabilities"] = sum(seconds[n] for n in fold_names)
    probs["averaged model"] = pred.predictions.set_index("id").loc[truth.index, PROB_COLUMNS].to_numpy()
    seconds["averaged model"] = pred.seconds
    labels, groups = truth["label"].to_numpy(), truth["prompt"].astype(str).to_numpy()
    rows = [{"method": n, "log_loss": round(log_loss(labels, p), 4),
             "accuracy": round(float((p.argmax(1) == labels).mean()), 4), "scorings": 1 if "alone" in n or
             n == "averaged model" else a.folds, "scoring_s": round(seconds[n], 1)} for n, p in probs.items()]
    mean_name = f"mean of {a.folds} models' probabilities"
    diffs = paired_differences(probs, [("averaged model", other) for other in (mean_name, "fold 0 alone")],
                               labels, groups)
    text = (f"{a.model}, PandaLM: {len(labels)} test rows ({len(set(groups))} prompts) outside every fold; "
            f"{a.folds} prompt-grouped folds of the other rows, one model per fold trained on {a.rows_per_fold} of "
            f"its training rows (seed 42 for all; {train_seconds / 60:.1f} training minutes in all). "
            f"`scorings`: how many models score the test rows; `scoring_s`: their seconds (load included, 2 CPU "
            f"cores).\n\n## Differences on the test rows, with paired bootstrap 95 % intervals\n\n"
            f"{differences_markdown(diffs)}")
    plot(rows, a.out)
    return rows, text


def plot(rows: list[dict], out: str) -> None:
    frame = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("log_loss", "accuracy")):
        colours = ["tab:orange" if m == "averaged model" else "tab:blue" if m.startswith("mean") else "tab:gray"
                   for m in frame["method"]]
        ax.barh(frame["method"], frame[metric], color=colours)
        ax.set_xlabel(metric.replace("_", " "))
        lo, hi = frame[metric].min(), frame[metric].max()
        ax.set_xlim(lo - (hi - lo) - 0.01, hi + (hi - lo) * 0.5 + 0.01)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.suptitle("Fold averaging: one averaged model vs the folds' mean prediction (test rows outside every fold)")
    fig.tight_layout()
    fig.savefig(Path(out).with_suffix(".png"), dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--rows-per-fold", type=int, default=200)
    ap.add_argument("--rows", type=int, default=None, help="use only PandaLM's first N rows (a toy run)")
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None, help="cap each fold's training steps (a toy run)")
    ap.add_argument("--model-dir", default=None, help="the backbone's folder (a toy run: a tiny random-init one, "
                                                      "loaded in full precision)")
    ap.add_argument("--out", default=str(ROOT / "results" / "fold_average.md"))
    a = ap.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows, text = measure(a, Path(tmp))
    command = benchmark_command(__file__, argv)
    print(write_benchmark(rows, a.out, "Fold averaging: one averaged LoRA model against K fold models", text,
                          command, started))


if __name__ == "__main__":
    main()
