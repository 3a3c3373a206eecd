"""PNG figures for the stages' results (matplotlib, Agg backend: headless-safe)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..core.schema import CLASS_NAMES, FIELDS  # noqa: E402
from .io import atomic_write  # noqa: E402


def save_figure(fig, path, overwrite: bool = False) -> Path:
    path = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"),
                        overwrite)
    plt.close(fig)
    return path


def plot_retention(packed: pd.DataFrame, max_length: int, path, title: str = "",
                   overwrite: bool = False) -> Path:
    """Packed length distribution and, per field, the distribution of kept share."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.hist(packed["n_tokens"], bins=40, color="#4C72B0")
    ax1.axvline(max_length, color="crimson", ls="--", label=f"max_length={max_length}")
    ax1.set(xlabel="tokens per packed row", ylabel="rows", title="packed length")
    ax1.legend()
    bins = np.linspace(0, 1, 21)
    for f in FIELDS:
        total = packed[f"{f}_total"].where(packed[f"{f}_total"] > 0)
        share = (packed[f"{f}_kept"] / total).fillna(1.0)
        ax2.hist(share, bins=bins, histtype="step", lw=2, label=f)
    ax2.set(xlabel="share of the field's tokens kept", ylabel="rows", yscale="log", title="retention")
    ax2.legend(loc="upper left")
    fig.suptitle(title)
    return save_figure(fig, path, overwrite)


def plot_methods(table: pd.DataFrame, path, title: str = "", overwrite: bool = False) -> Path:
    """Out-of-fold log loss and (when the table has it) accuracy per method, side by side on one row per
    method: baselines grey, members blue, blends green, judges orange. A judge known by its verdicts has no
    log loss (its bar is left out, marked "—") and is drawn in the accuracy panel, where the comparison is."""
    names = list(table.index)
    colors = ["#999999" if n in ("uniform", "prior", "tfidf") else "#55A868" if n.startswith("blend")
              else "#DD8452" if n.startswith("judge:") else "#4C72B0" for n in names]
    columns = [c for c in ("log_loss", "accuracy") if c in table]
    scores = {c: pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float) for c in columns}
    fig, axes = plt.subplots(1, len(columns), sharey=True, squeeze=False, layout="constrained",
                             figsize=(4 + 3.5 * len(columns), 0.45 * len(names) + 1.2),
                             gridspec_kw={"width_ratios": [3, 2][:len(columns)]})
    for axis, column in zip(axes[0], columns):
        values = scores[column]
        finite = values[~np.isnan(values)]
        # accuracy bars start near the lowest one: the differences that matter are a point or two
        low = min(0.6, finite.min() - 0.05) if column == "log_loss" else max(0.0, finite.min() - 0.05)
        axis.barh(names, np.where(np.isnan(values), low, values) - low, left=low, color=colors)
        for y, v in enumerate(values):
            axis.text(low if np.isnan(v) else v, y, " —" if np.isnan(v) else f" {v:.4f}", va="center", fontsize=8)
        if "tfidf" in names and not np.isnan(values[names.index("tfidf")]):
            axis.axvline(values[names.index("tfidf")], color="crimson", ls="--", lw=1, label="TF-IDF baseline")
        if column == "accuracy":  # each verdict judge's accuracy as a line the other rows are read against
            verdicts = [(n, v) for n, v, loss in zip(names, values, scores["log_loss"])
                        if n.startswith("judge:") and np.isnan(loss) and not np.isnan(v)]
            for (n, v), style in zip(verdicts, [":", "-.", "--"] * len(verdicts)):
                axis.axvline(v, color="#DD8452", ls=style, lw=1.2, label=n.removeprefix("judge: "))
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="lower right", fontsize=8)
        axis.set(xlabel=f"out-of-fold {column.replace('_', ' ')} ({'lower' if column == 'log_loss' else 'higher'} "
                        f"is better)", xlim=(low, finite.max() + (0.08 if column == "log_loss" else 0.03)))
    axes[0][0].invert_yaxis()
    fig.suptitle(title)
    return save_figure(fig, path, overwrite)


def plot_training(log: pd.DataFrame, path, title: str = "", overwrite: bool = False) -> Path:
    """Training loss (and held-out log loss / accuracy when evaluated) against the step."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if "loss" in log:
        tr = log.dropna(subset=["loss"])
        # markers: a run with one logged point still shows it (a line needs two)
        ax.plot(tr["step"], tr["loss"], ".-", label="train loss", color="#4C72B0")
    if "eval_log_loss" in log:
        ev = log.dropna(subset=["eval_log_loss"])
        ax.plot(ev["step"], ev["eval_log_loss"], "o-", label="held-out log loss", color="crimson")
        ax2 = ax.twinx()
        ax2.plot(ev["step"], ev["eval_accuracy"], "s--", color="#55A868", label="held-out accuracy")
        ax2.set_ylabel("accuracy")
        ax2.legend(loc="upper right")
    ax.set(xlabel="optimizer step", ylabel="loss", title=title)
    ax.legend(loc="upper left")
    return save_figure(fig, path, overwrite)


def plot_reliability(labels: np.ndarray, probs: np.ndarray, path, title: str = "", overwrite: bool = False) -> Path:
    """Per-class reliability: mean predicted probability vs observed frequency, 10 bins."""

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
