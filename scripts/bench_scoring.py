"""Scoring a trained pairwise model on CPU: the batch budget and LoRA folded into the weights.

    .venv/bin/python scripts/bench_scoring.py --trained artifacts/runs/<run>/models/smollm2/fold0 \
        [--rows 100] [--out results/scoring_cpu.md]

The trained model (``--trained``) is any train-stage output of a pairwise member (e.g. the main job's, run with
``kit main --paper`` for SmolLM2). Its held-out rows (the first ``--rows`` of its fold, from the
cache it was trained on) are scored at padded-token budgets of 8192, 2048 and 1024 per batch,
with the LoRA unmerged (as trained) and folded in (``merge_adapter``, what the infer stage loads),
after one warm-up batch; each setting's wall time and the largest logit difference to the
unmerged 8192 run are printed and written to ``--out`` (markdown) and its ``.json`` twin.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent

from kit.core.presets import Preset
from kit.members.pairwise import load_trained_pairwise, predict_pair_logits
from kit.store.io import write_results

BUDGETS = (8192, 2048, 1024)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trained", required=True, help="a train-stage output of a pairwise member")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "results" / "scoring_cpu.md"))
    a = ap.parse_args(argv)
    model_dir = Path(a.trained)
    config = json.loads((model_dir / "config.json").read_text())
    preset = Preset.from_dict(config["preset"])
    if preset.member != "pairwise":
        raise SystemExit(f"{model_dir}: a {preset.member} member; this benchmark scores pairwise members only")
    frame = pd.read_parquet(Path(config["tokenized"]) / "train.parquet")
    rows = frame[frame["fold"] == config["fold"]].head(a.rows)
    sides_a, sides_b = list(rows["side_a_ids"]), list(rows["side_b_ids"])
    model, tokenizer = load_trained_pairwise(model_dir, preset)  # the infer stage's load: LoRA folded in
    model.unmerge_adapter()
    pad = tokenizer.pad_token_id
    predict_pair_logits(model, sides_a[:4], sides_b[:4], pad, progress=False)  # warm-up
    results, reference = [], None
    for merged in (False, True):
        if merged:
            model.merge_adapter()
        for budget in BUDGETS:
            started = time.time()
            logits = predict_pair_logits(model, sides_a, sides_b, pad, max_tokens=budget, progress=False)
            seconds = time.time() - started
            reference = logits if reference is None else reference
            results.append({"lora": "folded in" if merged else "unmerged", "max_tokens": budget,
                            "seconds": round(seconds, 1), "max_abs_logit_diff": float(np.abs(logits - reference).max())})
            print(results[-1], flush=True)
    mean_tokens = float(np.mean([len(s) for s in sides_a + sides_b]))
    record = {"trained": str(model_dir), "preset": preset.name, "rows": len(rows), "mean_tokens_per_side": mean_tokens,
              "threads": torch.get_num_threads(), "results": results}
    out = Path(a.out)
    write_results(record, out.with_suffix(".json"))
    table = pd.DataFrame(results).to_markdown(index=False, floatfmt=".2g")
    out.write_text(f"# Scoring on CPU: batch budget and LoRA folding\n\n`python scripts/bench_scoring.py --trained "
                   f"{model_dir} --rows {a.rows}`: {preset.name}, {len(rows)} held-out rows of fold {config['fold']} "
                   f"({mean_tokens:.0f} tokens per side on average), {torch.get_num_threads()} threads, fp32. "
                   f"Seconds to score them; the logit difference is to the unmerged run at 8192.\n\n{table}\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
