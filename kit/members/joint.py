"""The ``joint`` member type: the whole conversation (prompt, A, B) packed into one sequence and
read by a 3-way sequence-classification head — the recipe of the GPU medal solutions.

* Any local Hugging Face folder or preset loads as ``AutoModelForSequenceClassification``
  with ``num_labels=3`` (0 = A, 1 = B, 2 = tie); decoders get a pad token (their EOS when they
  have none) and right padding: the classifier reads the last non-pad token.
* ``load_in_4bit`` gives nf4 weights (:func:`kit.ops.backbones.loading_kwargs`); the new head is
  kept out of quantisation and trained in fp32 — the QLoRA path, on CUDA or on the CPU.
* The head is trained and saved with the adapter (peft ``modules_to_save``).
* Position-dependent: every row is cached in both orders (``input_ids``, ``input_ids_swap``) for
  swap augmentation in training and swap TTA at inference.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.presets import Preset
from ..core.schema import LABELS, SWAP_INDEX, swap_labels
from ..ops.backbones import check_preset_runtime, load_tokenizer, loading_kwargs, model_path
from ..ops.batching import batched_forward
from ..ops.losses import soft_targets
from ..ops.lora import attach_trained_adapter, lora_config, lora_targets, prepare_4bit, with_lora
from ..ops.packing import Packer, encoded_rows
from .backbone import BackboneMember
from .base import register

HEAD_MODULES = ["classifier", "score"]  # BERT-style and decoder-style classification heads


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


def pack_frame(packer: Packer, frame: pd.DataFrame, desc: str = "pack", chunk: int = 256) -> pd.DataFrame:
    """Pack every row in both orders (A,B) and (B,A): ``len(input_ids) <= max_length`` — always."""
    records = []
    for rid, p, a, b in encoded_rows(packer, frame, desc, chunk):
        packed = packer.pack_ids(p, a, b)
        swapped = packer.pack_ids(p, b, a)
        records.append({"id": rid, "input_ids": np.asarray(packed.input_ids, dtype=np.int32),
                        "input_ids_swap": np.asarray(swapped.input_ids, dtype=np.int32), **packed.retention})
    return pd.DataFrame(records)


def load_base_classifier(preset: Preset, device_map=None):
    """(model, tokenizer) for the preset's backbone with a fresh 3-way head."""
    from transformers import AutoModelForSequenceClassification

    check_preset_runtime(preset)
    tokenizer = load_tokenizer(preset)
    kwargs = {"num_labels": 3, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()},
              **loading_kwargs(preset, device_map, skip_modules=HEAD_MODULES)}
    model = AutoModelForSequenceClassification.from_pretrained(model_path(preset), **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def head_module_names(model) -> list[str]:
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    return [h for h in HEAD_MODULES if h in names]


def build_lora_model(preset: Preset, device_map=None):
    """(peft model, tokenizer): backbone frozen, LoRA on `target_modules`, head trainable."""
    from peft import TaskType

    model, tokenizer = load_base_classifier(preset, device_map)
    model = prepare_4bit(model, preset)
    config = lora_config(preset, lora_targets(preset, model), head_module_names(model), TaskType.SEQ_CLS)
    return with_lora(model, config), tokenizer


def load_trained(model_dir: str | Path, preset: Preset, device_map=None):
    """(model, tokenizer) from a train-stage output: base backbone + saved adapter and head."""
    model, tokenizer = load_base_classifier(preset, device_map)
    return attach_trained_adapter(model, model_dir), tokenizer


def predict_logits(model, input_ids, pad_id: int, *, device=None, max_tokens: int = 8192, max_batch: int = 256,
                   progress: bool = True, desc: str = "predict", projection=None) -> np.ndarray:
    """Logits (n, num_labels) as float64, in the order of ``input_ids``."""
    device = device if device is not None else next(model.parameters()).device
    return batched_forward(lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits, input_ids, pad_id,
                           device=device, width=model.config.num_labels, max_tokens=max_tokens, max_batch=max_batch,
                           progress=progress, desc=desc, projection=projection)


@register
class JointMember(BackboneMember):
    name = "joint"
    uses_tta = True  # position-dependent: a swapped pass adds information
    cache_columns = ("input_ids", "input_ids_swap")
    work_columns = ("input_ids",)  # one pass reads one sequence per row

    def pack(self, packer, frame, desc):
        return pack_frame(packer, frame, desc=desc)

    def dataset(self, frame: pd.DataFrame, swap_augment: bool):
        ids, labels, targets = list(frame["input_ids"]), frame["label"].to_numpy(), soft_targets(frame)
        if swap_augment:  # the (B, A) row: A's and B's probabilities exchanged, the tie's kept
            ids += list(frame["input_ids_swap"])
            labels = np.concatenate([labels, swap_labels(labels)])
            targets = None if targets is None else np.concatenate([targets, targets[:, SWAP_INDEX]])
        return PackedDataset(ids, labels, targets)

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding
        return DataCollatorWithPadding(tokenizer)

    def build(self, preset):
        return build_lora_model(preset)

    def load_model(self, model_dir, preset, device_map=None):
        return load_trained(model_dir, preset, device_map)

    def score(self, model, frame, pad_id, swap=False, **options):
        return predict_logits(model, list(frame["input_ids_swap" if swap else "input_ids"]), pad_id, **options)
