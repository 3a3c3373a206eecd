"""Evaluation of three-way probabilities: metrics, baselines, and the report's figures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .data import CLASS_NAMES

EPS = 1e-15


def softmax(logits: np.ndarray) -> np.ndarray:
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


def metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """log loss, accuracy and per-class recall."""
    labels = np.asarray(labels)
    pred = np.asarray(probs).argmax(axis=1)
    out = {"log_loss": log_loss(labels, probs), "accuracy": float((pred == labels).mean())}
    for k, name in enumerate(CLASS_NAMES):
        mask = labels == k
        out[f"recall_{name}"] = float((pred[mask] == k).mean()) if mask.any() else float("nan")
    return out


def uniform_probs(n: int) -> np.ndarray:
    return np.full((n, 3), 1 / 3)


def prior_probs(labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Class prior cross-fitted: each fold's rows get the label shares of the other folds."""
    out = np.zeros((len(labels), 3))
    for k in np.unique(folds):
        rest = labels[folds != k] if (folds != k).any() else labels
        out[folds == k] = np.bincount(rest, minlength=3) / len(rest)
    return out


def _text_features(frame: pd.DataFrame):
    def joined(col):
        return frame[col].map(lambda turns: "\n".join(turns))
    a, b, p = joined("response_a"), joined("response_b"), joined("prompt")
    la, lb = a.str.len().to_numpy(float), b.str.len().to_numpy(float)
    wa, wb = a.str.split().str.len().to_numpy(float), b.str.split().str.len().to_numpy(float)
    lengths = np.column_stack([np.log1p(la), np.log1p(lb), np.log1p(la) - np.log1p(lb),
                               np.log1p(wa) - np.log1p(wb), (a == b).to_numpy(float),
                               np.log1p(p.str.len().to_numpy(float)),
                               a.str.count("\n").to_numpy(float) - b.str.count("\n").to_numpy(float)])
    return a.tolist(), b.tolist(), lengths


def tfidf_probs(frame: pd.DataFrame, labels: np.ndarray, folds: np.ndarray, seed: int = 0,
                only_folds=None) -> np.ndarray:
    """The TF-IDF + length logistic-regression baseline, cross-fitted on the given folds:
    features TF-IDF(response_a) - TF-IDF(response_b) (word 1-2 grams) plus length features.
    ``only_folds``: predict just these folds (other rows stay 0)."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    a, b, lengths = _text_features(frame)
    out = np.zeros((len(frame), 3))
    for k in np.unique(folds):
        if only_folds is not None and k not in only_folds:
            continue
        tr, te = folds != k, folds == k
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if tr.sum() >= 200 else 1, max_features=50000,
                              sublinear_tf=True)
        vec.fit([t for t, keep in zip(a + b, np.concatenate([tr, tr])) if keep])
        diff = vec.transform(a) - vec.transform(b)
        scaler = StandardScaler().fit(lengths[tr])
        x = hstack([diff, csr_matrix(scaler.transform(lengths))]).tocsr()
        clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x[tr], labels[tr])
        proba = np.zeros((te.sum(), 3))
        proba[:, clf.classes_] = clf.predict_proba(x[te])
        out[te] = proba
    return out


def plot_reliability(labels: np.ndarray, probs: np.ndarray, path, title: str = "", overwrite: bool = False) -> Path:
    """Per-class reliability: mean predicted probability vs observed frequency, 10 bins."""
    from .plots import plt, save_figure

    fig, (ax, hx) = plt.subplots(1, 2, figsize=(10, 4))
    bins = np.linspace(0, 1, 11)
    for k, name in enumerate(CLASS_NAMES):
        p, y = probs[:, k], (labels == k).astype(float)
        which = np.clip(np.digitize(p, bins) - 1, 0, 9)
        xs = [p[which == i].mean() for i in range(10) if (which == i).any()]
        ys = [y[which == i].mean() for i in range(10) if (which == i).any()]
        ax.plot(xs, ys, "o-", label=name)
        hx.hist(p, bins=bins, histtype="step", lw=2, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="reliability", xlim=(0, 1), ylim=(0, 1))
    ax.legend()
    hx.set(xlabel="predicted probability", ylabel="rows", title="prediction histogram")
    fig.suptitle(title)
    return save_figure(fig, path, overwrite)


def plot_confusion(labels: np.ndarray, probs: np.ndarray, path, title: str = "", overwrite: bool = False) -> Path:
    from .plots import plt, save_figure

    pred = probs.argmax(axis=1)
    cm = np.zeros((3, 3), dtype=int)
    np.add.at(cm, (labels, pred), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, cm[i, j], ha="center", va="center", color="black")
    ax.set(xticks=range(3), yticks=range(3), xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
           xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    return save_figure(fig, path, overwrite)
