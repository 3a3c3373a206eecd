"""Time projected by arithmetic, before any model loads: parameters x tokens x passes against a device's peak.

A transformer's forward pass costs about ``2 N`` floating-point operations per token for its ``N``
non-embedding parameters (an embedding is a look-up), plus its attention over the row's own tokens;
training costs about three forward passes (forward, and a backward of twice its cost), four with
activation checkpointing (the forward runs again). A device does its peak (:func:`peak_flops`) times
an efficiency factor: :data:`GPU_EFFICIENCY` from a published LMSYS scoring run, :data:`CPU_EFFICIENCY`
measured on this kit's CPU (``scripts/bench_compute.py`` -> ``results/compute_calibration.md``;
``scripts/gpu_check.sh`` measures the GPU's). The result is a projection, never a measurement: it says
what a run will cost within a small factor, for the devices present and for Kaggle's two T4s.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["CPU_EFFICIENCY", "GPU_EFFICIENCY", "KAGGLE_T4X2", "Work", "backbone_params", "cpu_peak_flops",
           "describe", "peak_flops", "project_seconds", "projection_line", "row_tokens"]

# dense fp16/bf16 tensor-core peaks (FLOP/s) of the cards Kaggle and Colab lend, by name; longest names first
GPU_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "V100": 125e12, "A10G": 70e12,
             "P100": 18.7e12, "T4": 65e12, "L4": 121e12}
# a 14B model scored about 1,170 tokens/s on 2x T4 in an LMSYS medal write-up: 2 x 14e9 x 1170 FLOP/s over
# 2 x 65e12 is 0.25 of peak; applied to training too until a GPU run measures it (scripts/gpu_check.sh)
GPU_EFFICIENCY = 0.25
# share of this CPU's fp32 peak the kit reached, per kind of work (scripts/bench_compute.py writes the
# measurement to results/compute_calibration.json; a test holds these to it)
CPU_EFFICIENCY = {"train": 0.2756, "score": 0.748}
KAGGLE_T4X2 = ("Tesla T4", "Tesla T4")
TRAIN_PASSES, CHECKPOINTED_PASSES = 3.0, 4.0  # forward + backward (2x forward); + the recomputed forward


def cpu_peak_flops(threads: int | None = None) -> float:
    """fp32 FLOP/s of ``threads`` cores (default: torch's threads): cores x clock x 32 FLOPs per cycle with AVX2
    and FMA (two 8-lane fused multiply-add units; AVX-512 is counted alike, since many cores run its 16 lanes as
    two halves), 16 without, the clock read from /proc/cpuinfo (its highest ``cpu MHz``)."""
    import torch

    threads = threads or torch.get_num_threads()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    mhz = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", info)]
    clock = max(mhz) * 1e6 if mhz else 2.0e9
    flags = set(re.findall(r"flags\s*:\s*(.*)", info)[0].split()) if "flags" in info else set()
    per_cycle = 32 if {"avx2", "fma"} <= flags else 16
    return threads * clock * per_cycle


def peak_flops(device_name: str) -> float | None:
    """A device's peak (FLOP/s): the CPU's fp32 (:func:`cpu_peak_flops`), a known GPU's fp16/bf16; None for
    a GPU the table does not know."""
    if device_name == "cpu":
        return cpu_peak_flops()
    for card, peak in GPU_PEAKS.items():
        if re.search(rf"\b{card}\b", device_name):
            return peak
    return None


def backbone_params(config_path: str | Path) -> dict:
    """{"params": non-embedding parameters, "layers", "attention_width"} of a Hugging Face backbone, from its
    ``config.json`` alone (no weights read): attention projections and the MLP per layer (gated for decoders,
    two matrices for BERT-style encoders)."""
    config = json.loads(Path(config_path).read_text())
    config = config.get("text_config", config)  # multimodal wrappers keep the language model's config inside
    d, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or d // heads
    kv = config.get("num_key_value_heads") or heads
    ffn = config.get("intermediate_size") or 4 * d
    attention = 2 * d * heads * head_dim + 2 * d * kv * head_dim
    gated = config.get("model_type", "") not in ("bert", "roberta", "xlm-roberta", "deberta-v2", "distilbert")
    mlp = (3 if gated else 2) * d * ffn
    return {"params": layers * (attention + mlp), "layers": layers, "attention_width": heads * head_dim}


def row_tokens(frame, columns: Sequence[str]) -> np.ndarray:
    """Tokens of each sequence one pass reads: every row's ``columns`` (a pairwise row: its two sides),
    flattened."""
    return np.concatenate([frame[c].map(len).to_numpy() for c in columns]) if len(frame) else np.zeros(0)


@dataclass
class Work:
    """What a run computes: floating-point operations, and the kind of work (``train`` or ``score``)."""

    flops: float
    kind: str

    @classmethod
    def passes(cls, shape: dict, lengths: np.ndarray, passes: float, kind: str) -> "Work":
        """``passes`` forward-pass equivalents over sequences of ``lengths`` tokens: ``2 N`` per token plus
        the attention over the sequence (``2 x layers x width x L`` per token, causal: half of ``4 x``)."""
        lengths = np.asarray(lengths, dtype=np.float64)
        per_pass = 2 * shape["params"] * lengths.sum() + 2 * shape["layers"] * shape["attention_width"] * (lengths ** 2).sum()
        return cls(float(per_pass * passes), kind)

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.kind if self.kind == other.kind else "train")


def project_seconds(work: Work, devices: Sequence[str]) -> float | None:
    """Seconds ``work`` takes spread over ``devices`` (names: "cpu", "Tesla T4", ...): FLOPs over the devices'
    summed peak times the efficiency factor; None when a device's peak is not known."""
    peaks = [peak_flops(d) for d in devices]
    if not peaks or any(p is None for p in peaks):
        return None
    efficiency = CPU_EFFICIENCY[work.kind] if devices[0] == "cpu" else GPU_EFFICIENCY
    if devices[0] == "cpu":
        peaks = peaks[:1]  # the CPU's threads are one device
    return work.flops / (sum(peaks) * efficiency)


def describe(devices: Sequence[str]) -> str:
    counts = {d: list(devices).count(d) for d in dict.fromkeys(devices)}
    return " + ".join(f"{n}x {d}" if n > 1 else d for d, n in counts.items())


def projection_line(what: str, works: Sequence[Work], devices: Sequence[str]) -> tuple[str, dict]:
    """("<what>: projected by arithmetic (F TFLOP) X h on <devices>, Y h on 2x Tesla T4", {device text: hours
    or None}) — ``works`` summed, for the devices present and for Kaggle's two T4s (a projection, not a
    measurement)."""
    hours = {}
    for where in (list(devices), list(KAGGLE_T4X2)):
        seconds = [project_seconds(w, where) for w in works]
        hours[describe(where)] = None if None in seconds else sum(seconds) / 3600
    text = ", ".join(f"{'?' if h is None else f'{h:.2f}'} h on {d}" for d, h in hours.items())
    flops = sum(w.flops for w in works)
    return f"{what}: projected by arithmetic ({flops / 1e12:.1f} TFLOP) {text}", hours
