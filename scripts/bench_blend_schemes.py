"""The blend's cross-fitting on a main-job run: per training fold vs 5 parts by id, on the same rows.

    .venv/bin/python scripts/bench_blend_schemes.py --run NAME=artifacts/runs/<run> [--run ...] \
        [--out results/blend_schemes.md]

For each run (a ``kit main`` run folder: its ``models/<member>/fold*`` predictions), every member's
out-of-fold rows are blended with weights fitted in log space (``kit.ensemble.combine``), cross-fitted
two ways — per training fold (what the kit did before with two folds) and on
``HOLDOUT_PARTS`` parts by id (what it does now below five folds) — and each scheme's blend, its
``blend without X`` rows and the smallest weight any member gets in any fold/part are written to
``--out`` (markdown + PNG + JSON). Each member's log loss is also split by source: the shipped
Kaggle rows (``data/kaggle/train_sample.csv``) and the rest (PandaLM), against the class frequencies
of all rows. The run folders are ``kit main`` outputs (``artifacts/``, not committed): rerun
``python -m kit main`` / ``--paper`` to reproduce them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

from kit.core.metrics import log_loss
from kit.ensemble.combine import Fit, cross_fitted, fit_weights, holdout_parts
from kit.store.io import write_results
from kit.store.predictions import PROB_COLUMNS, load_member

KAGGLE_ROWS = ROOT / "data" / "kaggle" / "train_sample.csv"


def run_table(run: Path) -> tuple[list[dict], list[dict]]:
    names = sorted(p.name for p in (run / "models").iterdir() if p.is_dir())
    oof = {n: load_member(n, sorted((run / "models" / n).glob("fold*")), need_test=False).oof.set_index("id")
           for n in names}
    ids = [i for i in oof[names[0]].index if all(i in oof[n].index for n in names)]
    probs = {n: oof[n].loc[ids, PROB_COLUMNS].to_numpy() for n in names}
    labels = oof[names[0]].loc[ids, "label"].to_numpy().astype(int)
    schemes = {"per fold": oof[names[0]].loc[ids, "fold"].to_numpy(), "5 parts by id": holdout_parts(ids)}

    def choose(p, y):
        return Fit(fit_weights(p, y, "log"), "fit", 1.0)

    rows = []
    for scheme, parts in schemes.items():
        blend, fits = cross_fitted(choose, [probs[n] for n in names], labels, parts, "log")
        row = {"scheme": scheme, "blend": log_loss(labels, blend)}
        for j, n in enumerate(names):
            rest = [probs[m] for m in names if m != n]
            row[f"without {n}"] = log_loss(labels, cross_fitted(choose, rest, labels, parts, "log")[0])
        smallest = np.min([f["weights"] for f in fits.values()], axis=0)
        row.update({f"smallest weight {n}": float(w) for n, w in zip(names, smallest)})
        rows.append(row)
    kaggle = set(pd.read_csv(KAGGLE_ROWS, dtype={"id": str})["id"])
    from_kaggle = np.array([str(i) in kaggle for i in ids])
    prior = np.bincount(labels, minlength=3) / len(labels)
    sources = []
    for source, mask in (("kaggle", from_kaggle), ("pandalm", ~from_kaggle)):
        entry = {"source": source, "rows": int(mask.sum()),
                 "class frequencies": log_loss(labels[mask], np.tile(prior, (mask.sum(), 1)))}
        entry.update({n: log_loss(labels[mask], probs[n][mask]) for n in names})
        sources.append(entry)
    return rows, sources


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="NAME=run folder")
    ap.add_argument("--out", default=str(ROOT / "results" / "blend_schemes.md"))
    a = ap.parse_args(argv)
    out = Path(a.out)
    record, text = {}, ["# Cross-fitting the main job's blend: per fold vs 5 parts by id\n",
                        f"`python scripts/bench_blend_schemes.py {' '.join('--run ' + r for r in a.run)}`. "
                        "Weights fitted in log space; log loss on the same out-of-fold rows.\n"]
    for spec in a.run:
        name, folder = spec.split("=", 1)
        rows, sources = run_table(Path(folder))
        record[name] = {"run": folder, "schemes": rows, "by_source": sources}
        text += [f"## {name} (`{folder}`)\n", pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"), "",
                 "By source (log loss):\n", pd.DataFrame(sources).to_markdown(index=False, floatfmt=".4f"), ""]
    write_results(record, out.with_suffix(".json"))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(record)
    for k, scheme in enumerate(("per fold", "5 parts by id")):
        values = [next(r["blend"] for r in record[n]["schemes"] if r["scheme"] == scheme) for n in names]
        ax.bar(np.arange(len(names)) + 0.38 * k, values, 0.38, label=scheme)
    ax.set_xticks(np.arange(len(names)) + 0.19, names, fontsize=8)
    ax.set_ylim(1.0, 1.08)
    ax.set_ylabel("cross-fitted blend log loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    text.append(f"![blend by scheme]({out.with_suffix('.png').name})\n")
    out.write_text("\n".join(text))
    print(out.read_text())


if __name__ == "__main__":
    main()
