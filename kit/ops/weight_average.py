"""Weight averaging within one training run: the trainable weights' running mean (SWA) and moving average (EMA).

LoRA-LiteE's point is efficiency: a bag of K seeds costs K trainings and K scorings. An average of one run's own
iterates costs neither. :class:`WeightAverage` (a TrainerCallback once :func:`weight_average_callback` makes it
one) keeps, from a share of the updates on
(``average_start``), two shadows of every trainable tensor (the LoRA factors and the heads):

* ``swa`` — the uniform mean of the weights after each update from the start step to the last;
* ``ema`` — the exponential moving average (``ema_decay`` per update), seeded with the weights at the start step.

Guarantees: the shadows never touch the training itself (same loss curve, same final weights as a run without
them); they are saved into each checkpoint (``weight_average.safetensors``, fingerprinted with the rest) and
restored on resume, so a resumed run's averages equal an uninterrupted run's; :meth:`WeightAverage.candidates`
returns ``final``, ``swa`` and ``ema`` as name -> tensor maps, and :func:`load_weights` copies one into the model.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

AVERAGES_FILE = "weight_average.safetensors"  # in each checkpoint: the shadows and how many updates they hold
CANDIDATES = ("final", "swa", "ema")


def trainable_state(model) -> dict[str, torch.Tensor]:
    """A detached fp32 copy of every trainable tensor, by parameter name."""
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_weights(model, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (from :func:`trainable_state` or a shadow) into the model's trainable tensors."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].dtype))


class WeightAverage:
    """The SWA and EMA shadows of a run's trainable weights (see the module docstring): the Trainer hooks
    ``on_train_begin``, ``on_step_end`` and ``on_save``; :func:`weight_average_callback` gives the rest."""

    def __init__(self, model, average_start: float, ema_decay: float, resume_from: Path | None = None):
        self.model, self.average_start, self.ema_decay = model, average_start, ema_decay
        self.swa: dict[str, torch.Tensor] = {}
        self.ema: dict[str, torch.Tensor] = {}
        self.updates = 0  # weights averaged into swa so far
        self.start_step: int | None = None
        if resume_from is not None and (Path(resume_from) / AVERAGES_FILE).is_file():
            saved = load_file(str(Path(resume_from) / AVERAGES_FILE))
            self.updates = int(saved.pop("__updates__").item())
            self.swa = {k[4:]: v for k, v in saved.items() if k.startswith("swa/")}
            self.ema = {k[4:]: v for k, v in saved.items() if k.startswith("ema/")}

    def on_train_begin(self, args, state, control, **kwargs):
        # the first update averaged: at least 1, at most the last (a share of 1 averages the last weights only)
        self.start_step = min(state.max_steps, max(1, math.ceil(self.average_start * state.max_steps)))
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step < self.start_step:
            return control
        now = trainable_state(self.model)
        if not self.updates:
            self.swa, self.ema = now, {k: v.clone() for k, v in now.items()}
        else:
            with torch.no_grad():
                for name, value in now.items():
                    self.swa[name] += (value - self.swa[name]) / (self.updates + 1)
                    self.ema[name].mul_(self.ema_decay).add_(value, alpha=1 - self.ema_decay)
        self.updates += 1
        return control

    def on_save(self, args, state, control, **kwargs):
        # before the kit's fingerprint (that callback is added after this one): the file is part of the checkpoint
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            tensors = {**{f"swa/{k}": v for k, v in self.swa.items()}, **{f"ema/{k}": v for k, v in self.ema.items()},
                       "__updates__": torch.tensor([self.updates])}
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / AVERAGES_FILE))
        return control

    def candidates(self) -> dict[str, dict[str, torch.Tensor]]:
        """``final`` (the weights as trained, or the best checkpoint's where held-out evaluations picked one),
        ``swa`` and ``ema``; a shadow that averaged no update is the final weights."""
        final = trainable_state(self.model)
        return {"final": final, "swa": self.swa or final, "ema": self.ema or final}

    def record(self) -> dict:
        """What metrics.json says about the averages."""
        return {"from_step": self.start_step, "updates_averaged": self.updates, "ema_decay": self.ema_decay}


@functools.cache
def _callback_class() -> type:
    # transformers' trainer module imports peft and bitsandbytes (seconds in every process): only a run that
    # averages pays for it here, when it builds its callback
    from transformers import TrainerCallback
    return type("WeightAverageCallback", (WeightAverage, TrainerCallback), {})


def weight_average_callback(model, average_start: float, ema_decay: float,
                            resume_from: Path | None = None) -> WeightAverage:
    """A :class:`WeightAverage` that is also a ``transformers.TrainerCallback`` (the Trainer's other events
    are its no-ops), for ``trainer.add_callback``."""
    return _callback_class()(model, average_start, ema_decay, resume_from=resume_from)
