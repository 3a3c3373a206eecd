"""Weight averaging measured on one PandaLM fold: one run's own averages, and the seed soup, against the bag.

    .venv/bin/python scripts/bench_weight_average.py [--model gemma3-270m] [--fold 0] [--seeds 42,7,13]
                                                     [--lr-schedule cosine|linear|constant] [--baseline-work DIR]
                                                     [--work artifacts/bench_weight_average]
                                                     [--out results/weight_average/weight_average.md]

PandaLM is tokenized into the 5 prompt-grouped folds ``kit cv`` uses (its seed 42); one model per seed trains on
every row outside ``--fold`` (the recipe's ``gemma3-270m@all`` member) with ``weight_average="swa"``, so each run
yields three sets of weights from one training (``kit.ops.weight_average``): ``final`` (as trained), ``swa`` (the
mean of the weights after each update of the run's second half) and ``ema``. The train stage scores the held-out
fold with all three. Then, on the held-out rows:

* each seed's final / swa / ema weights alone (one training, one scoring each);
* the bag it replaces: the mean of the K seeds' probabilities (K trainings, K scorings), of final and of swa weights;
* the seed soup: the K swa models' LoRA deltas and heads averaged into one model (:func:`kit.average_models`;
  K trainings, one scoring), scored through ``kit.load_ensemble`` (``kit submit``'s path).

``--lr-schedule constant`` holds the learning rate at its peak after the warm-up (SWA's usual schedule: the averaged
iterates spread around a basin instead of settling at its end); ``--baseline-work`` puts another finished ``--work``'s
final weights (e.g. the cosine runs) beside each seed, paired on the same rows.

Log loss, accuracy, paired bootstrap 95 % intervals over prompts, and the cost in trainings, scorings and CPU
minutes (training seconds as the runs recorded them; scoring seconds measured here). ``--work`` keeps the trained
models, so a rerun after a kill trains only what is missing. Writes ``--out``, its ``.json`` twin and a ``.png``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kit.core.metrics import log_loss
from kit.core.presets import LR_SCHEDULES
from kit.core.schema import PROB_COLUMNS
from kit.ensemble.intervals import differences_markdown, paired_differences
from kit.stages.average import average_models
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from kit.store.figures import plot_methods
from kit.store.io import benchmark_command, read_csv_keeping_ids, write_benchmark
from kit.workflows.ensemble import load_ensemble

ROOT = Path(__file__).resolve().parent.parent
PANDALM = ROOT / "data" / "pandalm" / "pandalm_kaggle.csv"
CANDIDATES = ("final", "swa", "ema")


def train_seeds(a: argparse.Namespace, work: Path) -> tuple[list[Path], pd.DataFrame]:
    """One model per seed (reused where ``work`` holds it), and the held-out rows as PandaLM gives them."""
    tok = work / "tok"
    if not (tok / "manifest.json").is_file():
        tokenize_stage(a.model, [str(a.train)], "", n_folds=5, seed=42, out=str(tok), max_rows=a.rows,
                       **({"max_length": a.max_length} if a.max_length else {}),
                       **({"model_dir": a.model_dir} if a.model_dir else {}))
    dirs = []
    for seed in a.seeds:
        out = work / "models" / f"seed{seed}"
        if not (out / "manifest.json").is_file():
            train_stage(a.model, a.fold, tokenized=str(tok), out=str(out), seed=seed, evals_per_run=1,
                        weight_average="swa", average_start=a.average_start, ema_decay=a.ema_decay,
                        lr_schedule=a.lr_schedule,
                        **({"max_steps": a.max_steps} if a.max_steps else {}),
                        **({"model_dir": a.model_dir, "load_in_4bit": False} if a.model_dir else {}))
            print(f"seed {seed}: trained", flush=True)
        dirs.append(out)
    held_ids = read_csv_keeping_ids(dirs[0] / "oof.csv")["id"].tolist()
    table = read_csv_keeping_ids(a.train).set_index("id").loc[held_ids].reset_index()
    return dirs, table


def candidate_probs(model: Path) -> dict[str, np.ndarray]:
    """final / swa / ema probabilities of the held-out rows, from the train stage's oof.csv."""
    oof = read_csv_keeping_ids(model / "oof.csv")
    saved = json.loads((model / "metrics.json").read_text())["weight_average"]["saved"]
    return {name: oof[PROB_COLUMNS if name == saved else [f"{c}_{name}" for c in PROB_COLUMNS]].to_numpy()
            for name in CANDIDATES}


