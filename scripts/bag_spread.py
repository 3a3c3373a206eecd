"""The spread of a seed-bagged recipe: every SIZE-seed sub-bag of a finished ``kit cv --bag-seeds`` run,
blended and scored on the same out-of-fold rows.

    python scripts/bag_spread.py --cv artifacts/cv_pandalm_bag --model gemma3-270m --size 3 \\
        --out results/cv_pandalm_bag/bag_spread

A bag of 3 seeds is one draw of the recipe "Gemma bagged over 3 seeds"; how much its figures move from one
draw to the next is the recipe's seed spread. With more seeds trained (say 5), each 3-seed subset is such a
draw (they share models, so the range is a lower bound of the spread of independent bags). Nothing is
trained: each subset reruns ``kit cv`` with the run's own settings (``given`` in its cv.json) and
``--bag-seeds MODEL=subset``, every fold reused; the blend's weights are fitted (and cross-fitted) per subset as in the run. The run's full
report is rewritten last, so ``--cv`` ends as it began. Writes ``OUT/bag_spread.json`` (with the commit and
command), ``bag_spread.md`` and ``bag_spread.png``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

def rerun(cv_dir: Path, given: dict, model: str, seeds: list[int]) -> dict:
    """``kit cv`` on ``cv_dir`` with the run's own settings and ``model`` bagged over ``seeds`` (every fold reused)."""
    from kit.workflows.cv import cv_stage
    return cv_stage(**{**given, "out": str(cv_dir), "bag_seeds": {**(given.get("bag_seeds") or {}), model: seeds}})


def figures(result: dict, model: str) -> dict:
    """The blend's and the bagged member's figures, and the blend minus each external judge's accuracy."""
    res = result["results"]
    out = {"blend": res["blend"], model: res[model]}
    for c in result.get("comparisons", []):
        if c["a"] == "blend" and c["b"].startswith("judge: ") and c["metric"] == "accuracy":
            out[f"blend − {c['b']}"] = {k: c[k] for k in ("difference", "low", "high")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cv", required=True, help="a finished kit cv --out folder with a seed bag")
    parser.add_argument("--model", required=True, help="the bagged member")
    parser.add_argument("--size", type=int, default=3, help="seeds per sub-bag")
    parser.add_argument("--out", required=True, help="where bag_spread.json/.md/.png go")
    args = parser.parse_args()
    from kit.core.provenance import provenance
    from kit.store.io import write_json
    started = time.time()
    cv_dir, out = Path(args.cv), Path(args.out)
    saved = json.loads((cv_dir / "cv.json").read_text())
    given = saved["settings"].get("given")
    if given is None:
        raise SystemExit(f"{cv_dir}/cv.json does not record its settings (an older kit's report): rerun its kit cv "
                         f"command (the finished folds are reused) and try again")
    recorded = saved["settings"]
    seeds = list((saved["settings"].get("bag_seeds") or {}).get(args.model) or [])
    if recorded.get("bag_rows"):
        raise SystemExit(f"{cv_dir}/cv.json is a row bag (--bag-rows): a sub-bag would move the seeds' row blocks; "
                         f"pass a seed bag's run")
    if len(seeds) <= args.size:
        raise SystemExit(f"{cv_dir}/cv.json bags {args.model} over {seeds}: need more than --size {args.size} seeds")
    rows = []
    for subset in itertools.combinations(seeds, args.size):
        result = rerun(cv_dir, given, args.model, list(subset))
        rows.append({"seeds": list(subset), **figures(result, args.model)})
        print(f"seeds {list(subset)}: blend {rows[-1]['blend']['log_loss']:.4f} / {rows[-1]['blend']['accuracy']:.4f}",
              flush=True)
    full = rerun(cv_dir, given, args.model, seeds)  # the run's own report back in place
    whole = {"seeds": seeds, **figures(full, args.model)}
    blend_ll = [r["blend"]["log_loss"] for r in rows]
    blend_acc = [r["blend"]["accuracy"] for r in rows]
    payload = {"cv": str(cv_dir), "model": args.model, "size": args.size, "subsets": rows, "all_seeds": whole,
               "range": {"blend_log_loss": [min(blend_ll), max(blend_ll)], "blend_accuracy": [min(blend_acc), max(blend_acc)]},
               "provenance": provenance(started)}
    out.mkdir(parents=True, exist_ok=True)
    write_json(payload, out / "bag_spread.json", overwrite=True)
    judges = [k for k in whole if k.startswith("blend − judge: ")]
    head = ["seeds", "blend log loss", "blend accuracy", f"{args.model} log loss", f"{args.model} accuracy"] + judges
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows + [whole]:
        cells = [", ".join(map(str, r["seeds"])) + (" (all)" if r is whole else ""),
                 f"{r['blend']['log_loss']:.4f}", f"{r['blend']['accuracy']:.4f}",
                 f"{r[args.model]['log_loss']:.4f}", f"{r[args.model]['accuracy']:.4f}"]
        cells += [f"{r[j]['difference']:+.4f} [{r[j]['low']:+.4f}, {r[j]['high']:+.4f}]" for j in judges]
        lines.append("| " + " | ".join(cells) + " |")
    md = (f"# Seed spread of {args.model} bagged over {args.size} seeds\n\n`{cv_dir}`: every {args.size}-seed subset "
          f"of the seeds {seeds}, blended with the run's settings on the same out-of-fold rows (subsets share "
          f"models, so the range is a lower bound of the spread of independent bags). Blend: "
          f"{min(blend_ll):.4f}–{max(blend_ll):.4f} log loss, {min(blend_acc):.4f}–{max(blend_acc):.4f} accuracy; "
          f"all {len(seeds)} seeds: {whole['blend']['log_loss']:.4f} / {whole['blend']['accuracy']:.4f}. Judge "
          f"columns: blend minus the judge's accuracy [paired bootstrap 95 % interval over prompts].\n\n"
          + "\n".join(lines) + "\n\n![sub-bags](bag_spread.png)\n")
    (out / "bag_spread.md").write_text(md)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(blend_ll, blend_acc, label=f"{args.size}-seed sub-bags")
    ax.scatter([whole["blend"]["log_loss"]], [whole["blend"]["accuracy"]], marker="*", s=200,
               label=f"all {len(seeds)} seeds")
    for name, res in saved["results"].items():
        if name.startswith("judge: ") and res.get("log_loss") is None and res.get("accuracy") is not None:
            ax.axhline(res["accuracy"], linestyle="--", color="grey")
            ax.annotate(name.removeprefix("judge: "), (min(blend_ll), res["accuracy"]), fontsize=8)
    ax.set_xlabel("blend out-of-fold log loss (lower is better)")
    ax.set_ylabel("blend accuracy")
    ax.set_title(f"{args.model}: the blend with each {args.size}-seed bag")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bag_spread.png", dpi=120)
    print(md)


if __name__ == "__main__":
    main()
