"""Behaviour unchanged by the layered kit: the kit before the refactor (a git commit, extracted
with ``git archive``) and this checkout train and score on the *same* tokenized cache, and their
predictions are printed side by side.

* lexical member: held-out and test probabilities must be bit-identical;
* MiniLM, pairwise member, same seed and steps: equal within 1e-6.

    python scripts/compare_refactor.py [--base bd9d9b2] [--members lexical,minilm] [--out results/refactor]

Writes ``OUT/compare.json`` and ``OUT/compare.md``; exits 1 when a bound is not met.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
from kit.store.io import write_results

PANDALM = ROOT / "data" / "pandalm" / "pandalm_kaggle.csv"
TEST = ROOT / "data" / "kaggle" / "train_sample.csv"  # 100 real rows scored as a test table (labels ignored)
PROBS = ["p_a", "p_b", "p_tie"]


def kit(code_root: Path, *args, cwd: Path) -> None:
    """``python -m kit ARGS`` with the kit found under ``code_root`` (first on PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(code_root), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "kit", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"kit {' '.join(map(str, args[:2]))} failed under {code_root}:\n{proc.stderr[-3000:]}")


def kit_help(code_root: Path, stage: str) -> str:
    """``python -m kit STAGE --help`` of the kit under ``code_root``."""
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    return subprocess.run([sys.executable, "-m", "kit", stage, "--help"], env=env, capture_output=True,
                          text=True).stdout


def probs(path: Path) -> np.ndarray:
    return pd.read_csv(path, dtype={"id": str})[PROBS].to_numpy(dtype=np.float64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="bd9d9b2", help="the commit before the refactor")
    parser.add_argument("--members", default="lexical,minilm", help="which of lexical, minilm to compare")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "refactor")
    args = parser.parse_args()
    chosen = args.members.split(",")
    work = Path(tempfile.mkdtemp(prefix="kit-compare-"))
    old_root = work / "old"
    old_root.mkdir()
    archive = subprocess.run(["git", "archive", args.base, "kit"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive, check=True)
    members = {
        "lexical": {"tokenize": ["--model", "lexical"], "train": [], "bound": 0.0},
        "minilm": {"tokenize": ["--model", "minilm", "--head", "pairwise", "--max-length", "64", "--max-rows", "160"],
                   "train": ["--max-steps", "4", "--batch-size", "8", "--max-train-rows", "48", "--evals-per-run", "1"],
                   "bound": 1e-6},
    }
    unknown = sorted(set(chosen) - set(members))
    if unknown:
        raise SystemExit(f"--members: {unknown} unknown; choose from {', '.join(members)}")
    rows, ok = [], True
    for name, recipe in ((n, members[n]) for n in chosen):
        started = time.time()
        cache = work / f"tok-{name}"
        # one cache, made by the old kit: both kits read it
        kit(old_root, "tokenize", *recipe["tokenize"], "--train", PANDALM, "--test", TEST, "--folds", "2",
            "--out", cache, cwd=work)
        scored = {}
        for label, code in (("before", old_root), ("after", ROOT)):
            model = work / f"{label}-{name}"
            kit(code, "train", "--model", name, "--fold", "0", "--tokenized", cache, "--out", model, "--seed", "7",
                *recipe["train"], cwd=work)
            # the trained-model flag was --model-dir before the backbone took that name
            flag = "--trained" if "--trained" in kit_help(code, "infer") else "--model-dir"
            kit(code, "infer", flag, model, "--split", "test", cwd=work)
            scored[label] = {"oof": probs(model / "oof.csv"), "test": probs(model / "predictions" / "test.csv")}
        for split in ("oof", "test"):
            a, b = scored["before"][split], scored["after"][split]
            diff = float(np.abs(a - b).max())
            identical = bool(np.array_equal(a, b))
            met = identical if recipe["bound"] == 0.0 else diff <= recipe["bound"]
            ok &= met
            rows.append({"member": name, "split": split, "rows": len(a), "max_abs_diff": diff,
                         "bit_identical": identical, "bound": "bit-identical" if recipe["bound"] == 0.0
                         else f"<= {recipe['bound']:g}", "met": met,
                         "before_first_row": [round(x, 8) for x in a[0]], "after_first_row": [round(x, 8) for x in b[0]],
                         "seconds": round(time.time() - started, 1)})
    table = pd.DataFrame(rows)
    print(table.drop(columns=["seconds"]).to_string(index=False))
    args.out.mkdir(parents=True, exist_ok=True)
    write_results({"base": args.base, "rows": rows, "all_met": ok}, args.out / "compare.json")
    md = (f"# Before/after the layered kit (base commit `{args.base}` vs this checkout)\n\n"
          f"Same cache (made by the base kit), same seed. PandaLM, 2 prompt-grouped folds, fold 0 trained; "
          f"`oof` = its held-out rows, `test` = the 100 real Kaggle rows scored as a test table. MiniLM: pairwise "
          f"member, 64 tokens per side, 4 steps on 48 rows. Reproduce: `python scripts/compare_refactor.py`.\n\n"
          + table.drop(columns=["seconds"]).to_markdown(index=False) + "\n")
    (args.out / "compare.md").write_text(md)
    print("all bounds met" if ok else "A BOUND IS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
