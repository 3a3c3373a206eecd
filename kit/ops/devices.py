"""Devices: where a member's forward passes run, and how long the whole run will take.

* :func:`visible_devices` — every visible GPU (cuda:0 and cuda:1 on Kaggle's two T4s), else
  the CPU; :func:`check_devices` names a device that is not there.
* :func:`predict_sharded` — rows dealt across devices, one model replica per device, each in
  its own thread (with no GPU, N CPU workers share one replica): :func:`shard_rows` gives each
  shard long and short rows alike.
* :class:`RuntimeProjection` — the whole run's wall time projected from the padded tokens done
  so far, against a budget (Kaggle: 9 hours).
* :func:`swap_average` — swap TTA: the (A, B) and (B, A) passes averaged.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..core.errors import DeadlineReached, PresetError
from ..core.log import get_logger
from ..core.schema import swap_probs

log = get_logger(__name__)
GPU_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def gpu_dtype() -> torch.dtype:
    """The GPU's mixed-precision dtype: bf16 where supported, else fp16 (the T4). ``KIT_GPU_DTYPE=float16``
    forces fp16 on any GPU, to rehearse a T4 run on a newer card (``scripts/gpu_check.sh`` does)."""
    forced = os.environ.get("KIT_GPU_DTYPE")
    if forced:
        if forced not in GPU_DTYPES:
            raise PresetError(f"KIT_GPU_DTYPE={forced!r}: use one of {sorted(GPU_DTYPES)}")
        return GPU_DTYPES[forced]
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


# padded tokens per batch: GPUs want big batches; on CPU small ones run faster (SmolLM2, 2 cores:
# 2.56 pairs/s at 2048 tokens, 2.42 at 4096, 1.88 at 8192; a trained SmolLM2 on 100 held-out rows,
# LoRA folded in: 32 s at 8192, 29 at 2048, 29 at 1024 — results/scoring_cpu.md)
DEFAULT_MAX_TOKENS = {"cuda": 16384, "cpu": 2048}


def default_max_tokens(device) -> int:
    """The padded-token budget per batch for ``device`` (a name or torch.device): CUDA's or the CPU's."""
    return DEFAULT_MAX_TOKENS["cuda" if str(device).startswith("cuda") else "cpu"]


class RuntimeProjection:
    """Projects a whole run's wall time from the padded tokens done so far.

    Rows go longest first, so the first batches are the slowest per row: projecting by
    tokens (not rows) keeps the estimate honest, and it errs on the long side (attention
    costs more per token in long rows).
    Thread-safe: every device's worker reports into the same projection.
    """

    def __init__(self, total_tokens: int, budget_hours: float | None, warmup_share: float = 0.02,
                 label: str = "", deadline: float | None = None):
        self.total, self.budget, self.warmup, self.label = total_tokens, budget_hours, warmup_share, label
        self.deadline = deadline  # a time.time() by which the run must end: past it, or projected past it, it stops
        self.stopped: DeadlineReached | None = None
        self.done, self.start, self.projected_s = 0, time.time(), None
        self.warm_at, self.warm_done = None, 0  # when the first WARM_UP_SHARE of the tokens were done
        self._lock = threading.Lock()

    # the first batches of a run pay one-off costs (kernels set up for each new shape): the record of a run
    # says how long its first fifth took, so a projection to more rows counts them once (timing_parts)
    WARM_UP_SHARE = 0.2

    def warm_up(self) -> dict | None:
        """{"seconds", "share"}: the time from the start to the first :data:`WARM_UP_SHARE` of the tokens and
        the share of tokens done then; None before that point."""
        if self.warm_at is None or not self.total:
            return None
        return {"seconds": round(self.warm_at - self.start, 3), "share": round(self.warm_done / self.total, 4)}

    def update(self, tokens: int) -> None:
        """Count ``tokens`` done; a DeadlineReached once the deadline has passed, or once (past the warm-up) the
        pace so far would end the run after it."""
        with self._lock:
            self.done += tokens
            if self.warm_at is None and self.done >= self.WARM_UP_SHARE * self.total:
                self.warm_at, self.warm_done = time.time(), self.done
            self._check_deadline()
            if self.projected_s is None and self.done >= max(1, self.warmup * self.total):
                elapsed = time.time() - self.start
                self.projected_s = elapsed * self.total / self.done
                log.info(f"[kit infer] {self.label}projected run time {self.projected_s / 3600:.2f} h "
                       f"({self.done}/{self.total} tokens in {elapsed:.1f} s)")
                if self.budget is not None and self.projected_s > self.budget * 3600:
                    warnings.warn(f"{self.label}projected run time {self.projected_s / 3600:.2f} h exceeds "
                                  f"the budget of {self.budget} h: lower max_length or max_tokens, "
                                  f"drop swap TTA, or add devices", RuntimeWarning, stacklevel=2)


    def _check_deadline(self) -> None:
        if self.deadline is None:
            return
        if self.stopped is not None:  # every device's worker stops at its next batch
            raise self.stopped
        now = time.time()
        if now > self.deadline:
            self.stopped = DeadlineReached(f"{self.label}stopped at the deadline, {self.done}/{self.total} tokens done")
        elif self.warm_at is not None and self.done < self.total:
            end = now + (self.total - self.done) * (now - self.start) / self.done
            if end > self.deadline:
                self.stopped = DeadlineReached(f"{self.label}stopped: at its pace so far ({self.done}/{self.total} "
                                               f"tokens in {now - self.start:.0f} s) it would end "
                                               f"{end - self.deadline:.0f} s after the deadline")
        if self.stopped is not None:
            raise self.stopped


def visible_devices() -> list[str]:
    """Every visible GPU (cuda:0, cuda:1 on Kaggle's two T4s), else ['cpu']."""
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def device_names(devices: Sequence[str]) -> list[str]:
    """What each device is ("Tesla T4", "cpu"): recorded beside timings, which only transfer between
    like devices."""
    return [torch.cuda.get_device_name(torch.device(d)) if d.startswith("cuda") else "cpu" for d in devices]


def shard_rows(lengths: Sequence[int], n_shards: int) -> list[np.ndarray]:
    """Split row indices into n shards of near-equal work: rows sorted by length and dealt
    round-robin, so every shard gets long and short rows alike."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [np.sort(order[k::n_shards]) for k in range(n_shards)]


def check_devices(devices: Sequence[str]) -> None:
    """A ValueError naming the device when one is not there (CUDA absent, index too high)."""
    for dev in devices:
        if dev == "cpu":
            continue
        if not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise PresetError(f"device {dev!r}: use cpu or cuda[:N] (--devices, notebook DEVICES)")
        count = torch.cuda.device_count()
        index = int(dev.split(":")[1]) if ":" in dev else 0
        if index >= count:
            raise PresetError(f"device {dev!r} is not available ({count} CUDA device(s) visible): pass "
                             f"--devices cpu (notebook DEVICES = ['cpu']) or leave it unset for every visible "
                             f"device")


def predict_sharded(replicas: Sequence, devices: Sequence[str], frame: pd.DataFrame, score, pad_id: int,
                    *, lengths: Sequence[int], max_tokens: int, projection: RuntimeProjection | None = None,
                    desc: str = "predict", swap: bool = False) -> np.ndarray:
    """Logits for all rows of `frame`: shard k is scored by ``score(replicas[k], rows, pad_id, ...)``
    (a member type's ``score``) on devices[k], in its own thread. A replica shared by several shards
    (CPU workers) first runs one row alone: some layers change themselves on their first forward pass
    (bitsandbytes repacks 4-bit weights on the CPU), which two threads must not do at once."""
    shards = shard_rows(lengths, len(replicas))
    warmed = set()
    for k, replica in enumerate(replicas):
        if id(replica) not in warmed and sum(r is replica for r in replicas) > 1 and len(shards[k]):
            score(replica, frame.iloc[shards[k][:1]], pad_id, swap=swap, device=devices[k], max_tokens=max_tokens,
                  progress=False, projection=None, desc="warm-up")
            warmed.add(id(replica))
    out = np.zeros((len(frame), 3), dtype=np.float64)
    errors = []

    def work(k):
        try:
            idx = shards[k]
            out[idx] = score(replicas[k], frame.iloc[idx], pad_id, swap=swap, device=devices[k],
                             max_tokens=max_tokens, progress=k == 0, projection=projection,
                             desc=f"{desc} [{devices[k]}]")
        except BaseException as err:  # surfaced in the caller's thread
            errors.append(err)

    if len(replicas) == 1:
        work(0)
    else:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(replicas))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return out


def swap_average(p_direct: np.ndarray, p_swapped: np.ndarray) -> tuple[np.ndarray, float]:
    """Swap TTA: the (B, A) pass's A/B columns exchanged, averaged with the (A, B) pass.
    Also returns the flip rate: share of rows whose most likely class differs between passes."""
    back = swap_probs(p_swapped)
    flip = float((p_direct.argmax(1) != back.argmax(1)).mean()) if len(p_direct) else 0.0
    return (p_direct + back) / 2, flip


def load_replicas(model_dir: Path, preset, devices: Sequence[str], load):
    replicas, tokenizer = [], None
    cpu_model = None
    for dev in devices:
        if dev == "cpu":  # CPU workers share one replica (read-only forward passes)
            if cpu_model is None:
                cpu_model, tokenizer = load(model_dir, preset)
            replicas.append(cpu_model)
        else:
            model, tokenizer = load(model_dir, preset, device_map={"": dev})
            if not (preset.load_in_4bit or preset.load_in_8bit):  # a quantised model is placed where it loads
                model.to(dev)
            replicas.append(model)
    return replicas, tokenizer


