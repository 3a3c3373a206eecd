"""The arithmetic projection calibrated on this CPU: the share of its fp32 peak training and scoring reach.

    .venv/bin/python scripts/bench_compute.py [--members gemma3-270m,smollm2,minilm] [--rows 64] [--steps 6]
                                              [--out results/compute_calibration.md]

For each member a model trains ``--steps`` updates on PandaLM rows (every row, so no held-out scoring is
mixed into the training time) and then scores ``--rows`` other rows. The FLOPs of each are what the kit's
projection counts (:mod:`kit.ops.compute`: ``2 N`` per token plus attention, three passes to train); the
share of peak is FLOPs / (seconds x this CPU's fp32 peak). ``kit.ops.compute.CPU_EFFICIENCY`` is set from the
``min`` row of the written JSON (a test holds them equal): the lowest share met, so projections err long.
Written to ``--out`` and its ``.json`` twin, with the commit and the command.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from kit.core.files import read_json
from kit.core.settings import TrainSettings
from kit.members import get_member_type
from kit.ops.compute import TRAIN_PASSES, Work, cpu_peak_flops, row_tokens
from kit.stages.infer import infer_stage
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from kit.store.cache import load_cache
from kit.store.io import benchmark_command, read_parquet_keeping_ids, write_benchmark

ROOT = Path(__file__).resolve().parent.parent
PANDALM = ROOT / "data" / "pandalm" / "pandalm_kaggle.csv"


def measure(name: str, work: Path, train_rows: int, test: Path, steps: int, model_dir: str | None = None) -> dict:
    tok = work / name
    tokenize_stage(name, [str(PANDALM)], str(test), n_folds=1, max_rows=train_rows, out=str(tok),
                   **({"model_dir": model_dir} if model_dir else {}))
    settings = TrainSettings(max_steps=steps, evals_per_run=1)
    res = train_stage(name, None, tokenized=str(tok), out=str(work / f"{name}-model"), **settings.to_dict(),
                      budget_hours=None, **({"load_in_4bit": False} if model_dir else {}))
    frame, cache, _ = load_cache(tok, "train")
    preset, member = cache.preset, get_member_type(cache.member)
    _, shape = member.compute_shape(preset)
    batch = settings.batch_size or preset.batch_size
    accum = settings.grad_accum or preset.grad_accum
    rows_seen = steps * batch * accum  # rows drawn from the whole table: its mean row, rows_seen times
    tokens = row_tokens(frame, member.work_columns)
    train_flops = Work.passes(shape, tokens, TRAIN_PASSES * rows_seen / len(frame), "train").flops
    scored = infer_stage(res.out_dir, "test", tta=False, out=str(work / f"{name}-test.csv"))
    timing = read_json(work / f"{name}-test.manifest.json", "rerun")["timing"]
    test_frame = read_parquet_keeping_ids(tok / "test.parquet")
    score_flops = Work.passes(shape, row_tokens(test_frame, member.work_columns), 1, "score").flops
    peak = cpu_peak_flops()
    return {"member": name, "non_embedding_params_m": round(shape["params"] / 1e6, 1),
            "train_tokens": int(tokens.sum() * rows_seen / len(frame)), "train_s": round(res.metrics["train_seconds"], 1),
            "train_share_of_peak": round(train_flops / (res.metrics["train_seconds"] * peak), 4),
            "score_rows": len(scored.predictions), "score_s": timing["score_seconds"],
            "score_share_of_peak": round(score_flops / (timing["score_seconds"] * peak), 4)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="gemma3-270m,smollm2,minilm")
    ap.add_argument("--rows", type=int, default=64, help="rows scored")
    ap.add_argument("--steps", type=int, default=6, help="training updates")
    ap.add_argument("--model-dir", default=None, help="the members' backbone folder (a toy run)")
    ap.add_argument("--out", default=str(ROOT / "results" / "compute_calibration.md"))
    a = ap.parse_args(argv)
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        table = pd.read_csv(PANDALM, dtype={"id": str}, keep_default_na=False)
        test = work / "test.csv"
        table.iloc[400:400 + a.rows].drop(columns=["winner_model_a", "winner_model_b", "winner_tie"]).to_csv(
            test, index=False)
        for name in a.members.split(","):
            rows.append(measure(name, work, 200, test, a.steps, a.model_dir))
            print(rows[-1], flush=True)
    rows.append({"member": "min", "train_share_of_peak": min(r["train_share_of_peak"] for r in rows),
                 "score_share_of_peak": min(r["score_share_of_peak"] for r in rows)})
    command = benchmark_command(__file__, argv)
    print(write_benchmark(rows, a.out, "The arithmetic projection's CPU calibration (share of fp32 peak)",
                          f"this CPU's fp32 peak {cpu_peak_flops() / 1e9:.0f} GFLOP/s (threads x clock x FLOPs per "
                          f"cycle, from /proc/cpuinfo); FLOPs counted as `kit.ops.compute` counts them. `min`: what "
                          f"`CPU_EFFICIENCY` is set to. A calibration of a projection, not a promise: other rows, "
                          f"lengths and machines run at other shares.", command, started))


if __name__ == "__main__":
    main()
