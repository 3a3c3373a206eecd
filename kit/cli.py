"""``python -m kit <stage> ...`` — the command-line face of the four stages."""
from __future__ import annotations

import argparse
import sys

from .heads import HEADS
from .presets import PRESETS


def _csv_list(text: str) -> list[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def _add_tokenize(sub):
    p = sub.add_parser("tokenize", help="pack train/test tables for one model preset")
    p.add_argument("--model", required=True, help=f"a preset {sorted(PRESETS)} or a local HF folder")
    p.add_argument("--train", type=_csv_list, default=None,
                   help="comma-separated train tables: CSV/parquet in the competition's columns, or chosen/rejected "
                        "preference data (HH-RLHF, UltraFeedback-style messages, prompt/chosen/rejected; "
                        ".jsonl[.gz]/.json/CSV/parquet); default: this environment's")
    p.add_argument("--no-train", action="store_true", help="tokenize the test table only")
    p.add_argument("--extra", type=_csv_list, default=[],
                   help="comma-separated extra labelled tables (any --train format): added to every fold's training "
                        "rows, never held out, after removing rows whose prompt is a train or test prompt")
    p.add_argument("--dedup-similarity", type=float, default=0.9,
                   help="an extra row whose prompt's character n-gram cosine similarity to a train or test prompt is "
                        "at least this is removed (1.0: exact duplicates only); default 0.9")
    p.add_argument("--test", default=None, help="test table; default: this environment's")
    p.add_argument("--no-test", action="store_true", help="tokenize the train tables only")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per packed sequence (pairwise head: per side); default: the preset's")
    p.add_argument("--model-dir", default=None, help="override the preset's model folder")
    p.add_argument("--folds", type=int, default=5, help="prompt-grouped, label-stratified folds (>= 2)")
    p.add_argument("--seed", type=int, default=42, help="seed of the fold assignment")
    p.add_argument("--max-rows", type=int, default=None,
                   help="use only the first N training rows (after skipping bad ones); default: all")
    p.add_argument("--keep", choices=["last", "first"], default=None, help="which turns survive a cut")
    p.add_argument("--head", choices=sorted(HEADS), default=None,
                   help="joint: one sequence per row; pairwise: one per side (default: the preset's)")
    p.add_argument("--out", default=None, help="cache folder; default <work>/tokenized/<model>")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache instead of refusing")

    def run(a):
        from .tokenization import tokenize_stage
        pack = {"keep": a.keep} if a.keep else None
        res = tokenize_stage(a.model, [] if a.no_train else a.train, "" if a.no_test else a.test,
                             max_length=a.max_length, out=a.out, n_folds=a.folds, seed=a.seed,
                             max_rows=a.max_rows, overwrite=a.overwrite, pack=pack, model_dir=a.model_dir,
                             head=a.head, extra=a.extra, dedup_similarity=a.dedup_similarity)
        print(res.retention_summary().to_string(index=False))
        print(f"wrote {res.out_dir}")
    p.set_defaults(run=run)


def _add_train(sub):
    p = sub.add_parser("train", help="LoRA-train one model preset on one fold")
    p.add_argument("--model", required=True, help=f"a preset {sorted(PRESETS)} or a local HF folder")
    p.add_argument("--fold", default="0", help="held-out fold K, or 'full' to train on every row")
    p.add_argument("--tokenized", default=None, help="stage-1 cache; default <work>/tokenized/<model>")
    p.add_argument("--out", default=None, help="default <work>/models/<model>/fold<K>")
    p.add_argument("--model-dir", default=None, help="override the preset's backbone folder")
    p.add_argument("--4bit", dest="load_in_4bit", action="store_true", default=None,
                   help="load the backbone in 4-bit nf4 (QLoRA; default: the preset's)")
    p.add_argument("--no-4bit", dest="load_in_4bit", action="store_false", help="full-precision backbone")
    for name, typ, what in (("lora-r", int, "LoRA rank"), ("lora-alpha", int, "LoRA alpha (scale = alpha / r)"),
                            ("lora-dropout", float, "dropout on the LoRA path")):
        p.add_argument(f"--{name}", type=typ, default=None, help=f"{what}; default: the preset's")
    p.add_argument("--target-modules", type=_csv_list, default=None,
                   help="comma-separated module names that get LoRA, or all-linear; default: the preset's")
    p.add_argument("--layers", type=lambda s: [int(x) for x in _csv_list(s)], default=None,
                   help="comma-separated layer indices that get LoRA (default: all)")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute activations in the backward pass: less memory, ~30%% more time")
    p.add_argument("--head", choices=sorted(HEADS), default=None,
                   help="must match the tokenized cache's head (default: the cache's)")
    p.add_argument("--pooling", choices=["mean", "last", "first"], default=None,
                   help="pairwise head: how a side's tokens become one vector (default: mean for encoders, "
                        "last for decoders)")
    for name, typ, what in (
            ("epochs", float, "passes over the training rows"), ("lr", float, "peak learning rate (cosine)"),
            ("batch-size", int, "rows per device step"), ("grad-accum", int, "steps per optimizer update"),
            ("warmup-ratio", float, "share of the updates spent warming up"),
            ("weight-decay", float, "AdamW weight decay"), ("max-steps", int, "stop after N updates"),
            ("evals-per-run", int, "held-out evaluations (and checkpoints) over the run"),
            ("eval-steps", int, "evaluate every N updates (overrides --evals-per-run)"),
            ("seed", int, "seed of initialisation and shuffling"),
            ("max-train-rows", int, "train on the first N rows of the other folds"),
            ("max-eval-rows", int, "evaluate on the first N held-out rows"),
            ("logging-steps", int, "log the training loss every N updates")):
        p.add_argument(f"--{name}", type=typ, default=None, help=f"{what}; default: the preset's recipe")
    p.add_argument("--no-swap-augment", action="store_true", help="joint head: no (B, A) copies of the rows")
    p.add_argument("--group-by-length", dest="group_by_length", action="store_true", default=None,
                   help="length-grouped batches (default: the preset's)")
    p.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                   help="plain shuffled batches instead of length-grouped ones")
    p.add_argument("--head-lr-scale", type=float, default=None,
                   help="the new heads' learning rate as a multiple of --lr (default: the preset's)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints/ after a finished run")
    p.add_argument("--no-resume", action="store_true", help="start afresh: delete the checkpoints of a killed run instead of resuming from them")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in --out (its predictions/ are removed: they are stale)")

    def run(a):
        from .training import TrainSettings, train_stage
        given = {k: v for k, v in {
            "epochs": a.epochs, "learning_rate": a.lr, "batch_size": a.batch_size,
            "grad_accum": a.grad_accum, "warmup_ratio": a.warmup_ratio, "weight_decay": a.weight_decay,
            "max_steps": a.max_steps, "evals_per_run": a.evals_per_run, "eval_steps": a.eval_steps,
            "seed": a.seed, "max_train_rows": a.max_train_rows, "max_eval_rows": a.max_eval_rows,
            "logging_steps": a.logging_steps}.items() if v is not None}
        if a.head_lr_scale is not None:
            given["head_lr_scale"] = a.head_lr_scale
        settings = TrainSettings(**given, swap_augment=not a.no_swap_augment,
                                 keep_checkpoints=a.keep_checkpoints, group_by_length=a.group_by_length)
        fold = None if a.fold == "full" else int(a.fold)
        res = train_stage(a.model, fold, tokenized=a.tokenized, out=a.out, overwrite=a.overwrite,
                          resume=not a.no_resume, settings=settings, model_dir=a.model_dir,
                          load_in_4bit=a.load_in_4bit, lora_r=a.lora_r, lora_alpha=a.lora_alpha,
                          lora_dropout=a.lora_dropout, target_modules=a.target_modules,
                          layers_to_transform=a.layers, gradient_checkpointing=a.gradient_checkpointing,
                          head=a.head, pooling=a.pooling)
        if res.metrics:
            print({k: res.metrics[k] for k in ("log_loss", "accuracy", "train_seconds") if k in res.metrics})
            print(f"wrote {res.out_dir}")
    p.set_defaults(run=run)


