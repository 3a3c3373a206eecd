"""Metrics of three-way probabilities (pure numpy): softmax, the competition's log loss,
accuracy, macro-F1 and per-class recall."""
from __future__ import annotations

import numpy as np

from .schema import CLASS_NAMES

EPS = 1e-15


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, k) logits as float64 (shifted by the row maximum: no overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (probabilities renormalised, clipped at 1e-15:
    the competition's metric)."""
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    p = np.clip(probs[np.arange(len(labels)), np.asarray(labels)], EPS, 1.0)
    return float(-np.log(p).mean())


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """The mean of F1 = 2·TP / (2·TP + FP + FN) over the classes that occur among the labels or the
    predictions (scikit-learn's ``f1_score(average="macro")``): a class absent from both does not
    count."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    scores = []
    for k in np.union1d(labels, predicted):
        tp = np.sum((predicted == k) & (labels == k))
        wrong = np.sum((predicted == k) != (labels == k))  # FP + FN
        scores.append(2 * tp / (2 * tp + wrong))
    return float(np.mean(scores)) if scores else float("nan")


def metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """log loss, accuracy, macro-F1 and per-class recall."""
    labels = np.asarray(labels)
    pred = np.asarray(probs).argmax(axis=1)
    out = {"log_loss": log_loss(labels, probs), "accuracy": float((pred == labels).mean()),
           "macro_f1": macro_f1(labels, pred)}
    for k, name in enumerate(CLASS_NAMES):
        mask = labels == k
        out[f"recall_{name}"] = float((pred[mask] == k).mean()) if mask.any() else float("nan")
    return out


