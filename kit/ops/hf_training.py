"""Fine-tuning a backbone with the Hugging Face Trainer: the part every neural member type shares.

:func:`run_trainer` trains a member's model on its training rows and returns the trained
model with the run's figures. What it guarantees:

* cross-entropy on three classes (or against soft-label distributions: :mod:`kit.ops.losses`),
  gradient accumulation, cosine schedule with warm-up, the best checkpoint by held-out log loss
  kept, seeds fixed; the fresh heads may learn at a multiple of the learning rate;
* **resume**: a killed run resumes from its last *complete* checkpoint in ``<out>/checkpoints``
  (one half-written by a kill is skipped and named) when started again with the same recipe;
  another recipe is a PresetError naming each difference (``checkpoints/run.json`` records it);
* **whole-run figures**: ``train_seconds`` and ``train_loss`` cover every step, a resumed run's
  too — the loss is read from the Trainer's ``log_history`` (carried in every checkpoint's
  ``trainer_state.json``), which :class:`_LogAtSaves` makes log at every checkpoint and at the
  last step, so a resume always starts on a log boundary;
* **weight averaging** (``weight_average`` swa | ema): the model returned holds the run's averaged trainable
  weights, with the final ones and the other average beside it (:mod:`kit.ops.weight_average`);
* under ``torchrun`` / ``accelerate launch`` the same code trains with DDP (gloo on CPU); each
  rank writes its weights' fingerprint to ``<out>/ranks/``.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # text lines, not a notebook widget

from ..core.errors import PresetError
from ..core.log import get_logger
from ..core.metrics import log_loss, softmax
from ..core.presets import LR_SCHEDULES, Preset
from ..core.settings import TrainSettings
from .devices import gpu_dtype
from .losses import soft_cross_entropy
from .weight_average import WeightAverage, load_weights, weight_average_callback
from ..core.files import read_json
from ..store.io import writing
from ..store.manifest import file_sha256

log = get_logger(__name__)
RUN_RECIPE = "run.json"  # in checkpoints/: what the run that wrote them was asked to do
PROGRESS = "kit_progress.json"  # in each checkpoint: training seconds so far
CHECKPOINT_FILES = "kit_files.json"  # in each checkpoint, last: every file's size and sha256
FINISHED = "finished.json"  # in checkpoints/: they belong to a run that was published (kept checkpoints)


@dataclass
class TrainerRun:
    """What :func:`run_trainer` returns: the trained model (eval mode) and the run's figures."""

    model: object
    tokenizer: object
    device: torch.device
    metrics: dict  # train_rows, trainable/total params, train_seconds, train_loss, global_steps, resumed, best_step
    log: pd.DataFrame  # the Trainer's log history
    main_process: bool  # False on every DDP rank but the first: it writes nothing
    # weight averaging (settings.weight_average): final/swa/ema trainable weights; the model holds the saved one
    candidates: dict | None = None


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def run_recipe(preset: Preset, settings: TrainSettings, fold, tokenized: Path) -> dict:
    """Everything that decides a run's weights (keeping checkpoints afterwards does not)."""
    train = {k: v for k, v in asdict(settings).items() if k != "keep_checkpoints"}
    return json.loads(json.dumps({"preset": preset.to_dict(), "train": train, "fold": fold,
                                  "tokenized": str(Path(tokenized).resolve())}))


