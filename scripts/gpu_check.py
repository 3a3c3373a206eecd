"""The GPU check: what a Kaggle T4 session runs, rehearsed on one CUDA GPU in a few minutes.

For tiny random-init Gemma-2 and Llama-3 (the real architectures, built from config: no download)
at the GPU presets, through the kit's own stages:

* **fp16 training steps** (the T4's dtype: ``KIT_GPU_DTYPE=float16`` forces it on newer cards) in
  4-bit nf4 (QLoRA, bitsandbytes) and, for throughput, in full precision (fp32 weights);
* **inference** of the trained adapter, and the **two-device sharding path** with both shards on
  one device (``devices = [cuda:0, cuda:0]``: Kaggle's two T4s, on one card), whose predictions
  must equal the one-device ones;
* seconds per step, rows per second, peak GPU memory;
* **scoring in 4-bit, 8-bit and full precision** of the 4-bit-trained adapter (the medal solutions
  scored in 8-bit what they trained in 4-bit): rows per second each;
* **the arithmetic projection's factor on this GPU** (:mod:`kit.ops.compute`): a random-init Llama big
  enough to load the card (hidden 2048, 8 layers) trained and scored, its FLOPs over seconds x the card's
  peak — the number to put in ``kit.ops.compute.GPU_EFFICIENCY`` once measured on a T4.

``--dry-run`` runs the same path on the CPU (fp32 compute, nf4 through bitsandbytes' CPU
kernels): CI runs it, so the script cannot rot while no GPU is at hand.

    python scripts/gpu_check.py [--dry-run] [--out results]   # writes OUT/gpu.md, OUT/gpu.json
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from kit.store.io import write_results

PANDALM = ROOT / "data" / "pandalm" / "pandalm_kaggle.csv"
TEST = ROOT / "data" / "kaggle" / "train_sample.csv"  # 100 real rows scored as a test table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same path on the CPU (CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="where gpu.md / gpu.json go")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 20 GPU, 2 dry run)")
    args = parser.parse_args()
    import numpy as np
    import pandas as pd
    import torch

    from kit.core.log import show_progress
    from kit.ops.tiny import make_tiny_backbone
    from kit.stages.infer import infer_stage
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage

    show_progress()
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        raise SystemExit("no CUDA GPU is visible: run with --dry-run for the CPU rehearsal")
    if cuda:
        os.environ.setdefault("KIT_GPU_DTYPE", "float16")  # the T4's dtype, also on a newer card
    device = "cuda:0" if cuda else "cpu"
    steps = args.steps or (20 if cuda else 2)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    rows, started = [], time.time()
    for arch, preset in (("gemma2", "gemma2-9b"), ("llama", "llama3-8b")):
        folder = make_tiny_backbone(arch, work / arch, pad_token=arch == "gemma2")
        tok = work / f"tok-{arch}"
        tokenize_stage(preset, [PANDALM], TEST, max_length=256, max_rows=160, n_folds=2, out=tok,
                       model_dir=str(folder), member="joint")
        for four_bit in (True, False):
            label = f"{preset} ({'4-bit nf4' if four_bit else 'full precision'})"
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # 4-bit on CPU: slower, said once per run
                res = train_stage(preset, 0, tokenized=tok, out=work / f"model-{arch}-{four_bit}", load_in_4bit=four_bit,
                                  max_steps=steps, batch_size=8, grad_accum=1, learning_rate=1e-3,
                                  evals_per_run=1, max_eval_rows=32, logging_steps=1)
            train_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
            one = infer_stage(res.out_dir, "test", devices=[device], overwrite=True, out=work / f"p1-{arch}-{four_bit}.csv")
            two = infer_stage(res.out_dir, "test", devices=[device, device], overwrite=True,
                              out=work / f"p2-{arch}-{four_bit}.csv")
            probs = ["p_a", "p_b", "p_tie"]
            shard_diff = float(np.abs(one.predictions[probs].to_numpy() - two.predictions[probs].to_numpy()).max())
            scoring = {}
            if four_bit:  # the 4-bit-trained adapter scored with its backbone in each precision
                for q in ("4bit", "8bit", "none"):
                    timed = infer_stage(res.out_dir, "test", devices=[device], overwrite=True, quantization=q,
                                        tta=False, out=work / f"q-{arch}-{q}.csv")
                    scoring[f"score_{q}_rows_per_s"] = len(timed.predictions) / max(timed.seconds, 1e-9)
            rows.append({**scoring, "model": label, "dtype": os.environ.get("KIT_GPU_DTYPE", "float32") if cuda else "float32",
                         "steps": res.metrics["global_steps"], "s_per_step": res.metrics["train_seconds"] / steps,
                         "train_loss": res.metrics["train_loss"], "train_loss_finite": bool(np.isfinite(res.metrics["train_loss"])),
                         "peak_train_MiB": train_peak, "infer_rows_per_s": len(one.predictions) / max(one.seconds, 1e-9),
                         "two_shard_rows_per_s": len(two.predictions) / max(two.seconds, 1e-9),
                         "two_shard_max_diff": shard_diff, "tta_flip_rate": one.flip_rate})
    calibration = calibrate(work, device, cuda, steps)
    table = pd.DataFrame(rows)
    ok = bool(table["train_loss_finite"].all() and (table["two_shard_max_diff"] <= (1e-3 if cuda else 1e-5)).all()
              and (table["steps"] == steps).all())
    what = torch.cuda.get_device_name(0) if cuda else "CPU dry run (no GPU: the code path, not GPU figures)"
    record = {"device": what, "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
              "dry_run": not cuda, "steps": steps, "minutes": round((time.time() - started) / 60, 2), "ok": ok,
              "rows": rows, "calibration": calibration}
    name = "gpu" if cuda else "gpu-dry-run"
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(record, args.out / f"{name}.json", started)
    md = (f"# GPU check: {what}\n\ntorch {torch.__version__}"
          f"{f', CUDA {torch.version.cuda}' if cuda else ''}; tiny random-init Gemma-2 / Llama-3 at the GPU presets "
          f"(2 layers, hidden 64), joint member, {steps} training steps of 8 rows, 100 test rows; "
          f"{record['minutes']} min in all. Reproduce: `bash scripts/gpu_check.sh{' --dry-run' if not cuda else ''}`.\n\n"
          + table.drop(columns=["train_loss_finite"]).to_markdown(index=False, floatfmt=".4g")
          + f"\n\nall checks {'passed' if ok else 'FAILED'} (finite loss, every step run, two shards = one device)\n"
          + f"\nThe arithmetic projection's factor here (share of the device's peak): {calibration}\n")
    (args.out / f"{name}.md").write_text(md)
    print(md)
    return 0 if ok else 1


def calibrate(work: Path, device: str, cuda: bool, steps: int) -> dict:
    """The share of ``device``'s peak the kit's training and scoring reach on a random-init Llama (hidden 2048,
    8 layers on a GPU; a toy one in the dry run), FLOPs counted as :mod:`kit.ops.compute` counts them."""
    from kit.ops.compute import TRAIN_PASSES, Work, backbone_params, peak_flops, row_tokens
    from kit.ops.devices import device_names
    from kit.ops.tiny import make_tiny_backbone
    from kit.stages.infer import infer_stage
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage
    from kit.store.cache import load_cache
    from kit.core.files import read_json

    folder = make_tiny_backbone("llama", work / "calibration", layers=8 if cuda else 2, hidden=2048 if cuda else 128)
    tok = work / "tok-calibration"
    tokenize_stage("llama3-8b", [PANDALM], TEST, max_length=512, max_rows=200, n_folds=1, out=tok,
                   model_dir=str(folder), member="joint")
    batch = 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = train_stage("llama3-8b", None, tokenized=tok, out=work / "model-calibration", load_in_4bit=False,
                          budget_hours=None, max_steps=steps, batch_size=batch, grad_accum=1,
                          swap_augment=False, logging_steps=1)
    frame, _, _ = load_cache(tok, "train")
    shape = backbone_params(folder / "config.json")
    tokens = row_tokens(frame, ["input_ids"])
    train = Work.passes(shape, tokens, TRAIN_PASSES * steps * batch / len(frame), "train").flops
    infer_stage(res.out_dir, "test", devices=[device], tta=False, out=work / "calibration.csv")
    timing = read_json(work / "calibration.manifest.json", "rerun")["timing"]
    test, _, _ = load_cache(tok, "test")
    score = Work.passes(shape, row_tokens(test, ["input_ids"]), 1, "score").flops
    name = device_names([device])[0]
    peak = peak_flops(name) or float("nan")
    return {"device": name, "peak_tflops": peak / 1e12, "params_m": shape["params"] / 1e6,
            "train_share_of_peak": round(train / (res.metrics["train_seconds"] * peak), 4),
            "score_share_of_peak": round(score / (timing["score_seconds"] * peak), 4)}


if __name__ == "__main__":
    raise SystemExit(main())
