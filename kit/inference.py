"""Batched prediction: length-sorted rows, dynamic padding under a tokens-per-batch budget.

Guarantees of :func:`predict_logits`: one row of logits per input, in the input order;
a batch never holds more than ``max_tokens`` padded tokens (a single longer row goes
alone); the result does not depend on the batching (up to float round-off).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


def length_sorted_batches(lengths: Sequence[int], max_tokens: int, max_batch: int = 256) -> list[np.ndarray]:
    """Index batches, longest rows first (a too-large batch fails at once, not after hours),
    each with ``len(batch) * longest <= max_tokens`` (or a single row)."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = lengths[order[start]]
        size = max(1, min(max_batch, max_tokens // max(1, longest)))
        batches.append(order[start:start + size])
        start += size
    return batches


def pad_batch(rows: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding to the batch's longest row: (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(np.asarray(r, dtype=np.int64))
        mask[i, :len(r)] = 1
    return ids, mask


@torch.inference_mode()
def predict_logits(model, input_ids: Sequence[np.ndarray], pad_id: int, *, device=None,
                   max_tokens: int = 8192, max_batch: int = 256, progress: bool = True,
                   desc: str = "predict") -> np.ndarray:
    """Logits (n, num_labels) as float64, in the order of ``input_ids``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = length_sorted_batches([len(r) for r in input_ids], max_tokens, max_batch)
    out = np.zeros((len(input_ids), model.config.num_labels), dtype=np.float64)
    autocast = device.type == "cuda"
    dtype = torch.bfloat16 if autocast and torch.cuda.is_bf16_supported() else torch.float16
    with tqdm(total=len(input_ids), desc=desc, unit="row", disable=not progress) as bar:
        for idx in batches:
            ids, mask = pad_batch([input_ids[i] for i in idx], pad_id)
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out[idx] = logits.float().cpu().numpy()
            bar.update(len(idx))
    return out
