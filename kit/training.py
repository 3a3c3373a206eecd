"""Stage 2 — train: LoRA fine-tuning of one backbone on one fold, with the HF Trainer.

Per (model, fold) the output folder (default ``<work>/models/<preset>/fold<K>``, or
``.../full`` when ``fold=None`` trains on every row) holds:

* ``adapter/``: LoRA adapter + classification head (peft ``modules_to_save``) + tokenizer;
* ``config.json``: the resolved preset, training settings and tokenization metadata;
* ``metrics.json``: held-out log loss / accuracy of the kept (best) checkpoint, timings;
* ``oof.csv``: id, p_a, p_b, p_tie for the held-out fold;
* ``train_log.csv`` and ``training.png``: the Trainer's log history and loss curves;
* ``manifest.json``, last: the cache's and the fold assignment's fingerprints it was trained on,
  and the adapter's (:mod:`kit.manifest`).

These are written into a staging folder renamed into place (:func:`publish_training`): a folder
holds a complete model or none, and a run killed before that resumes when started again.

Cross-entropy on three classes, gradient accumulation, cosine schedule with warm-up,
optional swap augmentation (each row also seen as (B, A) with the label swapped), the
best checkpoint by held-out log loss kept, seeds fixed. A killed run resumes from its
last *complete* checkpoint in ``checkpoints/`` (one half-written by a kill is skipped) when
started again with the same arguments; other arguments are an error naming what differs
(``checkpoints/run.json`` records the run's recipe), ``resume=False`` starts afresh. After a
resume, ``metrics.json``'s ``train_seconds`` and ``train_loss`` still cover the whole run. Under
``torchrun``/``accelerate launch`` the same code trains with DDP (gloo on CPU).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .env import work_dir
from .evaluation import log_loss, softmax
from .io import check_free, new_run_id, read_parquet_keeping_ids, recover_staged, staged_folder, write_csv, write_json
from .manifest import MANIFEST, check_output, read_manifest, stage_manifest
from .heads import get_head
from .presets import Preset, PresetError, resolve_preset


@dataclass
class TrainSettings:
    """Training knobs; None takes the preset's value."""

    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    warmup_ratio: float | None = None
    weight_decay: float | None = None
    max_steps: int = -1  # > 0 overrides epochs
    evals_per_run: int = 4  # evaluations (and checkpoints) over the run
    eval_steps: int | None = None  # overrides evals_per_run
    swap_augment: bool = True
    seed: int = 42
    max_train_rows: int | None = None
    max_eval_rows: int | None = None
    keep_checkpoints: bool = False
    logging_steps: int = 5
    group_by_length: bool | None = None  # batches of similar length (less padding); False: shuffling
    head_lr_scale: float | None = None  # the new heads' learning rate relative to LoRA's


@dataclass
class TrainResult:
    out_dir: Path
    metrics: dict
    oof: pd.DataFrame | None


def _metrics(eval_pred) -> dict:
    logits, labels = eval_pred
    probs = softmax(np.asarray(logits, dtype=np.float64))
    labels = np.asarray(labels)
    return {"log_loss": log_loss(labels, probs), "accuracy": float((probs.argmax(1) == labels).mean())}


def default_model_out(preset_name: str, fold: int | None) -> Path:
    return work_dir() / "models" / preset_name / (f"fold{fold}" if fold is not None else "full")


def load_tokenized(tokenized: str | Path) -> tuple[pd.DataFrame, dict]:
    tokenized = Path(tokenized)
    path = tokenized / "train.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no tokenized train cache at {path}; run `python -m kit tokenize` first")
    from .tokenization import check_cache

    manifest = check_cache(tokenized, "train")
    meta = json.loads((tokenized / "meta.json").read_text())
    return read_parquet_keeping_ids(path), meta | {"manifest": manifest}


