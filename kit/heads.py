"""Classification heads: how a backbone turns a (prompt, A, B) row into three logits.

A head is one :class:`Head` record — how to pack rows, build and reload the model, feed
the Trainer and score rows — so the tokenize, train and infer stages never branch on a
head's name. Two ship:

* ``joint`` — the whole conversation (prompt, A, B) packed into one sequence and read by
  a 3-way sequence-classification head (:mod:`kit.modeling`); position-dependent, so it
  wants swap augmentation and swap TTA. The recipe of the GPU medal solutions.
* ``pairwise`` — each side packed and encoded separately, a shared reward head and a
  symmetric tie head (:mod:`kit.pairwise`); swap-equivariant by construction.

A new head is one module plus one entry in :data:`HEADS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

import torch

SWAP_LABEL = np.array([1, 0, 2])


def soft_targets(frame: pd.DataFrame) -> np.ndarray | None:
    """The rows' training targets (n, 3) when any of them is a soft label; None when every row
    is hard (then the class index is the target, as it always was)."""
    from .data import is_soft
    from .tokenization import TARGET_COLUMNS

    if not all(c in frame.columns for c in TARGET_COLUMNS):
        return None
    targets = frame[list(TARGET_COLUMNS)].to_numpy(dtype=np.float32)
    return targets if any(is_soft(t.tolist()) for t in targets) else None


def soft_cross_entropy(outputs, labels, num_items_in_batch=None):
    """The Trainer's loss (``compute_loss_func``) for runs with soft labels: cross-entropy against
    the target distribution, −Σ t·log softmax(z), the batch mean; for class-index labels (the
    held-out rows) the usual cross-entropy — the two agree on one-hot targets."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    if labels.dtype.is_floating_point:
        return -(labels.to(logits.dtype) * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
    return torch.nn.functional.cross_entropy(logits, labels)


class PackedDataset(torch.utils.data.Dataset):
    """Token-id rows (+ labels: class indices, or with ``targets`` the (n, 3) target
    distributions) for the Trainer; padding happens in the collator."""

    def __init__(self, input_ids, labels, targets=None):
        self.input_ids = [np.asarray(x, dtype=np.int64) for x in input_ids]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, i):
        label = self.targets[i] if self.targets is not None else int(self.labels[i])
        return {"input_ids": self.input_ids[i], "labels": label}


@dataclass(frozen=True)
class Head:
    name: str
    id_columns: tuple[str, ...]  # token-id columns of the tokenized cache
    side_packing: bool  # Packer(side=True): prompt + one response per sequence
    pack: Callable  # (packer, frame, desc) -> packed DataFrame (id, id_columns, retention)
    dataset: Callable  # (frame, swap_augment) -> torch Dataset for the Trainer
    collator: Callable  # (tokenizer) -> data collator
    build: Callable  # (preset) -> (trainable peft model, tokenizer)
    load: Callable  # (model_dir, preset, device_map) -> (eval model, tokenizer)
    score: Callable  # (model, frame rows, pad_id, swap, **kw) -> logits (n, 3) in row order
    uses_tta: bool  # whether a swapped (B, A) pass adds information


# -- joint ------------------------------------------------------------------------------------
def _joint_pack(packer, frame, desc):
    from .tokenization import pack_frame
    return pack_frame(packer, frame, desc=desc)


def _joint_dataset(frame: pd.DataFrame, swap_augment: bool):
    ids, labels, targets = list(frame["input_ids"]), frame["label"].to_numpy(), soft_targets(frame)
    if swap_augment:  # the (B, A) row: A's and B's probabilities exchanged, the tie's kept
        ids += list(frame["input_ids_swap"])
        labels = np.concatenate([labels, SWAP_LABEL[labels]])
        targets = None if targets is None else np.concatenate([targets, targets[:, SWAP_LABEL]])
    return PackedDataset(ids, labels, targets)


def _joint_collator(tokenizer):
    from transformers import DataCollatorWithPadding
    return DataCollatorWithPadding(tokenizer)


def _joint_build(preset):
    from .modeling import build_lora_model
    return build_lora_model(preset)


def _joint_load(model_dir, preset, device_map=None):
    from .modeling import load_trained
    return load_trained(model_dir, preset, device_map)


def _joint_score(model, frame, pad_id, swap=False, **kw):
    from .inference import predict_logits
    return predict_logits(model, list(frame["input_ids_swap" if swap else "input_ids"]), pad_id, **kw)


# -- pairwise ---------------------------------------------------------------------------------
def _pair_pack(packer, frame, desc):
    from .pairwise import pack_sides
    return pack_sides(packer, frame, desc=desc)


def _pair_dataset(frame: pd.DataFrame, swap_augment: bool):
    # swap_augment is moot: a swapped row's loss equals the row's own (exact equivariance)
    from .pairwise import PairDataset
    return PairDataset(frame["side_a_ids"], frame["side_b_ids"], frame["label"], soft_targets(frame))


def _pair_collator(tokenizer):
    from .pairwise import PairCollator
    return PairCollator(tokenizer.pad_token_id)


def _pair_build(preset):
    from .pairwise import build_pairwise
    return build_pairwise(preset)


def _pair_load(model_dir, preset, device_map=None):
    from .pairwise import load_trained_pairwise
    return load_trained_pairwise(model_dir, preset, device_map)


def _pair_score(model, frame, pad_id, swap=False, **kw):
    from .pairwise import predict_pair_logits
    a, b = list(frame["side_a_ids"]), list(frame["side_b_ids"])
    return predict_pair_logits(model, *((b, a) if swap else (a, b)), pad_id, **kw)


HEADS: dict[str, Head] = {
    "joint": Head("joint", ("input_ids", "input_ids_swap"), False, _joint_pack, _joint_dataset, _joint_collator,
                  _joint_build, _joint_load, _joint_score, uses_tta=True),
    "pairwise": Head("pairwise", ("side_a_ids", "side_b_ids"), True, _pair_pack, _pair_dataset, _pair_collator,
                     _pair_build, _pair_load, _pair_score, uses_tta=False),
}


def get_head(name: str) -> Head:
    from .presets import PresetError

    if name not in HEADS:
        raise PresetError(f"unknown head {name!r}; choose one of {sorted(HEADS)} (CLI --head, notebook HEAD)")
    return HEADS[name]
