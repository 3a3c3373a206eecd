"""One training step of a pairwise member on this CPU: where its time goes and what share of the fp32 peak it reaches.

    python scripts/bench_step.py [--model gemma3-270m] [--max-length 256] [--batch 4] [--steps 6] \
        [--compile] [--out results/train_step.md]

The step as the train stage runs it (kit.members.pairwise: both sides in one backbone call, padded to the wider
side; LoRA on the preset's targets; AdamW), on PandaLM rows packed at --max-length tokens per side, batched as the
Trainer samples them for the preset (length-grouped on side A where the preset groups by length, else in table
order):

* seconds per step (median of the steps after the first), split into forward, backward and optimizer;
* torch.profiler's self CPU time over two steps, grouped: the backbone's matmuls, LoRA's matmuls (a dimension of
  size r), attention, element-wise ops and norms, the optimizer, the rest;
* padding: the share of the tokens the backbone computes that are padding, as batched and, for comparison, with
  the rows sorted by their wider side;
* the step's FLOPs by kit.ops.compute's arithmetic (real tokens, three passes) against this CPU's fp32 peak at the
  thread count used, and the same at 1 thread; and the passes a step really costs, (forward + backward) /
  forward: with the base frozen, its backward computes input gradients only;
* with --compile, the same steps from the same weights under torch.compile(dynamic=True): the compile's
  seconds (the first step), the step after it, its ratio to eager and share of the peak, the steps a run needs
  to pay the compile back (none: never), and the largest loss difference from eager.

Prints the table and writes OUT (.md, .json, .png).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from kit.core.presets import resolve_preset
from kit.members import get_member_type
from kit.ops.backbones import model_path
from kit.ops.compute import Work, backbone_params, cpu_peak_flops, row_tokens
from kit.stages.tokenize import tokenize_stage
from kit.store.io import benchmark_command, write_benchmark

ROOT = Path(__file__).resolve().parent.parent
PANDALM = ROOT / "data" / "pandalm" / "pandalm_kaggle.csv"
CATEGORIES = ("backbone matmul", "LoRA matmul", "attention", "element-wise and norms", "optimizer", "other")
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def category(name: str, shapes, r: int) -> str:
    if name in MATMULS:
        dims = [d for shape in shapes for d in shape]
        return "LoRA matmul" if r in dims else "backbone matmul"
    if any(k in name for k in ("scaled_dot_product", "softmax", "_efficient_attention", "flash")):
        return "attention"
    if any(k in name for k in ("_foreach", "adam", "Optimizer")):
        return "optimizer"
    if name.startswith("aten::") and any(k in name for k in (
            "mul", "add", "sub", "div", "pow", "rsqrt", "mean", "sum", "tanh", "gelu", "silu", "exp", "neg", "cat",
            "copy", "where", "norm", "clone", "fill", "masked", "embedding", "index", "sqrt", "cos", "sin")):
        return "element-wise and norms"
    return "other"


def pad_share(batches: list[list[int]], a: list[int], b: list[int]) -> float:
    """Padding's share of the backbone's tokens: each batch is 2 x rows x its widest side."""
    real = sum(a[i] + b[i] for batch in batches for i in batch)
    computed = sum(2 * len(batch) * max(max(a[i], b[i]) for i in batch) for batch in batches)
    return 1 - real / computed


def timed_steps(net, optimizer, batches, collate) -> list[dict]:
    rows = []
    for batch in batches:
        inputs = collate(batch)
        t0 = time.perf_counter()
        loss = net(**inputs).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        rows.append({"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0,
                     "loss": loss.item()})
    return rows


def compiled_rows(net, start: dict, batches, collate, lr: float, eager: list[dict], share: float) -> list[dict]:
    """The same steps from the same weights with the model under ``torch.compile(dynamic=True)``: the first
    step's seconds (the compile), the median of the rest, and the largest loss difference from eager."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name in start:
                p.copy_(start[name])
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr)
    steps = timed_steps(torch.compile(net, dynamic=True), optimizer, batches, collate)
    step = statistics.median(s["step"] for s in steps[1:])
    gap = max(abs(c["loss"] - e["loss"]) for c, e in zip(steps, eager))
    eager_step = statistics.median(s["step"] for s in eager[1:])
    speedup = eager_step / step
    # steps a run needs before the compile's extra first-step seconds are paid back
    payback = max(0.0, steps[0]["step"] - eager[0]["step"]) / (eager_step - step) if eager_step > step else None
    threads = torch.get_num_threads()
    return [{"what": "compiled: first step (compiling)", "value": round(steps[0]["step"], 1), "unit": "s"},
            {"what": "compiled: step", "value": round(step, 3), "unit": "s"},
            {"what": "compiled: eager step / compiled step", "value": round(speedup, 3), "unit": ""},
            {"what": f"compiled: share of the fp32 peak at {threads} threads", "value": round(share * speedup, 4),
             "unit": ""},
            {"what": "compiled: steps to pay the compile back", "value": payback and round(payback),
             "unit": "steps (none: never)"},
            {"what": "compiled: largest loss difference from eager", "value": float(f"{gap:.2g}"), "unit": ""}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per side")
    parser.add_argument("--batch", type=int, default=4, help="rows per step (the preset's batch size)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps; the first is a warm-up")
    parser.add_argument("--compile", action="store_true",
                        help="also time the same steps under torch.compile (minutes: the compile itself)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "train_step.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    preset = resolve_preset(args.model, {"max_length": args.max_length})
    member = get_member_type(preset.member)
    with tempfile.TemporaryDirectory() as tmp:
        tokenize_stage(args.model, [str(PANDALM)], "", n_folds=2, max_rows=max(200, args.batch * (args.steps + 3)),
                       max_length=args.max_length, out=Path(tmp) / "tok")
        frame = pd.read_parquet(Path(tmp) / "tok" / "train.parquet")
    net, tokenizer = member.build(preset)
    net.train()
    dataset, collator = member.dataset(frame, False), member.collator(tokenizer)

    def collate(batch):
        return collator([dataset[i] for i in batch])

    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=preset.learning_rate)
    a, b = frame["side_a_ids"].map(len).tolist(), frame["side_b_ids"].map(len).tolist()
    order = (list(LengthGroupedSampler(args.batch, lengths=a, generator=torch.Generator().manual_seed(42)))
             if preset.group_by_length else list(range(len(frame))))
    batches = [order[s:s + args.batch] for s in range(0, args.batch * args.steps, args.batch)]
    by_length = sorted(range(len(frame)), key=lambda i: max(a[i], b[i]))
    sorted_batches = [by_length[s:s + args.batch] for s in range(0, len(by_length) - args.batch + 1, args.batch)]
    threads = torch.get_num_threads()
    start = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    eager = timed_steps(net, optimizer, batches, collate)
    steps = [{k: v for k, v in s.items() if k != "loss"} for s in eager[1:]]
    median = {k: statistics.median(s[k] for s in steps) for k in steps[0]}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        timed_steps(net, optimizer, batches[:2], collate)
    spent = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.key_averages(group_by_input_shape=True):
        spent[category(event.key, event.input_shapes or [], preset.lora_r)] += event.self_cpu_time_total
    total = sum(spent.values())
    torch.set_num_threads(1)
    one_thread = statistics.median(s["step"] for s in timed_steps(net, optimizer, batches[1:3], collate))
    torch.set_num_threads(threads)
    shape = backbone_params(model_path(preset) / "config.json")
    per_step = np.mean([Work.passes(shape, row_tokens(frame.iloc[batch], member.work_columns), 3, "train").flops
                        for batch in batches[1:]])
    share = per_step / median["step"] / cpu_peak_flops(threads)
    measured_passes = (median["forward"] + median["backward"]) / median["forward"]
    rows = [{"what": f"step ({k})", "value": round(v, 3), "unit": "s"} for k, v in median.items()]
    rows += [{"what": f"profiled self time: {k}", "value": round(100 * v / total, 1), "unit": "%"}
             for k, v in spent.items()]
    rows += [{"what": "padding, as batched", "value": round(100 * pad_share(batches, a, b), 1), "unit": "%"},
             {"what": "padding, rows sorted by their wider side",
              "value": round(100 * pad_share(sorted_batches, a, b), 1),
              "unit": "%"},
             {"what": f"share of the fp32 peak at {threads} threads", "value": round(share, 4), "unit": ""},
             # the base is frozen: its backward computes input gradients only, about one forward pass, not two
             {"what": "forward-pass equivalents per step, measured ((forward + backward) / forward)",
              "value": round(measured_passes, 2), "unit": ""},
             {"what": f"share of the fp32 peak at {threads} threads, FLOPs at the measured passes",
              "value": round(share * measured_passes / 3, 4), "unit": ""},
             {"what": "step at 1 thread", "value": round(one_thread, 3), "unit": "s"},
             {"what": "share of the fp32 peak at 1 thread",
              "value": round(per_step / one_thread / cpu_peak_flops(1), 4), "unit": ""}]
    if args.compile:
        rows += compiled_rows(net, start, batches, collate, preset.learning_rate, eager, share)
    note = (f"{args.model}, pairwise, {args.max_length} tokens per side, batches of {args.batch} PandaLM rows "
            f"{'length-grouped as the Trainer samples them' if preset.group_by_length else 'in table order'}, LoRA r "
            f"{preset.lora_r}, AdamW; {len(steps)} timed steps after a warm-up; {threads} torch "
            f"threads; {per_step / 1e12:.2f} TFLOP per step by kit.ops.compute's arithmetic (real tokens, 3 passes).")
    print(write_benchmark(rows, args.out, "One training step on this CPU", note, benchmark_command(__file__)))
    _figure(spent, total).savefig(args.out.with_suffix(".png"), dpi=120)
    return 0


def _figure(spent: dict, total: float):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(spent)
    ax.barh(names, [100 * spent[n] / total for n in names])
    ax.set_xlabel("share of the profiled self CPU time (%)")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    raise SystemExit(main())
