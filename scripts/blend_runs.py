"""Blend members taken from finished ``kit cv`` runs under names of your choosing: the same preset trained two
ways (say Gemma-3-270M bagged over five seeds on 200 rows per fold, and once on every training row) enters as
two members. Scored exactly as ``kit cv`` scores a blend: on the out-of-fold rows every member covers, weights
(and, when asked, a temperature) cross-fitted per fold, every difference with its paired bootstrap interval over
prompts, external judges beside them.

    python scripts/blend_runs.py --tokenized artifacts/cv_pandalm_all/tokenized/gemma3-270m \\
        --member "gemma-all=artifacts/cv_pandalm_all/models/gemma3-270m/fold?" \\
        --member "gemma-bag5=artifacts/cv_pandalm_bag/models/gemma3-270m/fold?" \\
                 "gemma-bag5=artifacts/cv_pandalm_bag/models/gemma3-270m/fold?-seed[0-9]" \\
                 "gemma-bag5=artifacts/cv_pandalm_bag/models/gemma3-270m/fold?-seed[0-9][0-9]" \\
        --member "minilm=artifacts/cv_pandalm_all/models/minilm/fold?" \\
        --member "lexical=artifacts/cv_pandalm_all/models/lexical/fold?" \\
        --judge-csv "pandalm-7b=data/pandalm/judges/pandalm-7b.csv" --out results/...

A member's patterns (``NAME=GLOB``; give a name again to add models) are expanded and sorted; a fold with
several models is their seed bag (their mean, as ``kit cv --bag-seeds``), and every fold must have as many
models as the others. Every member must hold out each row in the same fold (runs made with the same ``--seed``
and tokenized cache), else the script stops: a row one member was trained on would be scored as held out.
Writes ``OUT/blend_runs.json`` (with the commit and command), ``blend_runs.md`` and ``blend_runs.png``.
"""
from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import pandas as pd

from kit.core.errors import KitError
from kit.core.provenance import provenance
from kit.ensemble.combine import blend_members, describe_weights
from kit.ensemble.evaluation import evaluation_table, table_scores
from kit.ensemble.intervals import N_DRAWS, differences_markdown
from kit.ensemble.judges import comparison_markdown, external_judge, judge_table
from kit.ensemble.report import blend_comparisons
from kit.store.figures import plot_methods
from kit.store.io import write_json, write_text
from kit.store.predictions import load_member

ROOT = Path(__file__).resolve().parent.parent


def member_dirs(specs: list[str]) -> dict[str, list[Path]]:
    """``NAME=GLOB`` specs -> each name's model folders, in the order the names first appear."""
    dirs: dict[str, list[Path]] = {}
    for spec in specs:
        name, sep, pattern = spec.partition("=")
        if not sep or not name or not pattern:
            raise SystemExit(f"--member {spec!r}: expected NAME=GLOB (e.g. gemma-all=artifacts/cv/models/gemma3-270m/fold?)")
        found = sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / "config.json").exists())
        if not found:
            raise SystemExit(f"--member {spec!r}: no trained model folder (with a config.json) matches {pattern!r}")
        known = dirs.setdefault(name, [])
        known.extend(d for d in found if d not in known)  # a folder two patterns match counts once
    return dirs


def check_same_folds(members) -> None:
    """Stop unless every member holds out each shared row in the same fold."""
    first = members[0].oof.set_index("id")["fold"]
    for m in members[1:]:
        other = m.oof.set_index("id")["fold"]
        shared = first.index.intersection(other.index)
        moved = (first.loc[shared] != other.loc[shared]).sum()
        if moved:
            raise SystemExit(f"member {m.name} holds out {moved} of {len(shared)} rows in another fold than "
                             f"{members[0].name}: its run used other folds (another --seed or cache); blend runs made "
                             f"with the same folds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--member", nargs="+", action="extend", required=True,
                        help="NAME=GLOB of trained model folders (fold folders of kit cv runs); repeatable")
    parser.add_argument("--tokenized", required=True,
                        help="the runs' tokenized training cache (its prompts group the bootstrap; its table feeds "
                             "the baselines)")
    parser.add_argument("--weights", default="fit", help="fit | stack | equal | w1,w2,... (as kit cv)")
    parser.add_argument("--space", default="log", choices=["prob", "log"])
    parser.add_argument("--temperature", action="store_true", help="fit a temperature on the blend (cross-fitted)")
    parser.add_argument("--judge-csv", nargs="*", default=[], help="NAME=CSV external judges' verdicts, scored beside")
    parser.add_argument("--out", required=True, help="where blend_runs.json/.md/.png go")
    args = parser.parse_args()
    try:
        run(args)
    except (KitError, OSError) as err:  # a bad table, judge file or member folder: one line, no traceback
        raise SystemExit(f"blend_runs: {err}")


def run(args) -> None:
    started = time.time()
    dirs = member_dirs(args.member)
    members = [load_member(name, d, need_test=False) for name, d in dirs.items()]
    check_same_folds(members)
    try:
        weights = args.weights if args.weights in ("fit", "stack", "equal", "paper") else [
            float(w) for w in args.weights.split(",")]
    except ValueError:
        raise SystemExit(f"--weights {args.weights!r}: fit, stack, equal, paper or one number per member")
    result = blend_members(members, weights, args.space, args.temperature)
    table = evaluation_table(result, args.tokenized)
    judges = []
    for spec in args.judge_csv:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--judge-csv {spec!r}: expected NAME=CSV")
        judges.append(external_judge(name, path, result.oof_ids, result.oof_labels, result.oof_folds))
    if judges:
        table = pd.concat([table, judge_table(judges, result.oof_labels)])
    differences = blend_comparisons(result, judges)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"rows": len(result.oof_ids), "members": {n: [str(p) for p in d] for n, d in dirs.items()},
               "tokenized": args.tokenized, "weights_mode": result.weights_mode, "space": args.space,
               "weights": dict(zip(result.members, result.weights)), "temperature": result.temperature,
               "per_fold": result.report["per_fold"], "oof_score": result.report["oof_score"],
               "results": table_scores(table),
               "comparisons": [d.to_dict() for d in differences], "provenance": provenance(started)}
    md = (f"# Blend of members from several kit cv runs\n\n{payload['rows']} out-of-fold rows (every member's "
          f"folds agree); members: "
          + "; ".join(f"**{n}** ({len(d)} model folders, the first {d[0]})" for n, d in dirs.items())
          + f"; blend weights {describe_weights(result)} in {args.space} space"
          + (f", temperature {result.temperature:.2f}" if args.temperature else "")
          + f", the `blend` row {result.report['oof_score']}.\n\n" + comparison_markdown(table)
          + (f"\n\n## Differences on the same rows, with paired bootstrap 95 % intervals\n\nThe first method's figure "
             f"minus the second's; the interval resamples whole prompts ({differences[0].groups} of them, {N_DRAWS} "
             f"draws). Log loss: negative favours the first; accuracy: positive favours the first.\n\n"
             + differences_markdown(differences) if differences else "")
          + "\n![out-of-fold log loss and accuracy per method](blend_runs.png)\n")
    plot_methods(table, out / "blend_runs.png", title=f"blend of runs: {payload['rows']} out-of-fold rows",
                 overwrite=True)
    write_json(payload, out / "blend_runs.json", overwrite=True)
    write_text(md, out / "blend_runs.md", overwrite=True)
    print(md)


if __name__ == "__main__":
    main()