def scored(models: list[Path], table: pd.DataFrame, model_dir: dict | None) -> tuple[np.ndarray, float]:
    """``models`` blended (one model: itself) on ``table``'s rows through kit.load_ensemble, and the seconds."""
    frame = table[["id", "prompt", "response_a", "response_b"]].copy()
    for column in ("prompt", "response_a", "response_b"):
        frame[column] = [json.loads(v) for v in frame[column]]
    started = time.time()
    probs = load_ensemble([str(m) for m in models], model_dir=model_dir).predict(frame).set_index("id").loc[table["id"], PROB_COLUMNS]
    return probs.to_numpy(dtype=np.float64), time.time() - started


def add_baseline(a: argparse.Namespace, probs: dict, cost: dict) -> None:
    """Another finished run of this script (other settings, the same fold and seeds): each seed's final weights
    and their bag join ``probs`` and ``cost``."""
    k = len(a.seeds)
    base_dirs = {seed: Path(a.baseline_work) / "models" / f"seed{seed}" for seed in a.seeds}
    base = {seed: candidate_probs(d) for seed, d in base_dirs.items()}
    base_minutes = {s: json.loads((d / "metrics.json").read_text())["train_seconds"] / 60 for s, d in base_dirs.items()}
    for seed in a.seeds:
        probs[f"baseline seed {seed}, final weights"] = base[seed]["final"]
        cost[f"baseline seed {seed}, final weights"] = (1, 1, base_minutes[seed])
    if k > 1:
        probs[f"baseline bag of {k} seeds, final weights"] = np.mean([base[s]["final"] for s in a.seeds], 0)
        cost[f"baseline bag of {k} seeds, final weights"] = (k, k, sum(base_minutes.values()))


