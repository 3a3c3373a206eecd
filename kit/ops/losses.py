"""Losses and training targets shared by the member types.

A training row's target is a class index (a hard label) or a distribution over the three
classes (a soft label: a teacher's probabilities). :func:`soft_cross_entropy` takes either;
on one-hot targets both give the same loss.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..core.schema import TARGET_COLUMNS, is_soft


def soft_targets(frame: pd.DataFrame) -> np.ndarray | None:
    """The rows' training targets (n, 3) when any of them is a soft label; None when every row
    is hard (then the class index is the target, as it always was)."""
    if not all(c in frame.columns for c in TARGET_COLUMNS):
        return None
    targets = frame[list(TARGET_COLUMNS)].to_numpy(dtype=np.float32)
    return targets if any(is_soft(t.tolist()) for t in targets) else None


def soft_cross_entropy(outputs, labels, num_items_in_batch=None):
    """The Trainer's loss (``compute_loss_func``): cross-entropy of the logits against class
    indices or, for soft labels, against probability targets — one ``cross_entropy`` call
    either way (torch takes float targets as distributions), the batch mean."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    if labels.dtype.is_floating_point:
        labels = labels.to(logits.dtype)
    return torch.nn.functional.cross_entropy(logits, labels)