def _add_infer(sub):
    p = sub.add_parser("infer", help="predict test or out-of-fold probabilities with trained models")
    p.add_argument("--model-dir", required=True, type=_csv_list,
                   help="train-stage output folder(s), comma-separated")
    p.add_argument("--split", choices=["test", "oof"], default="test",
                   help="test rows, or the model's held-out (out-of-fold) training rows")
    p.add_argument("--tokenized", default=None, help="stage-1 cache; default: the one the model trained on")
    p.add_argument("--out", default=None, help="default <model-dir>/predictions/<split>.csv (one model only)")
    p.add_argument("--devices", type=_csv_list, default=None, help="e.g. cuda:0,cuda:1; default: every GPU, else cpu")
    p.add_argument("--cpu-workers", type=int, default=1, help="processes scoring on the CPU (no GPU)")
    p.add_argument("--no-tta", action="store_true", help="skip the swapped (B, A) pass")
    p.add_argument("--max-tokens", type=int, default=None, help="padded tokens per batch")
    p.add_argument("--budget-hours", type=float, default=9.0,
                   help="warn when the projected time for the whole test exceeds this (Kaggle: 9)")
    p.add_argument("--isolate", action="store_true", help="each model in its own process")
    p.add_argument("--base-model-dir", default=None, help="override the backbone folder")
    p.add_argument("--rescore-oof", action="store_true",
                   help="score out-of-fold rows even where the train stage's scores (oof.csv) can be reused")
    p.add_argument("--overwrite", action="store_true", help="replace existing predictions instead of refusing")

    def run(a):
        from .inference import infer_isolated, infer_stage
        if a.out and len(a.model_dir) > 1:
            raise ValueError("--out names one file: pass one --model-dir with it")
        for model_dir in a.model_dir:
            kwargs = dict(tokenized=a.tokenized, out=a.out, devices=a.devices, cpu_workers=a.cpu_workers,
                          tta=not a.no_tta, max_tokens=a.max_tokens, budget_hours=a.budget_hours,
                          overwrite=a.overwrite)
            if a.isolate:
                infer_isolated(model_dir, a.split, rescore_oof=a.rescore_oof, base_model_dir=a.base_model_dir,
                               **kwargs)
            else:
                infer_stage(model_dir, a.split, base_model_dir=a.base_model_dir,
                            reuse_train_scores=not a.rescore_oof, **kwargs)
    p.set_defaults(run=run)


