"""Retention benchmark: our packer vs pairjudge 0.3.0's balanced_v2, SmolLM2 tokenizer.

    .venv/bin/pip install --no-deps pairjudge==0.3.0   # benchmark-only dependency
    .venv/bin/python scripts/bench_packing.py [--out results/packing.md]

Both packers get the same parsed turns (kit.data.ingest) and the same tokenizer. For every
row we count, per field, the content tokens kept and in total (all turns, the same
tokenizer), and print per (data, max_length, packer):

* both>=32: share of rows where each response keeps >= min(32, its length) tokens;
* prompt / A / B kept: mean kept share (rows whose field is empty count as 1.0);
* over budget: rows longer than max_length; failed: rows the packer raised on.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent.parent

from kit.data.ingest import load_conversations
from kit.ops.packing import PackConfig, Packer
from kit.ops.backbones import load_tokenizer
from kit.core.presets import resolve_preset

DATASETS = {"kaggle-100": ROOT / "data/kaggle/train_sample.csv",
            "pandalm-999": ROOT / "data/pandalm/pandalm_kaggle.csv"}


def _ours(tokenizer, max_length):
    packer = Packer(tokenizer, PackConfig(max_length=max_length))

    def run(p_ids, a_ids, b_ids):
        packed = packer.pack_ids(p_ids, a_ids, b_ids)
        r = packed.retention
        return len(packed.input_ids), r["prompt_kept"], r["response_a_kept"], r["response_b_kept"]
    return run


def _pairjudge(tokenizer, max_length):
    from pairjudge import PackerConfig, PairPacker

    packer = PairPacker(tokenizer, PackerConfig(max_length=max_length, packing_format="balanced_v2"))

    def run(p_ids, a_ids, b_ids, texts):
        packed = packer.pack(*texts)
        kept = [sum(f[name]["kept_tokens"] for f in packed.fields)
                for name in ("prompt", "response_a", "response_b")]
        return (len(packed.input_ids), *kept)
    return run


def measure(name, rows, totals, encoded, runner, max_length, needs_text):
    out = {"over": 0, "failed": 0, "both32": 0, "p": [], "a": [], "b": []}
    for row, tot, enc in zip(rows, totals, encoded):
        try:
            n, kp, ka, kb = runner(*enc, row) if needs_text else runner(*enc)
        except Exception:  # a packer that raises loses the row
            out["failed"] += 1
            n, kp, ka, kb = 0, 0, 0, 0
        out["over"] += n > max_length
        out["both32"] += ka >= min(32, tot[1]) and kb >= min(32, tot[2])
        for key, kept, total in zip("pab", (kp, ka, kb), tot):
            out[key].append(kept / total if total else 1.0)
    n = len(rows)
    return {"packer": name, "max_length": max_length, "both>=32": out["both32"] / n,
            "prompt kept": np.mean(out["p"]), "A kept": np.mean(out["a"]), "B kept": np.mean(out["b"]),
            "over budget": out["over"], "failed": out["failed"]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="256,512,1024")
    ap.add_argument("--out", default=str(ROOT / "results" / "packing.md"))
    args = ap.parse_args(argv)
    tokenizer = load_tokenizer(resolve_preset("smollm2"))
    encode = Packer(tokenizer, PackConfig(max_length=4096)).encode_many
    tables = []
    for data_name, path in DATASETS.items():
        frame = load_conversations(path).frame
        rows = list(zip(frame["prompt"], frame["response_a"], frame["response_b"]))
        encoded = [tuple(encode(list(turns)) for turns in row) for row in tqdm(rows, desc=f"encode {data_name}")]
        totals = [tuple(sum(map(len, field)) for field in enc) for enc in encoded]
        for max_length in (int(x) for x in args.lengths.split(",")):
            for label, factory, needs_text in (("ours", _ours, False), ("pairjudge balanced_v2", _pairjudge, True)):
                res = measure(label, rows, totals, encoded, factory(tokenizer, max_length), max_length, needs_text)
                tables.append({"data": data_name, "rows": len(rows), **res})
    table = pd.DataFrame(tables)
    text = table.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else table.to_string(index=False)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Packing retention, SmolLM2 tokenizer\n\n" + text + "\n")
    print(f"wrote {out}")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
