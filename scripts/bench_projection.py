"""The scoring-time projection against the measured time, for every member type the CPU runs.

    .venv/bin/python scripts/bench_projection.py [--timed-rows 100] [--rows 600] [--out results/projection.md]

For each member (lexical; MiniLM pairwise and joint; SmolLM2 pairwise, a decoder) a model is trained
briefly on PandaLM rows (its quality does not matter here), timed by the infer stage on a small test
table of ``--timed-rows`` rows (what a training session records), and then used to score a test table
of ``--rows`` other rows; each scoring run in a process of its own, as a session runs it. ``kit submit``'s preflight projects the large table's time from the small
run's record (:func:`kit.workflows.preflight.timing_parts`: the load once, then seconds per row and
pass); the table gives the projection, the measured time of the large run and their ratio, and the
projection an older record (the total only, all per row) would have given. Written to ``--out`` and
its ``.json`` twin, with the commit and the command.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from kit.core.files import read_json
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from kit.store.io import benchmark_command, write_benchmark
from kit.workflows.preflight import timing_parts

ROOT = Path(__file__).resolve().parent.parent
PANDALM = ROOT / "data" / "pandalm" / "pandalm_kaggle.csv"
MEMBERS = {"lexical": {}, "minilm": {}, "minilm-joint": {"member": "joint"}, "smollm2": {"max_length": 128}}


def _timing(predictions: Path) -> dict:
    return read_json(predictions.with_name(predictions.stem + ".manifest.json"), "rerun the benchmark")["timing"]


def _infer(model: Path, out: Path, *more) -> Path:
    subprocess.run([sys.executable, "-m", "kit", "infer", "--trained", str(model), "--split", "test", "--out",
                    str(out), *map(str, more)], check=True, capture_output=True)
    return out


def measure(name: str, options: dict, work: Path, small: Path, large: Path, large_rows: int) -> dict:
    preset = name.split("-")[0]
    tok = work / name / "tok"
    tokenize_stage(preset, [PANDALM], str(small), n_folds=2, max_rows=200, out=tok, **options)
    model = train_stage(preset, 0, tokenized=tok, out=work / name / "model",
                        max_steps=2, batch_size=4, evals_per_run=1).out_dir
    # each scoring run in a process of its own, as a session's infer notebook and kit submit run it
    timed = _infer(model, work / name / "small.csv")
    tokenize_stage(preset, [], str(large), out=work / name / "tok_large", **options)
    measured = _infer(model, work / name / "large.csv", "--tokenized", work / name / "tok_large")
    record, run = _timing(timed), _timing(measured)
    fixed, per_row = timing_parts(record)
    passes = run["passes"]
    projected = fixed + large_rows * passes * per_row
    old_style = large_rows * passes * record["seconds"] / (record["rows"] * record["passes"])
    return {"member": name, "timed_rows": record["rows"], "load_s": record["load_seconds"],
            "per_row_pass_ms": round(per_row * 1000, 3), "rows": large_rows, "passes": passes,
            "projected_s": round(projected, 1), "measured_s": run["seconds"],
            "ratio": round(projected / run["seconds"], 2), "old_projection_s": round(old_style, 1),
            "old_ratio": round(old_style / run["seconds"], 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timed-rows", type=int, default=100)
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--members", default=",".join(MEMBERS))
    ap.add_argument("--out", default=str(ROOT / "results" / "projection.md"))
    a = ap.parse_args(argv)
    started = time.time()
    rows = pd.read_csv(PANDALM, dtype={"id": str}, keep_default_na=False).drop(
        columns=["winner_model_a", "winner_model_b", "winner_tie"])
    rows = rows.iloc[200:]  # never the training rows (max_rows 200 above)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small, large = work / "small.csv", work / "large.csv"
        rows.head(a.timed_rows).to_csv(small, index=False)
        rows.iloc[a.timed_rows:a.timed_rows + a.rows].to_csv(large, index=False)
        for name in a.members.split(","):
            results.append(measure(name, MEMBERS[name], work, small, large, min(a.rows, len(rows) - a.timed_rows)))
            print(results[-1], flush=True)
    command = benchmark_command(__file__, argv)
    print(write_benchmark(results, a.out, "Scoring-time projection against the measured time (CPU)",
                          f"each member timed by the infer stage on {a.timed_rows} PandaLM rows, then scoring {a.rows} "
                          f"others. `projected_s`: what `kit submit`'s preflight projects from the small run's record "
                          f"(its load once, then seconds per row and pass); `ratio` = projected / measured. "
                          f"`old_projection_s`: the total time taken as all per row (the record before load and "
                          f"scoring were timed apart). This machine: 2 cores, fp32. A projection, not a measurement: "
                          f"rows of other lengths score at other speeds.", command, started))


if __name__ == "__main__":
    main()
