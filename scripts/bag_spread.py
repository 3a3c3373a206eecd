"""The spread of a seed-bagged recipe: every SIZE-seed sub-bag of a finished ``kit cv --bag-seeds`` run,
blended and scored on the same out-of-fold rows.

    python scripts/bag_spread.py --cv artifacts/cv_pandalm_bag --model gemma3-270m --size 1 2 3 4 \\
        --out results/cv_pandalm_bag/bag_spread

A bag of 3 seeds is one draw of the recipe "Gemma bagged over 3 seeds"; how much its figures move from one
draw to the next is the recipe's seed spread. With more seeds trained (say 5), each 3-seed subset is such a
draw (they share models, so the range is a lower bound of the spread of independent bags). Nothing is
trained: each subset reruns ``kit cv`` with the run's own settings (``given`` in its cv.json) and
``--bag-seeds MODEL=subset``, every fold reused; the blend's weights are fitted (and cross-fitted) per subset as in the run. The run's full
report is rewritten last, so ``--cv`` ends as it began. Writes ``OUT/bag_spread.json`` (with the commit and
command), ``bag_spread.md`` and ``bag_spread.png`` (the blend against the number of seeds bagged: where more
seeds stop paying).
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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


def _table(rows: list[dict], whole: dict, model: str, judges: list[str]) -> list[str]:
    head = ["seeds", "blend log loss", "blend accuracy", f"{model} log loss", f"{model} accuracy"] + judges
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows + [whole]:
        cells = [", ".join(map(str, r["seeds"])) + (" (all)" if r is whole else ""),
                 f"{r['blend']['log_loss']:.4f}", f"{r['blend']['accuracy']:.4f}",
                 f"{r[model]['log_loss']:.4f}", f"{r[model]['accuracy']:.4f}"]
        cells += [f"{r[j]['difference']:+.4f} [{r[j]['low']:+.4f}, {r[j]['high']:+.4f}]" for j in judges]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _figure(by_size: dict[int, list[dict]], whole: dict, saved: dict, model: str, path: Path) -> None:
    """Blend log loss and accuracy against the number of seeds bagged: every sub-bag a dot, the mean a line,
    the external judges' accuracy dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted(by_size) + [len(whole["seeds"])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "log_loss", "blend out-of-fold log loss (lower is better)"),
                              (axes[1], "accuracy", "blend out-of-fold accuracy")):
        points = {k: [r["blend"][metric] for r in by_size[k]] for k in by_size} | {sizes[-1]: [whole["blend"][metric]]}
        for k in sizes:
            ax.scatter([k] * len(points[k]), points[k], color="tab:blue", alpha=0.5, s=18)
        ax.plot(sizes, [sum(points[k]) / len(points[k]) for k in sizes], color="tab:blue", label="mean over sub-bags")
        if metric == "accuracy":
            for name, res in saved["results"].items():
                if name.startswith("judge: ") and res.get("log_loss") is None and res.get("accuracy") is not None:
                    ax.axhline(res["accuracy"], linestyle="--", color="grey")
                    ax.annotate(name.removeprefix("judge: "), (sizes[0], res["accuracy"]), fontsize=8)
        ax.set_xlabel(f"{model} seeds bagged")
        ax.set_ylabel(label)
        ax.set_xticks(sizes)
        ax.legend(fontsize=8)
    fig.suptitle(f"The blend with {model} bagged over k of {len(whole['seeds'])} seeds (every k-subset)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cv", required=True, help="a finished kit cv --out folder with a seed bag")
    parser.add_argument("--model", required=True, help="the bagged member")
    parser.add_argument("--size", type=int, nargs="+", default=[3],
                        help="seeds per sub-bag; several sizes give the curve against the number of seeds")
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
    sizes = sorted(set(args.size))
    if not seeds or sizes[0] < 1 or sizes[-1] >= len(seeds):
        raise SystemExit(f"{cv_dir}/cv.json bags {args.model} over {seeds}: every --size must be 1 to "
                         f"{len(seeds) - 1}, got {sizes}")
    by_size: dict[int, list[dict]] = {}
    for size in sizes:
        for subset in itertools.combinations(seeds, size):
            result = rerun(cv_dir, given, args.model, list(subset))
            by_size.setdefault(size, []).append({"seeds": list(subset), **figures(result, args.model)})
            row = by_size[size][-1]
            print(f"seeds {list(subset)}: blend {row['blend']['log_loss']:.4f} / {row['blend']['accuracy']:.4f}",
                  flush=True)
    full = rerun(cv_dir, given, args.model, seeds)  # the run's own report back in place
    whole = {"seeds": seeds, **figures(full, args.model)}
    ranges = {}
    for size, rows in by_size.items():
        ll, acc = [r["blend"]["log_loss"] for r in rows], [r["blend"]["accuracy"] for r in rows]
        ranges[size] = {"blend_log_loss": [min(ll), max(ll)], "blend_accuracy": [min(acc), max(acc)],
                        "blend_log_loss_mean": sum(ll) / len(ll), "blend_accuracy_mean": sum(acc) / len(acc),
                        "subsets": len(rows)}
    payload = {"cv": str(cv_dir), "model": args.model, "sizes": sizes,
               "subsets": [r | {"size": k} for k, rows in by_size.items() for r in rows], "all_seeds": whole,
               "range": ranges, "provenance": provenance(started)}
    out.mkdir(parents=True, exist_ok=True)
    write_json(payload, out / "bag_spread.json", overwrite=True)
    judges = [k for k in whole if k.startswith("blend − judge: ")]
    summary = ["| seeds bagged | sub-bags | blend log loss: mean [min, max] | blend accuracy: mean [min, max] |",
               "|---|---|---|---|"]
    for size in sizes:
        r = ranges[size]
        summary.append(f"| {size} | {r['subsets']} | {r['blend_log_loss_mean']:.4f} [{r['blend_log_loss'][0]:.4f}, "
                       f"{r['blend_log_loss'][1]:.4f}] | {r['blend_accuracy_mean']:.4f} [{r['blend_accuracy'][0]:.4f}, "
                       f"{r['blend_accuracy'][1]:.4f}] |")
    summary.append(f"| {len(seeds)} (all) | 1 | {whole['blend']['log_loss']:.4f} | {whole['blend']['accuracy']:.4f} |")
    md = (f"# Seed spread of {args.model} bagged over {', '.join(map(str, sizes))} of {len(seeds)} seeds\n\n"
          f"`{cv_dir}`: every subset of the seeds {seeds} of each size, blended with the run's settings on the same "
          f"out-of-fold rows (subsets share models, so a range is a lower bound of the spread of independent bags). "
          f"Judge columns: blend minus the judge's accuracy [paired bootstrap 95 % interval over prompts].\n\n"
          + "\n".join(summary) + "\n\n![against the number of seeds](bag_spread.png)\n\n"
          + "\n\n".join(f"## {size} seed{'s' if size > 1 else ''}\n\n"
                          + "\n".join(_table(by_size[size], whole, args.model, judges)) for size in sizes) + "\n")
    (out / "bag_spread.md").write_text(md)
    _figure(by_size, whole, saved, args.model, out / "bag_spread.png")
    print(md)


if __name__ == "__main__":
    main()
