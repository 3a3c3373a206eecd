"""Train-stage benchmark: LoRA vs full fine-tuning cost, and LoRA quality on PandaLM.

    .venv/bin/python scripts/bench_train.py efficiency   # ~5 min on 2 cores
    .venv/bin/python scripts/bench_train.py efficiency --modes pairwise,pairwise-all-layers
    .venv/bin/python scripts/bench_train.py quality      # ~20 min on 2 cores
    .venv/bin/python scripts/bench_train.py quality --from-cv DIR   # fold 0 of a `kit cv` run
    .venv/bin/python scripts/bench_train.py all

efficiency — the paper's claim, on the embedded backbones: for MiniLM and SmolLM2,
LoRA (preset settings; and with lora_dropout=0, whose dropout copies of every adapted
layer's input cost activation memory) vs full fine-tuning: trainable parameters, peak resident memory
of a process that loads the model and takes AdamW steps, seconds per optimizer step
(batch 4 real PandaLM rows padded to 256 / 512 tokens). Each configuration runs in its
own process so peak memory is its own. The pairwise head (``pairwise``: the preset's recipe,
for SmolLM2 LoRA on its top 8 layers; ``pairwise-all-layers``: LoRA on every layer) is
timed on 4 pairs whose two sides are padded to half the tokens each, so a pairwise row and
a joint row hold the same number of tokens. ``--modes`` reruns some modes and keeps the
other rows of results/train_efficiency.json.

quality — MiniLM and SmolLM2 LoRA-trained (preset settings, swap augmentation; packed
at 256 tokens and at most 200 training rows by default, to fit a CPU) on the PandaLM
pairs with fold 0 of 5 held out (folds grouped by prompt): held-out log loss and
accuracy next to the class prior (0.955) and the TF-IDF + length baseline (0.6385,
measured on folds NOT grouped by prompt; see the README on leakage).

Results are printed and written to results/train_efficiency.md / train_quality.md (+ .json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from kit.store.io import write_results

RESULTS = ROOT / "results"
PANDALM = ROOT / "data" / "pandalm" / "pandalm_kaggle.csv"


def one_config(model: str, mode: str, length: int, steps: int = 4) -> dict:
    """Runs inside a child process: load, then time AdamW steps on a real padded batch."""
    import torch
    from transformers import set_seed

    from kit.data.ingest import load_conversations
    from kit.members.joint import build_lora_model, load_base_classifier
    from kit.ops.hf_training import count_parameters
    from kit.ops.packing import PackConfig, Packer
    from kit.core.presets import resolve_preset

    set_seed(0)
    if mode.startswith("pairwise"):
        return _pairwise_config(model, mode, length, steps)
    # the joint head as first measured: LoRA on every layer, the presets' dropout at the time
    joint = {"head": "joint", "layers_to_transform": list(range(30)), "lora_dropout": 0.05} \
        if model == "smollm2" else {"head": "joint"}
    preset = resolve_preset(model, dict(max_length=length, **{**joint, **({"lora_dropout": 0.0} if mode == "lora-nodrop" else {})}))
    net, tok = build_lora_model(preset) if mode.startswith("lora") else load_base_classifier(preset)
    net.train()
    trainable, total = count_parameters(net)
    frame = load_conversations(PANDALM).frame
    packer = Packer(tok, PackConfig(max_length=length))
    rows = [packer.pack(p, a, b).input_ids for p, a, b in
            zip(frame["prompt"][:4], frame["response_a"][:4], frame["response_b"][:4])]
    ids = torch.full((4, length), tok.pad_token_id, dtype=torch.long)
    for i, r in enumerate(rows):  # real text, padded (attention on) to the full length
        ids[i, :len(r)] = torch.tensor(r)
        ids[i, len(r):] = torch.tensor((r * (length // len(r) + 1))[:length - len(r)])
    labels = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)

    def step():
        opt.zero_grad()
        net(input_ids=ids, labels=labels).loss.backward()
        opt.step()
    step()  # warm-up (allocations, AdamW state)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model, "mode": mode, "tokens": length, "trainable_params": trainable,
            "total_params": total, "trainable_share": trainable / total,
            "seconds_per_step": seconds, "peak_rss_mb": peak_mb, "batch": 4}


def _pairwise_config(model: str, mode: str, length: int, steps: int) -> dict:
    """4 pairs, each side padded (real text repeated) to length // 2 tokens."""
    import torch

    from kit.data.ingest import load_conversations
    from kit.ops.hf_training import count_parameters
    from kit.ops.packing import PackConfig, Packer
    from kit.members.pairwise import build_pairwise
    from kit.core.presets import resolve_preset

    side = length // 2
    preset = resolve_preset(model, dict(max_length=side, member="pairwise"))
    if mode == "pairwise-all-layers":  # LoRA on every layer (resolve_preset ignores None overrides)
        preset = dataclasses.replace(preset, layers_to_transform=None)
    net, tok = build_pairwise(preset)
    net.train()
    trainable, total = count_parameters(net)
    frame = load_conversations(PANDALM).frame
    packer = Packer(tok, PackConfig(max_length=side), side=True)

    def padded(column):
        ids = torch.full((4, side), tok.pad_token_id, dtype=torch.long)
        for i, (p, r) in enumerate(zip(frame["prompt"][:4], frame[column][:4])):
            row = packer.pack(p, r).input_ids
            ids[i] = torch.tensor((row * (side // len(row) + 1))[:side])
        return ids
    a, b = padded("response_a"), padded("response_b")
    ones = torch.ones_like(a)
    labels = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)

    def step():
        opt.zero_grad()
        net(input_ids=a, attention_mask=ones, input_ids_b=b, attention_mask_b=ones, labels=labels).loss.backward()
        opt.step()
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model, "mode": mode, "tokens": length, "trainable_params": trainable,
            "total_params": total, "trainable_share": trainable / total,
            "seconds_per_step": seconds, "peak_rss_mb": peak_mb, "batch": 4}


def efficiency(modes=("lora", "lora-nodrop", "full"), models=("minilm", "smollm2")) -> list[dict]:
    rows = []
    for model in models:
        for length in (256, 512):
            for mode in modes:
                if mode == "pairwise-all-layers" and model != "smollm2":
                    continue
                code = (f"import json; from scripts.bench_train import one_config; "
                        f"print('RESULT'+json.dumps(one_config({model!r},{mode!r},{length})))")
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
                if not line:
                    raise RuntimeError(f"{model}/{mode}/{length} failed:\n{proc.stderr[-3000:]}")
                rows.append(json.loads(line[0][6:]))
                print(rows[-1], flush=True)
    return rows


def _quality_row(model: str, metrics: dict, minutes: float, source: str) -> dict:
    return {"model": model, "held_out_rows": metrics["held_out_rows"], "train_rows": metrics["train_rows"],
            "log_loss": metrics["log_loss"], "accuracy": metrics["accuracy"], "train_minutes": minutes,
            "trainable_params": metrics["trainable_params"], "source": source}


def quality(max_length: int | None = 256, max_train_rows: int | None = 200, from_cv: str | None = None,
            models=("minilm", "smollm2")) -> list[dict]:
    """Fold 0 of 5 held out. ``from_cv``: read the fold-0 runs of a finished `kit cv` on
    PandaLM instead of training again (same recipe: those runs are LoRA-trained on the
    other four folds and scored on fold 0)."""
    import tempfile

    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage

    rows = []
    if from_cv:
        for model in ("minilm", "smollm2"):
            m = json.loads((Path(from_cv) / "models" / model / "fold0" / "metrics.json").read_text())
            rows.append(_quality_row(model, m, m["train_seconds"] / 60, f"kit cv run {from_cv}"))
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            tok_dir = Path(tmp) / "tok" / model
            tokenize_stage(model, [PANDALM], "", max_length=max_length, n_folds=5, seed=42, out=tok_dir)
            t0 = time.time()
            res = train_stage(model, 0, tokenized=tok_dir, out=Path(tmp) / "models" / model,
                              max_train_rows=max_train_rows)
            rows.append({**_quality_row(model, res.metrics, (time.time() - t0) / 60, "trained by this script"),
                         "max_length": max_length, "seconds_per_step": res.metrics["train_seconds"]
                         / max(res.metrics["global_steps"], 1)})
            print(rows[-1], flush=True)
    return rows


def _write(name: str, rows: list[dict], header: str, keep_others: bool = False) -> None:
    import pandas as pd

    RESULTS.mkdir(exist_ok=True)
    if keep_others and (RESULTS / f"{name}.json").exists():
        key = lambda r: (r["model"], r.get("mode"), r.get("tokens"))  # noqa: E731
        new = {key(r) for r in rows}
        old = [r for r in json.loads((RESULTS / f"{name}.json").read_text()) if key(r) not in new]
        rows = old + rows if name == "train_quality" else sorted(old + rows, key=lambda r: (r["model"], r["tokens"]))
    table = pd.DataFrame(rows)
    text = f"# {header}\n\n" + table.to_markdown(index=False, floatfmt=".4g") + "\n"
    (RESULTS / f"{name}.md").write_text(text)
    write_results(rows, RESULTS / f"{name}.json")
    print(text)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["efficiency", "quality", "all"])
    ap.add_argument("--from-cv", default=None, help="quality: read fold 0 of a finished `kit cv` run")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-train-rows", type=int, default=200)
    ap.add_argument("--models", default=None, help="comma-separated presets to (re)measure (e.g. gemma3-270m); the "
                                                   "other rows are kept")
    ap.add_argument("--modes", default=None,
                    help="efficiency: comma-separated modes to (re)measure (lora, lora-nodrop, full, pairwise, "
                         "pairwise-all-layers); the other rows are kept")
    args = ap.parse_args(argv)
    if args.what in ("efficiency", "all"):
        modes = tuple(args.modes.split(",")) if args.modes else ("lora", "lora-nodrop", "full", "pairwise",
                                                                  "pairwise-all-layers")
        models = tuple(args.models.split(",")) if args.models else ("minilm", "smollm2")
        _write("train_efficiency", efficiency(modes, models),
               "LoRA vs full fine-tuning, joint vs pairwise head, CPU fp32, batch 4 rows (pairwise: 4 pairs, "
               "each side half the tokens), AdamW (scripts/bench_train.py efficiency)",
               keep_others=bool(args.modes or args.models))
    if args.what in ("quality", "all"):
        if args.models:  # new rows beside the recorded ones
            rows = quality(args.max_length, args.max_train_rows, None, tuple(args.models.split(",")))
            _write("train_quality", rows, "PandaLM, fold 0 of 5 held out (scripts/bench_train.py quality)",
                   keep_others=True)
            return
        rows = quality(args.max_length, args.max_train_rows, args.from_cv)
        if args.from_cv:  # the baseline on the very same prompt-grouped folds
            cv = json.loads((Path(args.from_cv) / "cv.json").read_text())["results"]["tfidf"]
            rows.append({"model": "TF-IDF + length LR, same prompt-grouped folds (kit cv, all folds)",
                         "log_loss": cv["log_loss"], "accuracy": cv["accuracy"]})
        rows += [{"model": "class prior (reference)", "log_loss": 0.9551},
                 {"model": "TF-IDF + length LR, 5-fold CV not grouped by prompt (reference)", "log_loss": 0.6385, "accuracy": 0.762}]
        _write("train_quality", rows, "PandaLM, fold 0 of 5 held out (scripts/bench_train.py quality)")


if __name__ == "__main__":
    main()
