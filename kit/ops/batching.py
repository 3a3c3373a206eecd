"""Batched forward passes: one loop for every member type that runs a backbone.

Guarantees of :func:`batched_forward`: rows are sorted by length (longest first, so a batch
too large for the device fails at once, not after hours) and padded per batch; a batch never
holds more than ``max_tokens`` padded tokens (a single longer row goes alone); one output row
per input, in the input order; results do not depend on the batching (up to float round-off).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm  # text lines: they stay readable in executed notebooks (a widget saves as "0%")

from .devices import gpu_dtype


def length_sorted_batches(lengths: Sequence[int], max_tokens: int, max_batch: int = 256) -> list[np.ndarray]:
    """Index batches, longest rows first, each with ``len(batch) * longest <= max_tokens`` (or a
    single row)."""
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
def batched_forward(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sequences: Sequence[np.ndarray],
                    pad_id: int, *, device, width: int, max_tokens: int = 8192, max_batch: int = 256,
                    progress: bool = True, desc: str = "predict", unit: str = "row", projection=None,
                    dtype=np.float64) -> np.ndarray:
    """``forward(input_ids, attention_mask)`` -> (batch, width) over every sequence, batched as the
    module docstring says; returns (n, width) in input order (autocast on CUDA)."""
    device = torch.device(device)
    out = np.zeros((len(sequences), width), dtype=dtype)
    autocast = device.type == "cuda"
    with tqdm(total=len(sequences), desc=desc, unit=unit, disable=not progress) as bar:
        for idx in length_sorted_batches([len(s) for s in sequences], max_tokens, max_batch):
            ids, mask = pad_batch([sequences[i] for i in idx], pad_id)
            with torch.autocast(device.type, dtype=gpu_dtype(), enabled=autocast):
                values = forward(ids.to(device), mask.to(device))
            out[idx] = values.float().cpu().numpy()
            bar.update(len(idx))
            if projection is not None:
                projection.update(int(mask.sum()))
    return out