def _fingerprint(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _split(frame: pd.DataFrame, fold: int | None, settings: TrainSettings):
    """(training rows, held-out rows) of the tokenized table for `fold` (None: all rows train)."""
    if fold is None:
        train, held = frame, frame.iloc[:0]
    else:
        folds = sorted(f for f in set(frame["fold"]) if f >= 0)  # extra rows (fold -2) are never held out
        if fold not in folds:
            raise PresetError(f"fold {fold} out of range: the tokenized data has folds {folds}")
        train, held = frame[frame["fold"] != fold], frame[frame["fold"] == fold]
        if not len(train):
            raise PresetError(f"fold {fold} holds every row of the tokenized data (tokenized with --folds 1?), "
                              f"so nothing is left to train on: train with --fold full (notebook FOLD = None), "
                              f"or re-tokenize with --folds 2 or more")
    if settings.max_train_rows:
        train = train.head(settings.max_train_rows)
    if settings.max_eval_rows:
        held = held.head(settings.max_eval_rows)
    return train, held


def cache_preset(model: str, tokenized: Path, token_meta: dict, overrides: dict) -> Preset:
    """The preset a tokenized cache was made for — backbone folder, max_length and head — with
    `overrides`; a head other than the cache's is an error (the packing differs)."""
    packed_for = token_meta.get("preset", {})
    name = resolve_preset(model, **overrides).name
    if packed_for.get("name", name) != name:
        raise PresetError(f"{tokenized} was tokenized for {packed_for['name']!r}, not {name!r}")
    cache_head = packed_for.get("head", "joint")
    if overrides.get("head") not in (None, cache_head):
        raise PresetError(f"{tokenized} was tokenized for the {cache_head!r} head, not {overrides['head']!r}: "
                          f"re-run the tokenize stage with --head {overrides['head']} (notebook HEAD="
                          f"{overrides['head']!r}), or train with --head {cache_head}")
    return resolve_preset(model, **{"max_length": packed_for.get("max_length"),
                                    "model_dir": packed_for.get("model_dir"), **overrides, "head": cache_head})


def _training_args(preset: Preset, settings: TrainSettings, out: Path, n_train: int, has_eval: bool):
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    batch = settings.batch_size or preset.batch_size
    accum = settings.grad_accum or preset.grad_accum
    epochs = settings.epochs or preset.epochs
    steps_per_epoch = max(1, -(-n_train // (batch * accum * world)))
    total = settings.max_steps if settings.max_steps > 0 else int(np.ceil(steps_per_epoch * epochs))
    every = settings.eval_steps or max(1, -(-total // max(1, settings.evals_per_run)))
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=batch, per_device_eval_batch_size=batch * 2,
        gradient_accumulation_steps=accum,
        learning_rate=settings.learning_rate or preset.learning_rate,
        weight_decay=settings.weight_decay if settings.weight_decay is not None else preset.weight_decay,
        num_train_epochs=epochs, max_steps=settings.max_steps,
        lr_scheduler_type="cosine",
        warmup_steps=settings.warmup_ratio if settings.warmup_ratio is not None else preset.warmup_ratio,
        eval_strategy="steps" if has_eval else "no", eval_steps=every,
        save_strategy="steps", save_steps=every, save_total_limit=2,
        load_best_model_at_end=has_eval, metric_for_best_model="log_loss" if has_eval else None,
        greater_is_better=False,
        logging_steps=settings.logging_steps, logging_first_step=True, report_to=[],
        seed=settings.seed, data_seed=settings.seed,
        bf16=bf16, fp16=cuda and not bf16, use_cpu=not cuda,
        gradient_checkpointing=preset.gradient_checkpointing and not preset.load_in_4bit,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        train_sampling_strategy="group_by_length" if (preset.group_by_length if settings.group_by_length is None
                                                      else settings.group_by_length) else "random",
        dataloader_num_workers=0, remove_unused_columns=False,
        # pairwise: the pooler an encoder brings (and its LoRA) is unused by mean pooling
        ddp_find_unused_parameters=preset.head == "pairwise", ddp_backend="gloo" if world > 1 and not cuda else None,
        disable_tqdm=False,
    )


RUN_RECIPE = "run.json"  # in checkpoints/: what the run that wrote them was asked to do


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _run_recipe(preset: Preset, settings: TrainSettings, fold, tokenized: Path) -> dict:
    """Everything that decides a run's weights (keeping checkpoints afterwards does not)."""
    train = {k: v for k, v in asdict(settings).items() if k != "keep_checkpoints"}
    return json.loads(json.dumps({"preset": preset.to_dict(), "train": train, "fold": fold,
                                  "tokenized": str(Path(tokenized).resolve())}))


def _complete_checkpoints(checkpoints: Path) -> list[Path]:
    """checkpoint-N folders the Trainer finished writing (trainer_state.json is written last),
    by step; an incomplete one — a run killed while saving — is reported and never resumed."""
    if not checkpoints.is_dir():
        return []
    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    for p in found:
        if p not in complete:
            print(f"[kit train] {p} is incomplete (killed while saving?): skipped", flush=True)
    return complete


def _check_same_run(checkpoints: Path, recipe: dict) -> None:
    saved = checkpoints / RUN_RECIPE
    was = json.loads(saved.read_text()) if saved.is_file() else None
    if was == recipe:
        return
    if was is None:
        why = f"{saved.name} is missing, so what wrote them is unknown"
    else:
        diff = {f"{part}.{k}": (was.get(part, {}).get(k), v) for part in ("train", "preset")
                for k, v in recipe[part].items() if was.get(part, {}).get(k) != v}
        diff.update({k: (was.get(k), recipe[k]) for k in ("fold", "tokenized") if was.get(k) != recipe[k]})
        why = f"they were written with other arguments {diff} (then, now)"
    raise PresetError(f"cannot resume from {checkpoints}: {why}. Rerun with the same arguments to resume, or "
                      f"start afresh with --no-resume (notebook RESUME = False)")


def _progress_callback(trainer, before: dict):
    """A TrainerCallback that stores the run's progress so far — training seconds, and the sum
    of the per-step training losses with its step count — in every checkpoint (``before``: what
    the checkpoint a resumed run starts from stored), so a resumed run's metrics describe the
    whole run. The loss sum reads the Trainer's running totals (``_total_loss_scalar`` and
    ``_tr_loss``, transformers 5.23); where they are absent it is left out (None)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self):
            self.started = time.time()

        def seconds(self) -> float:
            return before.get("seconds", 0.0) + time.time() - self.started

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                (folder / PROGRESS).write_text(json.dumps({"seconds": self.seconds(),
                                                           "loss_sum": self.loss_sum(), "step": state.global_step}))
            return control

        def loss_sum(self) -> float | None:
            total, pending = getattr(trainer, "_total_loss_scalar", None), getattr(trainer, "_tr_loss", None)
            if total is None or pending is None or ("step" in before and before.get("loss_sum") is None):
                return None
            return before.get("loss_sum", 0.0) + total + float(pending.item() if hasattr(pending, "item") else pending)

    return Progress()


PROGRESS = "kit_progress.json"


def _saved_progress(checkpoint: Path | None) -> dict:
    path = checkpoint / PROGRESS if checkpoint else None
    return json.loads(path.read_text()) if path and path.is_file() else {}


def _whole_run_loss(before: dict, train_output) -> float | None:
    """The mean training loss over every step of the run: the Trainer's own figure covers only
    the steps after a resume."""
    if not before:
        return train_output.training_loss
    if before.get("loss_sum") is None:
        return None
    after_steps = train_output.global_step - before["step"]
    return (before["loss_sum"] + train_output.training_loss * after_steps) / max(train_output.global_step, 1)


def train_stage(model: str = "minilm", fold: int | None = 0, *, tokenized: str | Path | None = None,
                out: str | Path | None = None, overwrite: bool = False, resume: bool = True,
                settings: TrainSettings | None = None, **preset_overrides) -> TrainResult:
    """Run stage 2 for one (model, fold); see the module docstring."""
    from transformers import Trainer, set_seed

    from .modeling import check_preset_runtime, count_parameters

    settings = settings or TrainSettings()
    if "max_length" in preset_overrides:
        raise PresetError("max_length is fixed when tokenizing; re-run the tokenize stage to change it")
    name = resolve_preset(model, **preset_overrides).name  # unknown preset / field: fail before any I/O
    tokenized = Path(tokenized) if tokenized else work_dir() / "tokenized" / name
    frame, token_meta = load_tokenized(tokenized)
    cache_manifest = token_meta.pop("manifest")
    preset = cache_preset(model, tokenized, token_meta, preset_overrides)
    train_rows, held = _split(frame, fold, settings)
    out = Path(out) if out else default_model_out(preset.name, fold)
    # a finished model is replaced only with overwrite (and only once the new one is complete:
    # publish_training); a run killed before publishing left none of these, so it simply resumes
    if _is_rank_zero():
        recover_staged(out, FINAL_FILES)  # a run killed while publishing: its checkpoints go back
    check_free([out / n for n in FINAL_FILES], overwrite)
    if preset.kind == "lexical":  # no backbone, no Trainer: a scikit-learn member
        from .lexical import train_lexical
        return train_lexical(preset, train_rows, held, fold, out, settings, tokenized, token_meta, cache_manifest)
    check_preset_runtime(preset)
    head = get_head(preset.head)
    missing = [c for c in head.id_columns if c not in frame.columns]
    if missing:
        raise PresetError(f"{tokenized} lacks {missing} for the {head.name!r} head: re-run the tokenize stage")
    train_ds = head.dataset(train_rows, settings.swap_augment)
    checkpoints = out / "checkpoints"
    if overwrite and (out / "metrics.json").exists():
        shutil.rmtree(checkpoints, ignore_errors=True)  # kept checkpoints of a finished run: start afresh
    recipe = _run_recipe(preset, settings, fold, tokenized)
    complete = _complete_checkpoints(checkpoints) if resume else []
    resuming = bool(complete)
    if resuming:
        _check_same_run(checkpoints, recipe)
    elif checkpoints.exists() and _is_rank_zero():
        shutil.rmtree(checkpoints)  # --no-resume, or only incomplete checkpoints: none may be resumed later

    set_seed(settings.seed)  # the new head's initialisation
    net, tokenizer = head.build(preset)
    trainable, total = count_parameters(net)
    eval_ds = head.dataset(held, False) if len(held) else None
    # one evaluation at the end picks no checkpoint: the held-out rows are scored once, below
    select = eval_ds is not None and (settings.evals_per_run > 1 or settings.eval_steps is not None)
    args = _training_args(preset, settings, out, len(train_ds), select)
    head_lr_scale = settings.head_lr_scale if settings.head_lr_scale is not None else preset.head_lr_scale
    from .heads import soft_cross_entropy, soft_targets

    soft = soft_targets(train_rows) is not None  # a soft-labelled row: cross-entropy against distributions
    trainer = Trainer(model=net, args=args, train_dataset=train_ds, eval_dataset=eval_ds if select else None,
                      data_collator=head.collator(tokenizer), processing_class=tokenizer,
                      compute_metrics=_metrics, optimizers=(_optimizer(net, args, head_lr_scale), None),
                      compute_loss_func=soft_cross_entropy if soft else None)
    last = complete[-1] if resuming else None
    before = _saved_progress(last)
    progress = _progress_callback(trainer, before)
    trainer.add_callback(progress)
    if resuming:
        print(f"[kit train] resuming from the last checkpoint in {checkpoints} ({last.name})", flush=True)
    elif _is_rank_zero():
        write_json(recipe, checkpoints / RUN_RECIPE, overwrite=True)
    train_output = trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = progress.seconds()

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # DDP check: every rank's weights
        rank = int(os.environ.get("RANK", "0"))
        write_json({"rank": rank, "sha256": _fingerprint(net)}, out / "ranks" / f"rank{rank}.json", True)
    if not trainer.is_world_process_zero():
        return TrainResult(out, {}, None)

    oof, metrics = None, {"fold": fold, "train_rows": len(train_ds), "held_out_rows": len(held), "soft_labels": soft,
                          "trainable_params": trainable, "total_params": total,
                          # the whole run's, a resumed one included (the Trainer's own figures
                          # cover only the part after the resume)
                          "train_seconds": seconds, "train_loss": _whole_run_loss(before, train_output),
                          "global_steps": train_output.global_step, "resumed": resuming}
    if eval_ds is not None:
        # not trainer.predict: with length-grouped sampling it returns rows shuffled
        trainer.model.eval()  # no dropout: the Trainer leaves the model in train mode when it did not evaluate
        logits = head.score(trainer.model, held, tokenizer.pad_token_id, device=trainer.args.device,
                            desc="out-of-fold")
        probs = softmax(logits)
        labels = held["label"].to_numpy()
        best = trainer.state.best_model_checkpoint  # a folder deleted below unless checkpoints are kept
        metrics.update(log_loss=log_loss(labels, probs), accuracy=float((probs.argmax(1) == labels).mean()),
                       best_step=int(Path(best).name.split("-")[-1]) if best else None)
        oof = pd.DataFrame({"id": held["id"].to_numpy(), "p_a": probs[:, 0], "p_b": probs[:, 1],
                            "p_tie": probs[:, 2], "label": labels})

    log = pd.DataFrame(trainer.state.log_history)

    def save_adapter(target: Path) -> None:
        trainer.model.save_pretrained(target)
        tokenizer.save_pretrained(target)

    publish_training(out, preset, fold, settings, tokenized, token_meta, cache_manifest, metrics, oof,
                     save_adapter, log)
    if not settings.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainResult(out, metrics, oof)


def _optimizer(model, args, head_lr_scale: float):
    """AdamW over the trainable parameters; the heads (peft ``modules_to_save`` copies) at
    ``head_lr_scale`` times the learning rate. None lets the Trainer build its own (scale 1)."""
    if head_lr_scale == 1.0:
        return None
    heads, body = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (heads if "modules_to_save" in name else body).append(p)
    return torch.optim.AdamW([{"params": body, "lr": args.learning_rate},
                              {"params": heads, "lr": args.learning_rate * head_lr_scale}],
                             lr=args.learning_rate, weight_decay=args.weight_decay)


# the train stage's own files in its output folder; anything else there (checkpoints/, ranks/) is
# carried over when a run publishes (:func:`publish_training`)
FINAL_FILES = ("adapter", "config.json", "metrics.json", "oof.csv", "train_log.csv", "training.png",
               "predictions", MANIFEST)


def publish_training(out: Path, preset: Preset, fold, settings: TrainSettings, tokenized: Path, token_meta: dict,
                     cache_manifest: dict, metrics: dict, oof: pd.DataFrame | None, save_adapter,
                     log: pd.DataFrame | None = None) -> str:
    """Write a finished run's outputs stage-atomically: adapter/ (``save_adapter(folder)``),
    config.json, train_log.csv + training.png (with ``log``), oof.csv, metrics.json and, last,
    manifest.json go into a staging folder that replaces ``out`` in one rename. A kill or a full
    disk before that leaves ``out`` as it was — the previous complete model, or no model (its
    checkpoints stay for the rerun to resume). The previous model's predictions/ go with it:
    nothing it predicted outlives it. Returns the new run id."""
    run_id = new_run_id()
    config = {"preset": preset.to_dict(), "fold": fold, "train": asdict(settings), "tokenized": str(tokenized),
              "tokenization": token_meta, "torch": torch.__version__, "run_id": run_id}
    with staged_folder(out, FINAL_FILES) as stage:
        save_adapter(stage / "adapter")
        write_json(config, stage / "config.json")
        if log is not None:
            from .plots import plot_training
            write_csv(log, stage / "train_log.csv")
            plot_training(log, stage / "training.png", title=f"{preset.name} fold {fold}")
        if oof is not None:
            write_csv(oof, stage / "oof.csv")
        write_json(metrics, stage / "metrics.json")
        written = {n: stage / n for n in ("adapter", "config.json", "oof.csv", "metrics.json") if (stage / n).exists()}
        write_json(stage_manifest(
            "train", settings={"preset": preset.name, "head": preset.head, "fold": fold, **asdict(settings)},
            inputs={"cache": {"path": str(tokenized), "sha256": cache_manifest["outputs"]["train.parquet"],
                              "folds": cache_manifest.get("folds")}},
            outputs=written, run_id=run_id), stage / MANIFEST)  # last: the model is complete
    return run_id


def check_trained(model_dir: str | Path) -> dict:
    """The model folder's manifest, once its adapter is checked to be the one its train stage
    wrote; else a StaleOutput saying to retrain."""
    model_dir = Path(model_dir)
    rerun = f"rerun the train stage into it (`python -m kit train ... --out {model_dir} --overwrite`)"
    manifest = read_manifest(model_dir / MANIFEST, f"trained model {model_dir}", rerun)
    check_output(manifest, "adapter", model_dir / "adapter", f"trained model {model_dir}", rerun)
    return manifest