def measure(a: argparse.Namespace, work: Path) -> tuple[list[dict], str]:
    dirs, table = train_seeds(a, work)
    backbone = {a.model: a.model_dir} if a.model_dir else None  # a toy run's backbone, where no preset finds it
    labels = read_csv_keeping_ids(dirs[0] / "oof.csv")["label"].to_numpy()
    groups = table["prompt"].astype(str).to_numpy()
    minutes = [json.loads((d / "metrics.json").read_text())["train_seconds"] / 60 for d in dirs]
    per_seed = {seed: candidate_probs(d) for seed, d in zip(a.seeds, dirs)}
    k = len(a.seeds)
    probs, cost = {}, {}
    for seed in a.seeds:
        for name in CANDIDATES:
            probs[f"seed {seed}, {name} weights"] = per_seed[seed][name]
            cost[f"seed {seed}, {name} weights"] = (1, 1, minutes[a.seeds.index(seed)])
    one, one_seconds = scored(dirs[:1], table, backbone)  # the path the soup is scored by, checked on one seed's model
    agree = float(np.abs(one - per_seed[a.seeds[0]]["swa"]).max())
    soup_seconds = None
    if k > 1:  # the bag and the soup need two seeds or more
        for name in ("final", "swa"):
            probs[f"bag of {k} seeds' probabilities, {name} weights"] = np.mean([per_seed[s][name] for s in a.seeds], 0)
            cost[f"bag of {k} seeds' probabilities, {name} weights"] = (k, k, sum(minutes))
        soup = average_models([str(d) for d in dirs], out=str(work / "models" / "soup"), overwrite=True).out_dir
        probs[f"soup of {k} seeds' swa weights"], soup_seconds = scored([soup], table, backbone)
        cost[f"soup of {k} seeds' swa weights"] = (k, 1, sum(minutes))
    if a.baseline_work:
        add_baseline(a, probs, cost)
    rows = [{"method": n, "log_loss": round(log_loss(labels, p), 4),
             "accuracy": round(float((p.argmax(1) == labels).mean()), 4), "trainings": cost[n][0],
             "scorings": cost[n][1], "train_cpu_min": round(cost[n][2], 1)} for n, p in probs.items()]
    first = a.seeds[0]
    pairs = [(f"seed {s}, {w} weights", f"seed {s}, final weights") for s in a.seeds for w in ("swa", "ema")]
    pairs += [] if k == 1 else [(f"seed {first}, swa weights", f"bag of {k} seeds' probabilities, final weights"),
              (f"soup of {k} seeds' swa weights", f"bag of {k} seeds' probabilities, swa weights"),
              (f"soup of {k} seeds' swa weights", f"bag of {k} seeds' probabilities, final weights"),
              (f"bag of {k} seeds' probabilities, final weights", f"seed {first}, final weights")]
    if a.baseline_work:
        pairs += [(f"seed {seed}, swa weights", f"baseline seed {seed}, final weights") for seed in a.seeds]
        pairs += [] if k == 1 else [(f"soup of {k} seeds' swa weights", f"baseline bag of {k} seeds, final weights"),
                                    (f"bag of {k} seeds' probabilities, swa weights", f"baseline bag of {k} seeds, final weights")]
    diffs = paired_differences(probs, pairs, labels, groups)
    text = (f"{a.model}, PandaLM fold {a.fold} of kit cv's 5 prompt-grouped folds: {len(labels)} held-out rows "
            f"({len(set(groups))} prompts); each seed's model trained on every other row ({', '.join(f'{m:.1f}' for m in minutes)} "
            f"training minutes, 2 CPU cores), averaging from {a.average_start:.0%} of the updates on (ema decay "
            f"{a.ema_decay}), learning rate {a.lr_schedule} after warm-up"
            f"{f'; baseline: the models in {a.baseline_work}' if a.baseline_work else ''}. One model's scoring of these rows through kit.load_ensemble took {one_seconds:.0f} s "
            f"{f'(the soup: {soup_seconds:.0f} s) ' if soup_seconds else ''}and matched the train stage's own scores to {agree:.1e}. "
            f"`trainings` / `scorings`: what each method costs; `train_cpu_min`: its training minutes.\n\n"
            f"## Differences on the held-out rows, with paired bootstrap 95 % intervals\n\n{differences_markdown(diffs)}")
    plot_methods(pd.DataFrame(rows).set_index("method")[["log_loss", "accuracy"]], Path(a.out).with_suffix(".png"),
                 f"Weight averaging on {a.model}'s fold {a.fold}: one run's averages, the bag, the seed soup",
                 overwrite=True)
    return rows, text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--train", default=str(PANDALM))
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[42, 7, 13])
    ap.add_argument("--average-start", type=float, default=0.5)
    ap.add_argument("--ema-decay", type=float, default=0.9)
    ap.add_argument("--lr-schedule", default="cosine", choices=tuple(LR_SCHEDULES),
                    help="the learning rate after warm-up (constant: SWA's usual rate over its span)")
    ap.add_argument("--baseline-work", default=None, help="another finished --work of this script (the same fold and "
                    "seeds, other settings): its final weights join the table and each seed's swa is compared with them")
    ap.add_argument("--rows", type=int, default=None, help="use only the first N rows (a toy run)")
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None, help="cap each training (a toy run)")
    ap.add_argument("--model-dir", default=None, help="the backbone's folder (a toy run: a tiny random-init one)")
    ap.add_argument("--work", default=str(ROOT / "artifacts" / "bench_weight_average"))
    ap.add_argument("--out", default=str(ROOT / "results" / "weight_average" / "weight_average.md"))
    a = ap.parse_args(argv)
    started = time.time()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    rows, text = measure(a, Path(a.work))
    print(write_benchmark(rows, a.out, "Weight averaging: one run's averages and the seed soup against the bag",
                          text, benchmark_command(__file__, argv), started))


if __name__ == "__main__":
    main()