def _parse_members(text: str) -> dict[str, list[str]]:
    """'name=dir1,dir2;name2=dir3' -> {name: [dirs]}"""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, dirs = part.partition("=")
        if not dirs:
            raise ValueError(f"--members entry {part!r} is not NAME=DIR[,DIR...]")
        out[name.strip()] = _csv_list(dirs)
    return out


def _caps(text: str):
    """'300' -> 300; 'smollm2=300,minilm=800' -> {'smollm2': 300, 'minilm': 800}"""
    if "=" not in text:
        return int(text)
    return {k.strip(): int(v) for k, v in (part.split("=", 1) for part in _csv_list(text))}


def _weights(text: str):
    return text if text in ("paper", "equal", "fit", "stack") else [float(x) for x in _csv_list(text)]


def _add_blend(sub):
    p = sub.add_parser("blend", help="blend member predictions into submission.csv + report")
    p.add_argument("--members", type=_parse_members, default=None,
                   help="NAME=DIR[,DIR...];NAME2=... (default: every trained model under <work>/models)")
    p.add_argument("--models", type=_csv_list, default=None, help="with the default members: only these presets")
    p.add_argument("--weights", type=_weights, default="paper", help="paper (0.7/0.3) | equal | fit (weights fitted on OOF rows) | stack (logistic regression "
                        "on the members' OOF log-probabilities) | w1,w2,...")
    p.add_argument("--space", choices=["prob", "log"], default="prob",
                   help="average probabilities (prob: the paper's) or log-probabilities (log)")
    p.add_argument("--temperature", action="store_true", help="fit temperature scaling on out-of-fold rows")
    p.add_argument("--out", default=None, help="default <work>/submission.csv")
    p.add_argument("--report-dir", default=None, help="default <work>/report")
    p.add_argument("--sample-submission", default="auto", help="path, 'auto' or 'none'")
    p.add_argument("--no-guardrails", action="store_true",
                   help="skip the fitted guardrails (identical / one empty response: kit/guardrails.py)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the uniform/prior/TF-IDF rows of the out-of-fold report")
    p.add_argument("--overwrite", action="store_true", help="replace an existing submission instead of refusing")

    def run(a):
        from .blend import blend_stage, discover_members
        members = a.members if a.members is not None else discover_members(models=a.models)
        res = blend_stage(members, weights=a.weights, space=a.space, temperature=a.temperature, out=a.out,
                          report_dir=a.report_dir, baselines=not a.no_baselines, guardrails=not a.no_guardrails,
                          overwrite=a.overwrite,
                          sample_submission=None if a.sample_submission == "none" else a.sample_submission)
        print(res.report)
        if res.table is not None:
            print(res.table.to_string(float_format=lambda x: f"{x:.4f}"))
    p.set_defaults(run=run)


