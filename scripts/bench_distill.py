"""Distillation benchmark: the ensemble's probabilities as soft labels for one cheap student,
on PandaLM's prompt-grouped folds.

    .venv/bin/python scripts/bench_distill.py --cv artifacts/cv_pandalm_256
    # ~55 min on 2 cores the first time (10 MiniLM fine-tunings), ~3 min once they exist

``--cv``: the folder of a ``kit cv`` run with a neural member and the lexical member (here:
``kit cv --train data/pandalm/pandalm_kaggle.csv --models minilm,lexical --head pairwise
--folds 5 --max-length 256``, results/cv_pandalm). For each of its folds k:

* **ensemble** — the cv's members blended with weights fitted out of fold (log space), the
  ``blend`` figure cross-fitted exactly as ``kit cv`` reports it;
* **student, soft (nested teacher)** — the lexical member trained on the rows of the other
  folds, each row's target being the ensemble's probabilities from teacher models that saw
  neither that row's fold nor fold k (the neural member refitted per pair of folds through the
  kit's own stages, ``nested_neural``), scored on fold k's human labels. This is the figure the
  goal is judged on: the student never learns a teacher's in-sample fit, nor a teacher's
  knowledge of the rows it is scored on;
* **student, soft (out-of-fold teacher)** — the same with the cv's out-of-fold probabilities
  as targets: cheaper, but those come from teacher models that trained on fold k (flattered;
  the ``check`` rows measure how much on the lexical teacher alone);
* **student, hard** — the same student on the human labels (the lexical member itself);
* **ensemble + guardrails** — the fitted guardrails of ``kit blend`` on the ensemble's rows.

Inference cost: seconds to score 1,000 rows (PandaLM rows, repeated) with each, one process,
2 CPU threads: the ensemble pays for every member, the student for itself. The goal (issue
11): the student keeps >= 80 % of the ensemble's log-loss gain over the class prior at <= 1/2
of its inference cost. Prints and writes results/distill/ (distill.json, distill.md, distill.png).

The cv folder's predictions are read as files: its run may predate stage manifests.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
from kit.store.cache import read_cache
from kit.store.io import write_results

OUT = ROOT / "results" / "distill"


def relative_to_repo(path) -> str:
    """A path as the results file records it: relative to the repository (no machine's absolute path)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def member_oof(cv: Path, name: str) -> pd.DataFrame:
    from kit.store.predictions import check_predictions
    from kit.store.io import read_csv_keeping_ids

    parts = []
    for fold_dir in sorted((cv / "models" / name).glob("fold*")):
        path = fold_dir / "predictions" / "oof.csv"
        parts.append(check_predictions(read_csv_keeping_ids(path), path).assign(fold=int(fold_dir.name[4:])))
    return pd.concat(parts, ignore_index=True)


def nested_neural(cv: Path, name: str, ids: np.ndarray, folds: np.ndarray, work: Path) -> dict[tuple, np.ndarray]:
    """The neural teacher refitted nested: for each pair of folds {k, j}, a model trained (full
    recipe, ``kit train --fold full``) on the other folds' rows only, scoring the rows of k and j
    (``kit infer``, swap TTA). Its probabilities of fold j's rows are clean targets for a student
    held out on fold k, and vice versa: 10 fine-tunings for 5 folds. Each pair runs through the
    kit's CLI stages into ``work/pair<k><j>/``; a finished pair (complete manifests) is reused, a
    killed one resumes from its checkpoints. Returns {(k, j): probabilities of fold j's rows}."""
    import itertools
    import subprocess

    from kit.store.io import manifest_path, read_csv_keeping_ids, write_csv
    from kit.core.errors import StaleOutput
    from kit.store.manifest import read_manifest
    from kit.store.cache import check_cache
    from kit.store.models import check_trained

    def done(check) -> bool:
        try:
            check()
            return True
        except StaleOutput:
            return False

    source = read_cache(cv / "tokenized" / name)
    table = pd.concat([read_csv_keeping_ids(p) for p in source.train_sources]).set_index("id").loc[ids]
    max_length = str(source.max_length)
    kit = [sys.executable, "-m", "kit"]
    out: dict[tuple, np.ndarray] = {}
    pairs = list(itertools.combinations(sorted(np.unique(folds).tolist()), 2))
    ids = np.asarray(ids)
    from tqdm import tqdm
    for k, j in tqdm(pairs, desc=f"nested {name} teacher (fold pairs)"):
        pair = work / name / f"pair{k}{j}"
        held = np.isin(folds, [k, j])
        predictions = pair / "model" / "predictions" / "test.csv"
        if not done(lambda: read_manifest(manifest_path(predictions), "predictions", "")):
            pair.mkdir(parents=True, exist_ok=True)
            if not (pair / "train.csv").exists():
                write_csv(table[~held].reset_index(), pair / "train.csv")
                write_csv(table[held].reset_index()[["id", "prompt", "response_a", "response_b"]], pair / "test.csv")
            if not done(lambda: check_cache(pair / "tokenized", "test")):
                subprocess.run(kit + ["tokenize", "--model", name, "--train", str(pair / "train.csv"), "--test",
                                      str(pair / "test.csv"), "--max-length", max_length, "--out",
                                      str(pair / "tokenized"), "--overwrite"], check=True)
            if not done(lambda: check_trained(pair / "model")):
                subprocess.run(kit + ["train", "--model", name, "--fold", "full", "--tokenized",
                                      str(pair / "tokenized"), "--out", str(pair / "model")], check=True)
            subprocess.run(kit + ["infer", "--trained", str(pair / "model"), "--split", "test", "--overwrite"],
                           check=True)
        scored = read_csv_keeping_ids(predictions).set_index("id")[["p_a", "p_b", "p_tie"]]
        for a, b in ((k, j), (j, k)):
            out[(a, b)] = scored.loc[ids[folds == b]].to_numpy()
    return out


def seconds_per_1000(score, rows: int = 1000) -> float:
    started = time.perf_counter()
    score(rows)
    return (time.perf_counter() - started) * 1000 / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cv", type=Path, default=ROOT / "artifacts" / "cv_pandalm_256")
    parser.add_argument("--neural", default="minilm", help="the cv's neural member")
    parser.add_argument("--nested-work", type=Path, default=ROOT / "artifacts" / "distill_nested",
                        help="where the nested neural teacher's 10 fold-pair models go (reused when complete)")
    parser.add_argument("--skip-nested", action="store_true",
                        help="skip the nested neural teacher (~50 min on 2 cores): no verdict on the goal")
    args = parser.parse_args()

    import torch

    from kit.store.predictions import MemberPredictions

    from kit.ensemble.combine import blend_members, combine, fit_weights
    from kit.core.metrics import log_loss
    from kit.ensemble.evaluation import prior_probs
    from kit.members import get_member_type
    from kit.store.io import read_parquet_keeping_ids
    from kit.members.lexical import LexicalModel
    from kit.core.presets import Preset, resolve_preset

    torch.set_num_threads(2)
    members = [MemberPredictions(n, [], None, member_oof(args.cv, n)) for n in (args.neural, "lexical")]
    teacher = blend_members(members, "fit", "log")
    ids, labels, folds = teacher.oof_ids, teacher.oof_labels, teacher.oof_folds
    ensemble = teacher.oof_blend  # cross-fitted: weights fitted on the other folds
    text = read_parquet_keeping_ids(args.cv / "tokenized" / "lexical" / "train.parquet").set_index("id").loc[ids]
    text = text.reset_index()
    lexical = resolve_preset("lexical")
    extra = dict(C=lexical.lexical_c, dense_scale=lexical.lexical_dense_scale)

    onehot = np.eye(3)[labels]

    def student(targets_of) -> np.ndarray:
        """The lexical student per fold k, trained on the other folds' rows with targets_of(k)
        (None: the human labels), scored on fold k."""
        probs = np.zeros_like(ensemble)
        for k in np.unique(folds):
            rest, here = folds != k, folds == k
            probs[here] = LexicalModel(**extra, seed=42).fit(text[rest], labels[rest], targets_of(k)).predict_proba(
                text[here])
        return probs

    # nested teachers: each member's probabilities of fold j's rows from a model that trained on
    # neither fold j nor fold k, the student's held-out fold. {(k, j): probabilities of fold j's rows}
    lexical_nested = {}
    for k in np.unique(folds):
        for j in np.unique(folds[folds != k]):
            inner = (folds != k) & (folds != j)
            lexical_nested[(k, j)] = LexicalModel(**extra, seed=42).fit(text[inner], labels[inner]).predict_proba(
                text[folds == j])
    neural_nested = (None if args.skip_nested else
                     nested_neural(args.cv, args.neural, ids, folds, args.nested_work))

    def nested_rows(table: dict, k) -> np.ndarray:
        rest = folds != k
        probs = np.zeros((int(rest.sum()), 3))
        for j in np.unique(folds[rest]):
            probs[folds[rest] == j] = table[(k, j)]
        return probs

    nested_weights = {}

    def nested_ensemble(k) -> np.ndarray:
        """The whole teacher, nested: both members nested, blended in log space with weights
        fitted on the student's training rows only (never on fold k)."""
        probs = [nested_rows(neural_nested, k), nested_rows(lexical_nested, k)]
        w = fit_weights(probs, labels[folds != k], "log")
        nested_weights[int(k)] = w.tolist()
        return combine(probs, w, "log")

    lexical_oof = members[1].oof.set_index("id").loc[ids][["p_a", "p_b", "p_tie"]].to_numpy()
    rows_probs = {
        "student, hard labels": student(lambda k: None),
        "student, soft labels (out-of-fold teacher: flattered)": student(lambda k: ensemble[folds != k]),
        "check: student of the lexical teacher, out-of-fold targets": student(lambda k: lexical_oof[folds != k]),
        "check: student of the lexical teacher, nested targets": student(lambda k: nested_rows(lexical_nested, k)),
    }
    if neural_nested is not None:
        rows_probs["student, soft labels (nested teacher)"] = student(nested_ensemble)
        rows_probs["student, 1/2 soft + 1/2 hard labels (nested teacher)"] = student(
            lambda k: 0.5 * nested_ensemble(k) + 0.5 * onehot[folds != k])

    # the fitted guardrails (kit/ensemble/guardrails.py) on the ensemble's out-of-fold rows, as `kit blend` fits them
    from kit.data.ingest import load_conversations
    from kit.ensemble.guardrails import fit_guardrails

    source = read_cache(args.cv / "tokenized" / "lexical").train_sources
    conv = pd.concat([load_conversations(p).frame for p in source]).set_index("id").loc[ids].reset_index()
    rails, railed = fit_guardrails(conv, labels, folds, ensemble)

    prior = prior_probs(labels, folds)
    rows = {"prior": log_loss(labels, prior), "ensemble": log_loss(labels, ensemble),
            "ensemble + guardrails": log_loss(labels, railed)}
    rows |= {name: log_loss(labels, probs) for name, probs in rows_probs.items()}

    # inference cost per 1,000 rows: the neural member (fold 0's model) and the lexical one
    fold0 = args.cv / "models" / args.neural / "fold0"
    preset = Preset.from_dict(json.loads((fold0 / "config.json").read_text())["preset"])
    head = get_member_type(preset.member)
    packed = read_parquet_keeping_ids(args.cv / "tokenized" / args.neural / "train.parquet")
    net, tokenizer = head.load_model(fold0, preset)
    repeat = lambda frame, n: frame.iloc[np.arange(n) % len(frame)].reset_index(drop=True)  # noqa: E731
    neural_s = seconds_per_1000(lambda n: head.score(net, repeat(packed, n), tokenizer.pad_token_id))
    lexical_model = LexicalModel(**extra, seed=42).fit(text, labels)
    lexical_s = seconds_per_1000(lambda n: lexical_model.predict_proba(repeat(text, n)))
    cost = {name: lexical_s for name in rows} | {"prior": 0.0, "ensemble": neural_s + lexical_s,
                                                  "ensemble + guardrails": neural_s + lexical_s}

    gain = rows["prior"] - rows["ensemble"]
    kept = {name: (rows["prior"] - loss) / gain for name, loss in rows.items()}
    headline = "student, soft labels (nested teacher)"
    verdict = None
    if headline in rows:
        ratio = cost[headline] / cost["ensemble"]
        verdict = {"student": headline, "gain_kept": kept[headline], "cost_ratio": ratio,
                   "met": bool(kept[headline] >= 0.8 and ratio <= 0.5)}
    payload = {"cv": relative_to_repo(args.cv), "rows": len(ids), "folds": int(len(np.unique(folds))),
               "teacher": {"members": teacher.members, "weights": teacher.weights, "space": "log",
                           "per_fold": teacher.report["per_fold"],
                           "nested_weights_per_outer_fold": nested_weights},
               "log_loss": rows, "gain_kept": kept, "seconds_per_1000_rows": cost, "guardrails": rails.report,
               "goal": verdict,
               # how much out-of-fold (not nested) targets flatter a student, measured on the lexical teacher
               "leak": rows["check: student of the lexical teacher, nested targets"]
               - rows["check: student of the lexical teacher, out-of-fold targets"]}
    table = pd.DataFrame({"log loss": rows, "gain over prior kept": kept, "s / 1,000 rows": cost})
    if verdict is None:
        conclusion = ("The nested neural teacher was skipped (`--skip-nested`): no verdict on the goal; the "
                      "out-of-fold-teacher row is flattered (see the check rows).")
    else:
        conclusion = (f"**Goal {'met' if verdict['met'] else 'not met'}**: the soft student of the nested teacher "
                      f"keeps {verdict['gain_kept']:.1%} of the ensemble's gain over the prior ({rows['prior']:.4f} -> "
                      f"{rows['ensemble']:.4f}) at {verdict['cost_ratio']:.1%} of its inference cost (goal: >= 80 % "
                      f"at <= 50 %). Against the same student on human labels: "
                      f"{rows[headline] - rows['student, hard labels']:+.4f} log loss.")
    md = (f"# Distillation: ensemble -> lexical student (PandaLM, {len(ids)} out-of-fold rows, "
          f"{payload['folds']} prompt-grouped folds)\n\n"
          f"Teacher: {', '.join(teacher.members)} blended in log space ({', '.join(f'{m} {w:.3f}' for m, w in zip(teacher.members, teacher.weights))} "
          f"fitted on all out-of-fold rows; the `ensemble` row is cross-fitted, weights from the other folds). "
          f"Student: the lexical member (preset settings) trained per held-out fold k on the other folds' rows; "
          f"every figure is scored on fold k's human labels. Targets:\n\n"
          f"* **nested teacher** (the honest one): each training row in fold j gets the probabilities of a teacher "
          f"that trained on neither fold j nor fold k — {args.neural} refitted with its full recipe on the three "
          f"other folds (10 fold-pair models, `kit tokenize/train --fold full/infer`, swap TTA), the lexical member "
          f"likewise, blended with weights fitted on the student's training rows only;\n"
          f"* **out-of-fold teacher**: the ensemble's out-of-fold probabilities — flattered, since they come from "
          f"teacher models that trained on fold k (the `check` rows measure this on the lexical teacher alone);\n"
          f"* **hard**: the human labels (the lexical member itself).\n\n"
          f"Inference: 1,000 rows, one process, 2 CPU threads ({args.neural} at its cv token budget).\n\n"
          + table.to_markdown(floatfmt=".4f")
          + f"\n\n{conclusion} Out-of-fold instead of nested targets flatter a student by "
          f"{payload['leak']:+.4f} log loss on the lexical teacher.\n\n"
          "Guardrails fitted on the ensemble's out-of-fold rows (cross-fitted, kept only where they help): "
          + "; ".join(f"{rule}: {r['rows']} rows" + (f", {r['log_loss_before']:.3f} -> {r['log_loss_after']:.3f}, "
                                                     f"{'kept' if r['kept'] else 'not kept'}" if r["rows"] else "")
                      for rule, r in rails.report.items()) + ".\n"
          "\n![log loss and cost](distill.png)\n")
    OUT.mkdir(parents=True, exist_ok=True)
    write_results(payload, OUT / "distill.json")
    (OUT / "distill.md").write_text(md)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    names = list(rows)
    axes[0].barh(names, [rows[n] for n in names], color="#4C72B0")
    axes[0].set_xlim(min(rows.values()) - 0.05, max(rows.values()) + 0.02)
    axes[0].set_xlabel("out-of-fold log loss (lower is better)")
    axes[1].barh(names, [cost[n] for n in names], color="#DD8452")
    axes[1].set_xlabel("seconds per 1,000 rows (CPU)")
    axes[1].set_yticklabels([])
    fig.tight_layout()
    fig.savefig(OUT / "distill.png", dpi=120)
    print(md)


if __name__ == "__main__":
    main()
