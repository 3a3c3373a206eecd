"""Inference benchmark: length-sorted dynamic padding vs naive batching, swap-TTA cost, FLOP/s.

    .venv/bin/python scripts/bench_infer.py [--rows 200] [--out results/inference.md]

On the real length distribution of the shipped data (a seeded sample of the 100 Kaggle
rows + 999 PandaLM rows, packed at each preset's max_length), for MiniLM and SmolLM2
(LoRA-wrapped, as the infer stage runs them):

* naive: rows in their original order, batches of 8, every row padded to max_length;
* sorted: kit's inference — rows sorted by length, dynamic padding under the infer stage's
  CPU budget (kit.ops.devices.DEFAULT_MAX_TOKENS["cpu"], 2048 tokens/batch);
* pairs/s of each and their ratio, and the largest absolute probability difference;
* swap TTA: the time of the (A, B) + (B, A) passes relative to one pass;
* MiniLM: achieved FLOP/s (matmul FLOPs of the executed shapes) against the CPU's peak
  (cores x clock x 32 fp32 FLOP/cycle for AVX2 with two FMA units).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent

from kit.core.metrics import softmax
from kit.ops import compute
from kit.store.io import write_results
from kit.ops.devices import DEFAULT_MAX_TOKENS
from kit.ops.batching import length_sorted_batches, pad_batch
from kit.members.joint import predict_logits
from kit.members.joint import build_lora_model
from kit.core.presets import resolve_preset
from kit.stages.tokenize import tokenize_stage


BUDGET = DEFAULT_MAX_TOKENS["cpu"]  # what the infer stage uses on CPU


@torch.inference_mode()
def naive_logits(model, rows, pad_id, max_length, batch=8):
    out = []
    for s in range(0, len(rows), batch):
        chunk = rows[s:s + batch]
        ids, mask = pad_batch(chunk, pad_id)
        if ids.shape[1] < max_length:  # pad every row to max_length, as a fixed-shape pipeline does
            extra = max_length - ids.shape[1]
            ids = torch.nn.functional.pad(ids, (0, extra), value=pad_id)
            mask = torch.nn.functional.pad(mask, (0, extra), value=0)
        out.append(model(input_ids=ids, attention_mask=mask).logits.float().numpy())
    return np.concatenate(out)


def bert_flops(config, batches_shapes) -> float:
    """Matmul FLOPs of a BERT encoder over (batch, seq) shapes: projections, FFN, attention."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    total = 0.0
    for b, s in batches_shapes:
        tokens = b * s
        per_layer = tokens * (2 * 4 * d * d + 2 * 2 * d * ff) + b * 2 * 2 * s * s * d
        total += layers * per_layer
    return total


def cpu_peak_flops() -> tuple[float, str]:
    """This CPU's fp32 peak as the kit's time projection counts it (:func:`kit.ops.compute.cpu_peak_flops`)."""
    cores = os.cpu_count() or 1
    peak = compute.cpu_peak_flops(cores)
    return peak, f"{cores} cores x {peak / cores / 32e9:.2f} GHz x 32 FLOP/cycle (AVX2 FMA, fp32)"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "results" / "inference.md"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    results, notes = [], []
    tmp = ROOT / "artifacts" / "bench_infer"
    for model_name in ("minilm", "smollm2"):
        # the joint head at 512 tokens, as first measured (the pairwise head scores each side once)
        preset = resolve_preset(model_name, dict(member="joint", max_length=512))
        tok = tokenize_stage(model_name, [ROOT / "data/kaggle/train_sample.csv", ROOT / "data/pandalm/pandalm_kaggle.csv"],
                             "", out=tmp / model_name, n_folds=2, overwrite=True, member="joint", max_length=512)
        sample = tok.train.sample(n=min(args.rows, len(tok.train)), random_state=0)
        rows, swapped = list(sample["input_ids"]), list(sample["input_ids_swap"])
        model, tokenizer = build_lora_model(preset)
        model.eval()
        pad = tokenizer.pad_token_id
        predict_logits(model, rows[:8], pad, progress=False)  # warm-up
        naive, t_naive = timed(lambda: naive_logits(model, rows, pad, preset.max_length))
        fast, t_sorted = timed(lambda: predict_logits(model, rows, pad, max_tokens=BUDGET, progress=False))
        _, t_swap = timed(lambda: predict_logits(model, swapped, pad, max_tokens=BUDGET, progress=False))
        diff = float(np.abs(softmax(naive) - softmax(fast)).max())
        row = {"model": model_name, "rows": len(rows), "max_length": preset.max_length,
               "mean_tokens": float(np.mean([len(r) for r in rows])),
               "naive_pairs_per_s": len(rows) / t_naive, "sorted_pairs_per_s": len(rows) / t_sorted,
               "speedup": t_naive / t_sorted, "max_abs_prob_diff": diff,
               "tta_time_ratio": (t_sorted + t_swap) / t_sorted}
        if model_name == "minilm":
            peak, how = cpu_peak_flops()
            lengths = [len(r) for r in rows]
            shapes = [(len(b), max(lengths[i] for i in b)) for b in length_sorted_batches(lengths, BUDGET)]
            naive_shapes = [(min(8, len(rows) - s), preset.max_length) for s in range(0, len(rows), 8)]
            row["sorted_gflops"] = bert_flops(model.config, shapes) / t_sorted / 1e9
            row["naive_gflops"] = bert_flops(model.config, naive_shapes) / t_naive / 1e9
            row["useful_gflops_sorted"] = bert_flops(model.config, [(1, n) for n in lengths]) / t_sorted / 1e9
            row["peak_gflops"] = peak / 1e9
            row["sorted_share_of_peak"] = row["sorted_gflops"] / row["peak_gflops"]
            notes.append(f"CPU peak: {how}")
        results.append(row)
        print(row, flush=True)
        del model
    table = pd.DataFrame(results)
    text = ("# Inference: length-sorted dynamic padding vs naive batching (CPU, fp32)\n\n"
            f"torch threads: {torch.get_num_threads()}; " + "; ".join(notes) + "\n\n"
            + table.T.to_markdown(floatfmt=".4g") + "\n")
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    write_results(results, out.with_suffix(".json"))
    print(text)


if __name__ == "__main__":
    main()
