"""The pairwise head: one shared reward model scores each side; a symmetric head scores ties.

Each side — the prompt turns plus *one* response's turns — is packed on its own
(:class:`kit.ops.packing.Packer` with ``side=True``) and encoded by the same LoRA backbone,
pooled into a vector ``h`` (mean of the non-pad tokens for encoders, the last non-pad
token for decoders). Then::

    logits = [ r(h_A),  r(h_B),  (r(h_A) + r(h_B)) / 2 + t(h_A + h_B, |h_A - h_B|) ]

with ``r`` one linear reward head shared by both sides and ``t`` a linear tie head on
features that do not change when A and B are exchanged. The ``(r_A + r_B) / 2`` term is
Davidson's (1970) tie model for paired comparisons — P(tie) ∝ ν·sqrt(π_A·π_B), with ``t`` the
row's log ν — so a tie gets likelier as the two rewards get closer, which a free tie logit
must learn from scratch (``tie_model="free"`` drops the term; measured in results/sweep).
Guarantees:

* **Swap equivariance, exactly:** scoring (B, A) gives the logits of (A, B) with the first
  two exchanged — no swap augmentation or swap TTA is needed, and the flip rate is 0.
* Both heads start at zero: the first prediction is uniform (log loss ln 3), so short
  runs start from a sane point instead of a random head's confident guesses.
* The model is a plain ``torch.nn.Module`` wrapped by peft (LoRA on the backbone, the two
  heads in ``modules_to_save``): the Hugging Face Trainer saves, resumes and reloads it
  as the adapter it is — the backbone weights are never copied into checkpoints.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.presets import Preset
from ..ops.backbones import check_preset_runtime, load_tokenizer, loading_kwargs, model_path
from ..ops.batching import batched_forward, pad_batch
from ..ops.losses import soft_targets
from ..ops.lora import attach_trained_adapter, lora_config, lora_targets, prepare_4bit, with_lora
from ..ops.packing import encoded_rows
from .backbone import BackboneMember
from .base import register

PAIR_HEADS = ["reward_head", "tie_head"]
SIDE_COLUMNS = ("side_a_ids", "side_b_ids")
TIE_MODELS = ("davidson", "free")


class PairwiseRewardModel(nn.Module):
    """Backbone (a Hugging Face base model, no head) + shared reward head + symmetric tie head."""

    def __init__(self, backbone, pooling: str, tie_model: str = "davidson"):
        super().__init__()
        if pooling not in ("mean", "last", "first"):
            raise ValueError(f"pooling must be 'mean', 'last' or 'first', got {pooling!r}")
        if tie_model not in TIE_MODELS:
            raise ValueError(f"tie_model must be one of {TIE_MODELS}, got {tie_model!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.tie_model = tie_model
        hidden = backbone.config.hidden_size
        self.reward_head = nn.Linear(hidden, 1)
        self.tie_head = nn.Linear(2 * hidden, 1)
        for head in (self.reward_head, self.tie_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        device = next(backbone.parameters()).device
        self.reward_head.to(device)
        self.tie_head.to(device)

    # what the Trainer and peft ask of a model, answered by the backbone
    @property
    def config(self):
        return self.backbone.config

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs,
                                                      **kwargs)

    def enable_input_require_grads(self):
        self.backbone.enable_input_require_grads()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled side vectors (n, hidden) in fp32; right padding assumed."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.pooling == "first":
            return hidden[:, 0]
        last = attention_mask.sum(1).long() - 1  # right padding: the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def pair_logits(self, h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
        r_a, r_b = self.reward_head(h_a), self.reward_head(h_b)
        tie = self.tie_head(torch.cat([h_a + h_b, (h_a - h_b).abs()], dim=-1))
        if self.tie_model == "davidson":
            tie = tie + (r_a + r_b) / 2
        return torch.cat([r_a, r_b, tie], dim=-1)

    def forward(self, input_ids, attention_mask, input_ids_b, attention_mask_b, labels=None, base_logits=None):
        """Both sides in one backbone call (padded to the wider side); logits (n, 3). ``base_logits``
        (a residual member's base log-probabilities) are added before the loss: the heads learn the
        correction."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        n, width = input_ids.shape[0], max(input_ids.shape[1], input_ids_b.shape[1])
        pad = self.config.pad_token_id or 0

        def widen(x, value):
            return nn.functional.pad(x, (0, width - x.shape[1]), value=value)

        ids = torch.cat([widen(input_ids, pad), widen(input_ids_b, pad)])
        mask = torch.cat([widen(attention_mask, 0), widen(attention_mask_b, 0)])
        h = self.embed(ids, mask)
        logits = self.pair_logits(h[:n], h[n:])
        if base_logits is not None:
            logits = logits + base_logits.to(logits.dtype)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def default_pooling(kind: str) -> str:
    return "mean" if kind == "encoder" else "last"


# -- data ------------------------------------------------------------------------------------
class PairDataset(torch.utils.data.Dataset):
    """Side A ids under ``input_ids`` (what the Trainer's length grouping reads), side B under
    ``input_ids_b``, and the label."""

    def __init__(self, side_a, side_b, labels, targets=None, base=None):
        self.side_a = [np.asarray(x, dtype=np.int64) for x in side_a]
        self.side_b = [np.asarray(x, dtype=np.int64) for x in side_b]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)  # soft labels
        self.base = None if base is None else np.asarray(base, dtype=np.float32)  # residual: base log-probs

    def __len__(self):
        return len(self.side_a)

    def __getitem__(self, i):
        label = self.targets[i] if self.targets is not None else int(self.labels[i])
        row = {"input_ids": self.side_a[i], "input_ids_b": self.side_b[i], "labels": label}
        if self.base is not None:
            row["base_logits"] = self.base[i]
        return row


