"""What the member types with a Hugging Face backbone share: fitting with the Trainer (LoRA, or
QLoRA in 4-bit) and predicting on every device. A backbone member type (:mod:`kit.members.joint`,
:mod:`kit.members.pairwise`) subclasses :class:`BackboneMember` and supplies how to pack rows, build
and reload its model, feed the Trainer and score rows."""
from __future__ import annotations

import json
import shutil
from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.errors import PresetError
from ..core.metrics import softmax
from ..core.presets import Preset
from ..core.schema import SWAP_INDEX
from ..core.settings import TrainSettings
from ..ops.backbones import check_preset_runtime, load_tokenizer
from ..ops.devices import default_max_tokens
from ..ops.hf_training import FINISHED, run_recipe, run_trainer
from ..ops.lora import lora_merged
from ..ops.losses import soft_targets
from ..ops.packing import PackConfig, Packer
from ..ops.weight_average import load_weights
from ..store.cache import check_cache
from ..store.models import read_model_config
from ..store.predictions import BaseMargins
from .base import Encoder, FitContext, Fitted, MemberType, Predictor, backbone_predictor


class BackboneMember(MemberType):
    """A member type whose model is a LoRA-adapted backbone; see the module docstring."""

    uses_backbone = True
    averages_weights = True  # the Trainer's run: kit.ops.weight_average
    supports_residual: bool = False  # dataset(..., base=) and the model add a base member's log-probabilities
    side_packing: bool = False  # Packer(side=True): prompt + one response per sequence
    find_unused_parameters: bool = False  # DDP: parameters without gradients (an unused pooler)

    @abstractmethod
    def pack(self, packer: Packer, frame: pd.DataFrame, desc: str) -> pd.DataFrame:
        """id + cache columns + retention diagnostics, one row per input row, in order."""

    @abstractmethod
    def dataset(self, frame: pd.DataFrame, swap_augment: bool):
        """A torch Dataset of the cache rows for the Trainer (labels or soft targets)."""

    @abstractmethod
    def collator(self, tokenizer):
        """The Trainer's data collator."""

    @abstractmethod
    def build(self, preset: Preset):
        """(trainable peft model, tokenizer) for the preset: backbone frozen, LoRA on, fresh heads."""

    @abstractmethod
    def load_model(self, model_dir: Path, preset: Preset, device_map=None):
        """(eval model, tokenizer): the backbone with the trained adapter and heads of ``model_dir``."""

    @abstractmethod
    def score(self, model, frame: pd.DataFrame, pad_id: int, swap: bool = False, **options):
        """(n, 3) logits of ``frame``'s rows in order (``options``: device, max_tokens, progress,
        projection, desc)."""

    # what one pass over a row reads (the run-time projection's unit)
    work_columns: tuple[str, ...] = ()

    def encoder(self, preset: Preset, pack: dict | None = None) -> Encoder:
        config = replace(PackConfig(max_length=preset.max_length, chat_template=preset.chat_template), **(pack or {}))
        packer = Packer(load_tokenizer(preset), config, side=self.side_packing)
        return Encoder(lambda frame, desc: self.pack(packer, frame, desc), config)

    def fit(self, preset: Preset, train_rows: pd.DataFrame, held_rows: pd.DataFrame, settings: TrainSettings,
            context: FitContext) -> Fitted:
        check_preset_runtime(preset)
        self.check_cache(train_rows, context.tokenized)
        soft = soft_targets(train_rows) is not None  # a soft-labelled row: cross-entropy against distributions
        base = self.base_margins(settings, context)
        train_base = None if base is None else base.for_rows(train_rows, f"{context.tokenized} (training rows)")
        held_base = None if base is None else base.for_rows(held_rows, f"{context.tokenized} (held-out rows)")
        extra = {} if base is None else {"base": train_base}
        eval_ds = (self.dataset(held_rows, False, **({} if base is None else {"base": held_base}))
                   if len(held_rows) else None)
        run = run_trainer(preset, settings, out=context.out,
                          recipe=run_recipe(preset, settings, context.fold, context.tokenized), build=self.build,
                          train_dataset=self.dataset(train_rows, settings.swap_augment, **extra), eval_dataset=eval_ds,
                          collator=self.collator, soft_labels=soft, resume=context.resume, restart=context.restart,
                          find_unused_parameters=self.find_unused_parameters)
        held_probs, others = None, {}
        if eval_ds is not None and run.main_process:
            held_probs = self.score_held(run, held_rows, held_base)
            for name, weights in (run.candidates or {}).items():  # the weights not saved, for the record
                if name != settings.weight_average:
                    load_weights(run.model, weights)
                    others[name] = self.score_held(run, held_rows, held_base, f"out-of-fold ({name} weights)")
            if others:
                load_weights(run.model, run.candidates[settings.weight_average])
        metrics = {**run.metrics, "soft_labels": soft, **({} if base is None else {"residual_on": str(base.root)})}
        if eval_ds is None:
            metrics.pop("best_step", None)

        def save(folder: Path) -> None:
            run.model.save_pretrained(folder)
            run.tokenizer.save_pretrained(folder)

        def cleanup() -> None:
            if settings.keep_checkpoints:  # marked: a later --overwrite run starts afresh instead of resuming them
                (context.out / "checkpoints" / FINISHED).write_text(json.dumps({"published": True}) + "\n")
            else:
                shutil.rmtree(context.out / "checkpoints", ignore_errors=True)

        return Fitted(save, held_probs, metrics, run.log, run.main_process, cleanup, others)

    def score_held(self, run, held_rows: pd.DataFrame, held_base, desc: str = "out-of-fold") -> np.ndarray:
        """The held-out rows' probabilities under the run's model as it stands. Not trainer.predict: with
        length-grouped sampling it returns rows shuffled; batched as the infer stage batches (a device's
        default budget), LoRA folded in while scoring."""
        with lora_merged(run.model):
            logits = self.score(run.model, held_rows, run.tokenizer.pad_token_id, device=run.device, desc=desc,
                                max_tokens=default_max_tokens(run.device))
        return softmax(logits if held_base is None else logits + held_base)

    def base_margins(self, settings: TrainSettings, context: FitContext) -> BaseMargins | None:
        """The residual base's log-probabilities (``settings.residual_on``), checked to come from
        models trained on this cache's fold assignment — so every training row's base margin was
        made by a base model that did not see that row's fold."""
        if not settings.residual_on:
            return None
        if not self.supports_residual:
            raise PresetError(f"--residual-on: the {self.name!r} member type cannot train on a base member's logits; "
                              f"use the pairwise member type (--member pairwise)")
        base = BaseMargins.load(settings.residual_on)
        here = check_cache(context.tokenized, "train").get("folds")
        if base.folds_fingerprint != here:
            raise PresetError(f"--residual-on {settings.residual_on}: the base was trained on another fold assignment "
                              f"than {context.tokenized} (fold fingerprints {str(base.folds_fingerprint)[:12]} vs "
                              f"{str(here)[:12]}): its held-out predictions would leak; tokenize both with the same "
                              f"--train, --folds and --seed")
        return base

    def load(self, model_dir: Path, preset: Preset, devices: Sequence[str] = ("cpu",)) -> Predictor:
        predictor = backbone_predictor(Path(model_dir), preset, devices, self.load_model, self.score, self.work_columns)
        residual_on = read_model_config(model_dir).get("train", {}).get("residual_on")
        return ResidualPredictor(predictor, BaseMargins.load(residual_on), str(model_dir)) if residual_on else predictor


class ResidualPredictor(Predictor):
    """A residual member's predictor: its own logits plus the base member's log-probabilities for
    the same rows (held-out rows: the base's out-of-fold ones; test rows: the base's test mean)."""

    def __init__(self, inner: Predictor, base: BaseMargins, where: str):
        self.inner, self.base, self.where = inner, base, where

    def predict(self, frame: pd.DataFrame, swap: bool = False, **options) -> np.ndarray:
        base = self.base.for_rows(frame.reset_index(drop=True), self.where)
        return self.inner.predict(frame, swap, **options) + (base[:, SWAP_INDEX] if swap else base)

    def work(self, frame: pd.DataFrame) -> int:
        return self.inner.work(frame)
