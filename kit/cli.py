"""``python -m kit <stage> ...`` — the command-line face of the four stages."""
from __future__ import annotations

import argparse
import sys

from .presets import PRESETS


def _csv_list(text: str) -> list[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def _add_tokenize(sub):
    p = sub.add_parser("tokenize", help="pack train/test tables for one model preset")
    p.add_argument("--model", required=True, choices=sorted(PRESETS))
    p.add_argument("--train", type=_csv_list, default=None,
                   help="comma-separated train tables (CSV/parquet); default: this environment's")
    p.add_argument("--no-train", action="store_true", help="tokenize the test table only")
    p.add_argument("--test", default=None, help="test table; default: this environment's")
    p.add_argument("--no-test", action="store_true", help="tokenize the train tables only")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--model-dir", default=None, help="override the preset's model folder")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--keep", choices=["last", "first"], default=None, help="which turns survive a cut")
    p.add_argument("--out", default=None)
    p.add_argument("--overwrite", action="store_true")

    def run(a):
        from .tokenization import tokenize_stage
        pack = {"keep": a.keep} if a.keep else None
        res = tokenize_stage(a.model, [] if a.no_train else a.train, "" if a.no_test else a.test,
                             max_length=a.max_length, out=a.out, n_folds=a.folds, seed=a.seed,
                             max_rows=a.max_rows, overwrite=a.overwrite, pack=pack, model_dir=a.model_dir)
        print(res.retention_summary().to_string(index=False))
        print(f"wrote {res.out_dir}")
    p.set_defaults(run=run)


def _add_main(sub):
    p = sub.add_parser("main", help="the main job: the stage notebooks on the embedded defaults")
    p.add_argument("--models", type=_csv_list, default=["minilm", "smollm2"])
    p.add_argument("--run-dir", default=None, help="default: <work>/runs/<timestamp> (must not exist)")
    p.add_argument("--max-rows", type=int, default=None)

    def run(a):
        from .pipeline import run_main
        run_main(a.models, a.run_dir, a.max_rows)
    p.set_defaults(run=run)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    _add_tokenize(sub)
    _add_main(sub)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