def training_arguments(preset: Preset, settings: TrainSettings, out: Path, n_train: int, has_eval: bool,
                       find_unused_parameters: bool = False):
    """The Trainer's arguments for the preset's recipe with ``settings`` applied (the train stage's, resolved
    against the preset: :meth:`kit.core.settings.TrainSettings.effective`)."""
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    batch, accum, epochs = settings.batch_size, settings.grad_accum, settings.epochs
    steps_per_epoch = max(1, -(-n_train // (batch * accum * world)))
    total = settings.max_steps if settings.max_steps > 0 else int(np.ceil(steps_per_epoch * epochs))
    every = settings.eval_steps or max(1, -(-total // max(1, settings.evals_per_run)))
    bf16 = cuda and gpu_dtype() == torch.bfloat16
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=batch, per_device_eval_batch_size=batch * 2,
        gradient_accumulation_steps=accum,
        learning_rate=settings.learning_rate, weight_decay=settings.weight_decay,
        num_train_epochs=epochs, max_steps=settings.max_steps,
        lr_scheduler_type=LR_SCHEDULES[settings.lr_schedule],
        # a float < 1 is a share of the steps (transformers >= 5, the floor in pyproject.toml: warmup_ratio is deprecated)
        warmup_steps=settings.warmup_ratio,
        eval_strategy="steps" if has_eval else "no", eval_steps=every,
        save_strategy="steps", save_steps=every, save_total_limit=2,
        load_best_model_at_end=has_eval, metric_for_best_model="log_loss" if has_eval else None,
        greater_is_better=False,
        logging_steps=settings.logging_steps, logging_first_step=True, report_to=[],
        seed=settings.seed, data_seed=settings.seed,
        bf16=bf16, fp16=cuda and not bf16, use_cpu=not cuda,
        **_checkpointing_arguments(preset.gradient_checkpointing and not preset.load_in_4bit),
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        dataloader_num_workers=0, remove_unused_columns=False,
        ddp_find_unused_parameters=find_unused_parameters, ddp_backend="gloo" if world > 1 and not cuda else None,
        disable_tqdm=False,
    )


def _checkpointing_arguments(enabled: bool) -> dict:
    """Activation (a.k.a. gradient) checkpointing under the name this transformers takes: since 5.x
    ``activation_checkpointing`` (the old name warns of its removal in v6, even when False)."""
    from dataclasses import fields
    from transformers import TrainingArguments

    name = "activation" if "activation_checkpointing" in {f.name for f in fields(TrainingArguments)} else "gradient"
    return {f"{name}_checkpointing": enabled, f"{name}_checkpointing_kwargs": {"use_reentrant": False}}


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """checkpoint-N folders the kit finished fingerprinting (:data:`CHECKPOINT_FILES`, written
    after the Trainer's own files), by step; an incomplete one — a run killed while saving, or a
    checkpoint from an older kit — is reported and never resumed."""
    if not checkpoints.is_dir():
        return []
    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    complete = [p for p in found if (p / CHECKPOINT_FILES).is_file() and (p / "trainer_state.json").is_file()]
    for p in found:
        if p not in complete:
            log.info(f"[kit train] {p} is incomplete (killed while saving?) or unfingerprinted: skipped")
    return complete


def fingerprint_checkpoint(folder: Path) -> None:
    """Write :data:`CHECKPOINT_FILES` into a checkpoint the Trainer saved: every file's size and
    sha256. The Trainer's checkpoint files are pickles (optimizer, scheduler, RNG state) that a
    resume unpickles, so a resume loads them only as they were saved (:func:`verify_checkpoint`)."""
    files = {f.relative_to(folder).as_posix(): [f.stat().st_size, file_sha256(f)]
             for f in sorted(folder.rglob("*")) if f.is_file() and f.name != CHECKPOINT_FILES}
    tmp = folder / f".{CHECKPOINT_FILES}.tmp"
    tmp.write_text(json.dumps(files, indent=1))
    os.replace(tmp, folder / CHECKPOINT_FILES)  # last: the checkpoint is complete


def verify_checkpoint(folder: Path) -> None:
    """Nothing when every file in ``folder`` is, byte for byte, what :func:`fingerprint_checkpoint`
    recorded — no file missing, added, changed or linked; else a PresetError naming the file,
    before anything in it is unpickled. Sizes are compared before contents are hashed."""
    fix = (f"a checkpoint is resumed only as this kit saved it: delete {folder.parent} (or pass --no-resume, "
           f"notebook RESUME = False) to train this fold afresh")
    recorded = read_json(folder / CHECKPOINT_FILES, fix, PresetError)
    if not isinstance(recorded, dict):
        raise PresetError(f"{folder / CHECKPOINT_FILES}: not a checkpoint fingerprint: {fix}")
    links = [p for p in folder.rglob("*") if p.is_symlink()]
    if links:
        raise PresetError(f"{links[0]} is a symbolic link in a checkpoint (the Trainer writes none): {fix}")
    now = {f.relative_to(folder).as_posix(): f for f in folder.rglob("*") if f.is_file() and f.name != CHECKPOINT_FILES}
    for name in sorted(set(recorded) ^ set(now)):
        state = "is missing" if name in recorded else "was added"
        raise PresetError(f"{folder / name} {state} since the kit saved this checkpoint: {fix}")
    for name, record in sorted(recorded.items()):
        size, digest = record if isinstance(record, list) and len(record) == 2 else (None, None)
        if now[name].stat().st_size != size or file_sha256(now[name]) != digest:
            raise PresetError(f"{folder / name} changed since the kit saved this checkpoint: {fix}")
    read_json(folder / "trainer_state.json", fix, PresetError)  # the Trainer's own reader would overflow the stack


@contextmanager
def refused_pickles(checkpoint: Path | None):
    """A checkpoint file that torch's safe loader refuses to unpickle (it holds objects beyond tensors and
    plain values) as one PresetError naming the checkpoint — never the loader's traceback, whose advice
    to lower that safety setting the kit does not give."""
    try:
        yield
    except pickle.UnpicklingError:
        where = f"a file in the checkpoint {checkpoint}" if checkpoint else "a checkpoint file"
        raise PresetError(f"{where} holds objects the kit will not unpickle (only tensors and plain values load, "
                          f"as torch's safe loader allows): delete {checkpoint.parent if checkpoint else 'the checkpoints'} "
                          f"(or pass --no-resume, notebook RESUME = False) to train this fold afresh") from None


def check_same_run(checkpoints: Path, recipe: dict) -> None:
    """Nothing, when ``checkpoints`` were written by a run of this ``recipe``; else a PresetError
    naming every difference."""
    saved = checkpoints / RUN_RECIPE
    was = read_json(saved, "start afresh with --no-resume (notebook RESUME = False)", PresetError) \
        if saved.is_file() else None
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


def whole_run_loss(log_history: list[dict]) -> float | None:
    """The mean training loss over every step, from the Trainer's log history: each logged ``loss``
    is the mean since the previous log, so it weighs by its span of steps."""
    logged = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    if not logged:
        return None
    total, previous = 0.0, 0
    for step, loss in logged:
        total += loss * (step - previous)
        previous = step
    return total / max(previous, 1)


def _callbacks(before_seconds: float):
    """TrainerCallbacks (public API only): one stores the seconds trained so far in each checkpoint;
    one makes the Trainer log at every checkpoint and at the last step, so the log history covers
    every step of a run — a resumed one too (:func:`whole_run_loss`)."""
    from transformers import TrainerCallback

    class Seconds(TrainerCallback):
        def __init__(self):
            self.started = time.time()

        def seconds(self) -> float:
            return before_seconds + time.time() - self.started

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.barrier()  # every rank's files (rng_state_<rank>.pth) are in before the fingerprint
            if state.is_world_process_zero and folder.is_dir():
                (folder / PROGRESS).write_text(json.dumps({"seconds": self.seconds(), "step": state.global_step}))
                fingerprint_checkpoint(folder)
            return control

    class LogAtSaves(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save or control.should_training_stop or state.global_step >= state.max_steps:
                control.should_log = True
            return control

    class TextProgress(TrainerCallback):
        """The Trainer's progress as plain text lines (std tqdm): in a notebook kernel the Trainer
        would draw an HTML bar (a widget where ipywidgets is installed) that an executed notebook
        saves as its first frame."""

        bar = eval_bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                                file=sys.stdout, mininterval=5.0)
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
            return control

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            if state.is_world_process_zero and eval_dataloader is not None:
                if self.eval_bar is None:
                    self.eval_bar = tqdm(total=len(eval_dataloader), desc="evaluate", unit="batch", file=sys.stdout,
                                         mininterval=5.0, leave=False)
                self.eval_bar.update(1)
            return control

        def on_evaluate(self, args, state, control, **kwargs):
            if self.eval_bar is not None:
                self.eval_bar.close()
                self.eval_bar = None
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)
            return control

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            return control

    return Seconds(), LogAtSaves(), TextProgress()


def _saved_seconds(checkpoint: Path | None) -> float:
    path = checkpoint / PROGRESS if checkpoint else None
    return float(json.loads(path.read_text()).get("seconds", 0.0)) if path and path.is_file() else 0.0


def _averaging(trainer, settings: TrainSettings, last: Path | None) -> WeightAverage | None:
    """The run's weight-averaging callback, added to ``trainer`` (None: ``weight_average`` is none)."""
    if settings.weight_average == "none":
        return None
    averaging = weight_average_callback(trainer.model, settings.average_start, settings.ema_decay, resume_from=last)
    trainer.add_callback(averaging)
    return averaging


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


def _eval_metrics(eval_pred) -> dict:
    logits, labels = eval_pred
    probs = softmax(np.asarray(logits, dtype=np.float64))
    labels = np.asarray(labels)
    return {"log_loss": log_loss(labels, probs), "accuracy": float((probs.argmax(1) == labels).mean())}


def _fingerprint(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def run_trainer(preset: Preset, settings: TrainSettings, *, out: Path, recipe: dict, build: Callable,
                train_dataset, eval_dataset, collator: Callable, soft_labels: bool, resume: bool = True,
                restart: bool = False, find_unused_parameters: bool = False) -> TrainerRun:
    """Train ``build(preset)`` -> (peft model, tokenizer) on ``train_dataset`` with the Trainer.

    Args:
        preset, settings: the recipe (settings override the preset's values).
        out: the model folder; checkpoints go to ``out/checkpoints``.
        recipe: :func:`run_recipe`'s record, compared with a killed run's before resuming it.
        build: ``preset -> (model, tokenizer)``, called after the seed is set.
        train_dataset, eval_dataset: torch datasets (``eval_dataset`` None: no held-out rows).
        collator: ``tokenizer -> data collator``.
        soft_labels: train on target distributions (:func:`kit.ops.losses.soft_cross_entropy`).
        resume: resume from complete checkpoints of the same recipe (False: delete them).
        restart: replacing a finished model: delete the checkpoints *it* kept (marked :data:`FINISHED`)
            and start afresh; the checkpoints of a killed replacement run are resumed like any others.
        find_unused_parameters: DDP must allow parameters without gradients (an unused pooler).

    Returns:
        :class:`TrainerRun` — the trained model in eval mode, its tokenizer and device, the run's
        figures and log history.
    """
    from transformers import Trainer, set_seed

    checkpoints = out / "checkpoints"
    if restart and (checkpoints / FINISHED).exists():
        shutil.rmtree(checkpoints, ignore_errors=True)
    complete = complete_checkpoints(checkpoints) if resume else []
    resuming = bool(complete)
    if resuming:
        check_same_run(checkpoints, recipe)
        verify_checkpoint(complete[-1])  # before the Trainer unpickles anything in it
    elif checkpoints.exists() and is_rank_zero():
        shutil.rmtree(checkpoints)  # --no-resume, or only incomplete checkpoints: none may be resumed later

    set_seed(settings.seed)  # the new heads' initialisation
    net, tokenizer = build(preset)
    trainable, total = count_parameters(net)
    # one evaluation at the end picks no checkpoint: the held-out rows are scored once, by the member
    select = eval_dataset is not None and (settings.evals_per_run > 1 or settings.eval_steps is not None)
    args = training_arguments(preset, settings, out, len(train_dataset), select, find_unused_parameters)
    head_lr_scale = settings.head_lr_scale
    trainer = Trainer(model=net, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset if select else None,
                      data_collator=collator(tokenizer), processing_class=tokenizer,
                      compute_metrics=_eval_metrics, optimizers=(_optimizer(net, args, head_lr_scale), None),
                      compute_loss_func=soft_cross_entropy if soft_labels else None)
    last = complete[-1] if resuming else None
    seconds_cb, log_cb, progress_cb = _callbacks(_saved_seconds(last))
    averaging = _averaging(trainer, settings, last)  # added before seconds_cb: its on_save fingerprints the checkpoint
    trainer.add_callback(seconds_cb)
    trainer.add_callback(log_cb)
    for callback in list(trainer.callback_handler.callbacks):  # the default bar: text, or HTML in a notebook
        if type(callback).__name__ in ("ProgressCallback", "NotebookProgressCallback"):
            trainer.remove_callback(callback)
    trainer.add_callback(progress_cb)
    if resuming:
        log.info(f"[kit train] resuming from the last checkpoint in {checkpoints} ({last.name})")
    elif is_rank_zero():
        checkpoints.mkdir(parents=True, exist_ok=True)
        (checkpoints / RUN_RECIPE).write_text(json.dumps(recipe, indent=2) + "\n")
    with writing(checkpoints), refused_pickles(last):  # a checkpoint unsaveable or unloadable: one line naming it
        output = trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = seconds_cb.seconds()

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # DDP check: every rank's weights
        rank = int(os.environ.get("RANK", "0"))
        (out / "ranks").mkdir(parents=True, exist_ok=True)
        (out / "ranks" / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "sha256": _fingerprint(net)}))
    best = trainer.state.best_model_checkpoint  # a folder deleted later unless checkpoints are kept
    trainer.model.eval()  # no dropout: the Trainer leaves the model in train mode when it did not evaluate
    candidates = averaging.candidates() if averaging is not None else None
    if candidates is not None:
        load_weights(trainer.model, candidates[settings.weight_average])
    metrics = {"train_rows": len(train_dataset), "trainable_params": trainable, "total_params": total,
               # the whole run's, a resumed one included (the Trainer's own figures cover only the part
               # after the resume)
               "train_seconds": seconds, "train_loss": whole_run_loss(trainer.state.log_history),
               "global_steps": output.global_step, "resumed": resuming,
               "best_step": int(Path(best).name.split("-")[-1]) if best else None,
               **({"weight_average": {"saved": settings.weight_average, **averaging.record()}} if averaging else {})}
    return TrainerRun(trainer.model, tokenizer, trainer.args.device, metrics, pd.DataFrame(trainer.state.log_history),
                      trainer.is_world_process_zero(), candidates)