def _add_cv(sub):
    p = sub.add_parser("cv", help="tokenize -> train -> infer -> blend, fold by fold, on any train CSV")
    p.add_argument("--train", type=_csv_list, required=True, help="comma-separated labelled tables (CSV/parquet, or chosen/rejected preference data)")
    p.add_argument("--models", type=_csv_list, default=["minilm", "smollm2", "lexical"],
                   help="comma-separated members (presets or local HF folders)")
    p.add_argument("--folds", type=int, default=5, help="prompt-grouped, label-stratified folds (>= 2)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per packed sequence (pairwise: per side); default: each preset's")
    p.add_argument("--max-rows", type=int, default=None, help="use only the first N rows; default: all")
    p.add_argument("--out", required=True, help="working folder; finished folds in it are reused")
    p.add_argument("--weights", type=_weights, default="fit",
                   help="fit | stack (both cross-fitted for the OOF score) | paper (0.7/0.3) | equal | w1,w2,...")
    p.add_argument("--epochs", type=float, default=None, help="passes over the training rows; default: each preset's")
    p.add_argument("--max-train-rows", type=_caps, default=None,
                   help="cap on training rows per fold: N for every model, or MODEL=N,MODEL=N")
    p.add_argument("--head", choices=sorted(HEADS), default=None,
                   help="the neural members' head (default: each preset's)")
    p.add_argument("--space", choices=["prob", "log"], default="log",
                   help="blend log-probabilities (log: measured better on PandaLM, README) or probabilities (prob)")
    p.add_argument("--no-tta", action="store_true", help="joint head: skip the swapped (B, A) pass")
    p.add_argument("--no-swap-augment", action="store_true", help="joint head: no (B, A) copies of the rows")
    p.add_argument("--evals-per-run", type=int, default=1, help="held-out evaluations per training run")
    p.add_argument("--seed", type=int, default=42, help="seed of the folds and of training")
    p.add_argument("--overwrite", action="store_true", help="redo everything in --out instead of reusing it")

    def run(a):
        from .cv import cv_stage
        res = cv_stage(a.train, a.models, a.folds, out=a.out, max_length=a.max_length, max_rows=a.max_rows,
                       weights=a.weights, epochs=a.epochs, max_train_rows=a.max_train_rows, tta=not a.no_tta,
                       seed=a.seed, swap_augment=not a.no_swap_augment, evals_per_run=a.evals_per_run,
                       head=a.head, space=a.space, overwrite=a.overwrite)
        print(res["markdown"])
    p.set_defaults(run=run)