class PairCollator:
    """Right-pads each side to its own longest row in the batch."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows):
        ids_a, mask_a = pad_batch([r["input_ids"] for r in rows], self.pad_id)
        ids_b, mask_b = pad_batch([r["input_ids_b"] for r in rows], self.pad_id)
        batch = {"input_ids": ids_a, "attention_mask": mask_a, "input_ids_b": ids_b, "attention_mask_b": mask_b,
                 "labels": (torch.tensor(np.stack([r["labels"] for r in rows]), dtype=torch.float32)
                            if isinstance(rows[0]["labels"], np.ndarray)  # soft labels: target distributions
                            else torch.tensor([r["labels"] for r in rows], dtype=torch.long))}
        if "base_logits" in rows[0]:
            batch["base_logits"] = torch.tensor(np.stack([r["base_logits"] for r in rows]))
        return batch


def pack_sides(packer, frame: pd.DataFrame, desc: str = "pack", chunk: int = 256) -> pd.DataFrame:
    """Pack each row's two sides (prompt + response A, prompt + response B), each under the
    budget: ``len(side_a_ids) <= max_length`` and ``len(side_b_ids) <= max_length`` — always.
    Retention columns follow the joint layout: the prompt's kept tokens are the fewer of the
    two sides', ``n_tokens`` the longer side's."""
    if not packer.side:
        raise ValueError("pack_sides needs a Packer(side=True)")
    records = []
    for rid, p, a, b in encoded_rows(packer, frame, desc, chunk):
        side_a, side_b = packer.pack_ids(p, a), packer.pack_ids(p, b)
        ra, rb = side_a.retention, side_b.retention
        records.append({
            "id": rid, "side_a_ids": np.asarray(side_a.input_ids, dtype=np.int32),
            "side_b_ids": np.asarray(side_b.input_ids, dtype=np.int32),
            "n_tokens": max(ra["n_tokens"], rb["n_tokens"]),
            "turns_kept": min(ra["turns_kept"], rb["turns_kept"]), "turns_total": ra["turns_total"],
            "prompt_kept": min(ra["prompt_kept"], rb["prompt_kept"]), "prompt_total": ra["prompt_total"],
            "response_a_kept": ra["response_kept"], "response_a_total": ra["response_total"],
            "response_b_kept": rb["response_kept"], "response_b_total": rb["response_total"]})
    return pd.DataFrame(records)


# -- models ----------------------------------------------------------------------------------
def load_base_pairwise(preset, device_map=None):
    """(PairwiseRewardModel with zero heads, tokenizer); 4-bit nf4 backbone where the preset says."""
    from transformers import AutoModel

    check_preset_runtime(preset)
    tokenizer = load_tokenizer(preset)
    backbone = AutoModel.from_pretrained(model_path(preset), **loading_kwargs(preset, device_map))
    backbone.config.pad_token_id = tokenizer.pad_token_id
    backbone = prepare_4bit(backbone, preset)
    return PairwiseRewardModel(backbone, preset.pooling or default_pooling(preset.kind), preset.tie_model), tokenizer


def build_pairwise(preset, device_map=None):
    """(peft model, tokenizer): backbone frozen with LoRA on its targets, both heads trainable."""
    model, tokenizer = load_base_pairwise(preset, device_map)
    targets = lora_targets(preset, model.backbone, expand_all_linear=True)
    return with_lora(model, lora_config(preset, targets, list(PAIR_HEADS))), tokenizer


def load_trained_pairwise(model_dir, preset, device_map=None):
    """(model, tokenizer) from a train-stage output: base backbone + saved adapter and heads."""
    model, tokenizer = load_base_pairwise(preset, device_map)
    return attach_trained_adapter(model, model_dir), tokenizer


def _inner(model) -> PairwiseRewardModel:
    """The PairwiseRewardModel inside a peft (and/or DDP) wrapper."""
    while not isinstance(model, PairwiseRewardModel):
        model = model.module if hasattr(model, "module") else model.base_model.model
    return model


def embed_sides(model, sides, pad_id: int, *, device=None, max_tokens: int = 8192, progress: bool = True,
                desc: str = "embed", projection=None) -> np.ndarray:
    """Pooled vectors (n, hidden) of token-id sides, length-sorted and batched under ``max_tokens``."""
    inner = _inner(model)
    device = device if device is not None else next(model.parameters()).device
    return batched_forward(inner.embed, sides, pad_id, device=device, width=inner.config.hidden_size,
                           max_tokens=max_tokens, progress=progress, desc=desc, unit="side", projection=projection,
                           dtype=np.float32)


@torch.inference_mode()
def predict_pair_logits(model, side_a, side_b, pad_id: int, *, device=None, max_tokens: int = 8192,
                        progress: bool = True, desc: str = "predict", projection=None) -> np.ndarray:
    """Logits (n, 3) in input order: both sides embedded in one length-sorted pass, then the heads."""
    inner = _inner(model)
    sides = list(side_a) + list(side_b)
    h = embed_sides(model, sides, pad_id, device=device, max_tokens=max_tokens, progress=progress, desc=desc,
                    projection=projection)
    head_device = inner.reward_head.weight.device if hasattr(inner.reward_head, "weight") \
        else next(inner.reward_head.parameters()).device
    h = torch.as_tensor(h, device=head_device)
    n = len(side_a)
    return inner.pair_logits(h[:n], h[n:]).double().cpu().numpy()


@register
class PairwiseMember(BackboneMember):
    name = "pairwise"
    uses_tta = False  # swap-equivariant by construction: a swapped pass gives the same probabilities
    side_packing = True
    find_unused_parameters = True  # the pooler an encoder brings (and its LoRA) is unused by mean pooling
    cache_columns = SIDE_COLUMNS
    work_columns = SIDE_COLUMNS  # one pass reads both sides

    def pack(self, packer, frame, desc):
        return pack_sides(packer, frame, desc=desc)

    supports_residual = True

    def dataset(self, frame: pd.DataFrame, swap_augment: bool, base=None):
        # swap_augment is moot: a swapped row's loss equals the row's own (exact equivariance)
        return PairDataset(frame["side_a_ids"], frame["side_b_ids"], frame["label"], soft_targets(frame), base)

    def collator(self, tokenizer):
        return PairCollator(tokenizer.pad_token_id)

    def build(self, preset: Preset):
        return build_pairwise(preset)

    def load_model(self, model_dir: Path, preset: Preset, device_map=None):
        return load_trained_pairwise(model_dir, preset, device_map)

    def score(self, model, frame, pad_id, swap=False, **options):
        a, b = list(frame["side_a_ids"]), list(frame["side_b_ids"])
        return predict_pair_logits(model, *((b, a) if swap else (a, b)), pad_id, **options)