def _add_main(sub):
    p = sub.add_parser("main", help="the main job: the four notebooks on the embedded defaults")
    p.add_argument("--quick", action="store_true", help="toy scale (CI): the same path in minutes")
    p.add_argument("--run-dir", default=None, help="default: <work>/runs/<timestamp> (must not exist)")
    p.add_argument("--publish-dir", default=None, help="where submission.csv goes; default submissions/")

    def run(a):
        from .pipeline import SUBMISSIONS, MainSettings, run_main
        run_main(MainSettings.quick() if a.quick else MainSettings(), a.run_dir, a.publish_dir or SUBMISSIONS)
    p.set_defaults(run=run)


def _add_submit(sub):
    p = sub.add_parser("submit", help="one call for a Kaggle submission: attached trained models + test.csv -> "
                                      "submission.csv (tokenize, score, blend; nothing written beside the models)")
    p.add_argument("--model-roots", type=_csv_list, default=None,
                   help="folders holding trained outputs; default: every attached dataset (/kaggle/input)")
    p.add_argument("--test", default=None, help="test table; default: this environment's")
    p.add_argument("--weights", type=lambda t: t if t in ("auto", "saved") else _weights(t), default="auto",
                   help="auto (the saved blend.json if found, else paper) | saved | paper | equal | w1,w2,...")
    p.add_argument("--blend-json", default=None, help="the saved blend to apply (default: the one under the roots)")
    p.add_argument("--out", default=None, help="default <work>/submission.csv (an earlier one is moved aside)")
    p.add_argument("--work", default=None, help="default: the work dir (/kaggle/working on Kaggle)")
    p.add_argument("--devices", type=_csv_list, default=None, help="e.g. cuda:0,cuda:1; default: every GPU, else cpu")
    p.add_argument("--no-tta", action="store_true", help="skip the swapped pass of joint-head models")
    p.add_argument("--max-tokens", type=int, default=None, help="padded tokens per batch")
    p.add_argument("--budget-hours", type=float, default=9.0,
                   help="warn when the projected scoring time exceeds this (Kaggle: 9)")

    def run(a):
        from .submit import submit
        submit(a.model_roots, a.test, weights=a.weights, blend_json=a.blend_json, out=a.out, work=a.work,
               devices=a.devices, tta=not a.no_tta, max_tokens=a.max_tokens, budget_hours=a.budget_hours)
    p.set_defaults(run=run)


def _add_pseudo_label(sub):
    p = sub.add_parser("pseudo-label", help="score an unlabelled table with trained models (or a saved blend) and "
                                            "write it as training rows with soft labels")
    p.add_argument("--input", required=True, help="the unlabelled table (any --train format; labels ignored)")
    p.add_argument("--model-roots", type=_csv_list, required=True, help="folders holding the teacher's trained models")
    p.add_argument("--out", required=True, help="the soft-labelled table to write (CSV, the competition's columns)")
    p.add_argument("--weights", type=lambda t: t if t in ("auto", "saved") else _weights(t), default="auto",
                   help="auto (the saved blend.json if found, else paper) | saved | paper | equal | w1,w2,...")
    p.add_argument("--blend-json", default=None, help="the saved blend to apply (default: the one under the roots)")
    p.add_argument("--temperature", type=float, default=1.0, help="sharpen (< 1) or soften (> 1) the teacher's "
                                                                   "probabilities: p ** (1/T), renormalised")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="leave out rows whose most likely outcome is below this probability")
    p.add_argument("--work", default=None, help="where the scoring runs; default: the work dir")
    p.add_argument("--devices", type=_csv_list, default=None, help="e.g. cuda:0,cuda:1; default: every GPU, else cpu")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output instead of refusing")

    def run(a):
        from .pseudo_label import pseudo_label
        pseudo_label(a.input, a.model_roots, a.out, weights=a.weights, blend_json=a.blend_json,
                     temperature=a.temperature, min_confidence=a.min_confidence, work=a.work, devices=a.devices,
                     overwrite=a.overwrite)
    p.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kit", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    for add in (_add_tokenize, _add_train, _add_infer, _add_blend, _add_cv, _add_main, _add_submit, _add_pseudo_label):
        add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError) as err:  # OSError: a full disk, a read-only folder, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
