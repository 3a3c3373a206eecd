"""The ``lexical`` member: TF-IDF differences + length/structure features, logistic regression.

A member like the neural ones: the tokenize stage keeps its rows' text (same ids, labels
and prompt-grouped folds), the train stage fits one model per fold and writes
``oof.csv``/``metrics.json``/``config.json`` plus ``adapter/lexical.json`` + ``lexical.npz`` (the fitted
scikit-learn objects as data: nothing in them can run code when read), the infer stage writes the same prediction files, and the blend
reads them like any other member's.

Features of a row (A and B are treated alike):

* ``TF-IDF(A) - TF-IDF(B)`` over word 1–2-grams (sublinear tf, fitted on the training
  rows' responses only);
* per side: log characters, log words, lines, list items, headings, code fences, digits
  share, question marks, a refusal/apology phrase, word overlap with the prompt; each
  enters as the difference A − B and, for the tie class, as |A − B| and the pair's sum;
  plus "A and B identical" and "either empty".

Swap symmetry: every row is also trained as (B, A) with the label swapped, and predictions
average the (A, B) pass with the swapped pass's A/B columns exchanged — so the model
gives exactly mirrored probabilities for mirrored rows.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import PresetError
from ..core.presets import Preset
from ..core.schema import SWAP, SWAP_INDEX, TEXT_COLUMNS
from ..core.settings import TrainSettings
from ..ops.losses import soft_targets
from .base import Encoder, FitContext, Fitted, MemberType, Predictor, register
from ..core.files import read_json

SAVED_FORMAT = "kit-lexical/1"  # lexical.json + lexical.npz: data only, no pickle
_REFUSAL = re.compile(r"\b(i'm sorry|i am sorry|i apologi[sz]e|as an ai|i cannot|i can't|i'm not able|"
                      r"i am not able|i don't have|language model)\b", re.I)
_WORD = re.compile(r"\w+")


def _joined(turns) -> str:
    return "\n".join(str(t) for t in turns)


def side_stats(texts: list[str], prompts: list[str]) -> np.ndarray:
    """(n, k) structure statistics of one side's text."""
    rows = []
    for t, p in zip(texts, prompts):
        words = _WORD.findall(t.lower())
        pw = set(_WORD.findall(p.lower()))
        overlap = len(pw & set(words)) / max(1, len(pw))
        rows.append([np.log1p(len(t)), np.log1p(len(words)), np.log1p(t.count("\n")),
                     np.log1p(len(re.findall(r"(?m)^\s*(?:[-*•]|\d+[.)])\s", t))),
                     np.log1p(len(re.findall(r"(?m)^#+\s", t))), np.log1p(t.count("```")),
                     sum(c.isdigit() for c in t) / max(1, len(t)), np.log1p(t.count("?")),
                     float(bool(_REFUSAL.search(t))), overlap, float(len(t.strip()) == 0)])
    return np.asarray(rows, dtype=np.float64)


class LexicalModel:
    """Fitted TF-IDF vocabulary + scaler + logistic regression; see the module docstring."""

    def __init__(self, C: float = 0.1, dense_scale: float = 0.3, ngram_max: int = 2, max_features: int = 50000,
                 seed: int = 0):
        # dense_scale: the structure features are few and strong, the TF-IDF ones many and
        # weak; scaling the dense block up regularises it less under one C
        self.C, self.dense_scale, self.ngram_max, self.max_features, self.seed = \
            C, dense_scale, ngram_max, max_features, seed

    def _texts(self, frame: pd.DataFrame):
        p = [_joined(x) for x in frame["prompt"]]
        a = [_joined(x) for x in frame["response_a"]]
        b = [_joined(x) for x in frame["response_b"]]
        return p, a, b

    def _features(self, p, a, b):
        from scipy.sparse import csr_matrix, hstack

        sa, sb = side_stats(a, p), side_stats(b, p)
        pair = np.column_stack([np.asarray([x == y for x, y in zip(a, b)], float),
                                np.log1p([len(x) for x in p])])
        dense = np.hstack([sa - sb, np.abs(sa - sb), sa + sb, pair])
        diff = self.vectorizer.transform(a) - self.vectorizer.transform(b)
        return hstack([diff, csr_matrix(self.dense_scale * self.scaler.transform(dense))]).tocsr(), dense

    def fit(self, frame: pd.DataFrame, labels, targets: np.ndarray | None = None) -> "LexicalModel":
        """Fit on ``labels`` (class indices), or with ``targets`` (n, 3) on target distributions
        (soft labels): each row enters once per class it gives weight to, with that weight."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        p, a, b = self._texts(frame)
        labels = np.asarray(labels, dtype=np.int64)
        self.vectorizer = TfidfVectorizer(ngram_range=(1, self.ngram_max), min_df=2 if len(frame) >= 200 else 1,
                                          max_features=self.max_features, sublinear_tf=True).fit(a + b)
        sa, sb = side_stats(a, p), side_stats(b, p)
        pair = np.column_stack([np.asarray([x == y for x, y in zip(a, b)], float), np.log1p([len(x) for x in p])])
        both = np.vstack([np.hstack([sa - sb, np.abs(sa - sb), sa + sb, pair]),
                          np.hstack([sb - sa, np.abs(sa - sb), sa + sb, pair])])
        self.scaler = StandardScaler().fit(both)
        x, _ = self._features(p, a, b)
        x_swap, _ = self._features(p, b, a)
        from scipy.sparse import vstack
        y = np.concatenate([labels, SWAP_INDEX[labels]])
        self.classifier = LogisticRegression(C=self.C, max_iter=3000, random_state=self.seed)
        both_x = vstack([x, x_swap]).tocsr()
        if targets is None:
            self.classifier.fit(both_x, y)
            return self
        t = np.asarray(targets, dtype=np.float64)
        t = np.vstack([t, t[:, SWAP]])
        parts = [(np.flatnonzero(t[:, c] > 0), c) for c in range(3)]
        self.classifier.fit(vstack([both_x[rows] for rows, _ in parts]).tocsr(),
                            np.concatenate([np.full(len(rows), c) for rows, c in parts]),
                            sample_weight=np.concatenate([t[rows, c] for rows, c in parts]))
        return self

    def _proba(self, x) -> np.ndarray:
        out = np.zeros((x.shape[0], 3))
        out[:, self.classifier.classes_] = self.classifier.predict_proba(x)
        return out

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, 3) probabilities: the (A, B) pass averaged with the mirrored (B, A) pass."""
        p, a, b = self._texts(frame)
        if not len(p):
            return np.zeros((0, 3))
        direct = self._proba(self._features(p, a, b)[0])
        mirrored = self._proba(self._features(p, b, a)[0])[:, SWAP]
        return (direct + mirrored) / 2

    def save(self, folder: Path) -> None:
        """Write the fitted model as data that cannot run code when read: ``lexical.json`` (settings,
        vocabulary) and ``lexical.npz`` (arrays; read with ``allow_pickle=False``)."""
        folder.mkdir(parents=True, exist_ok=True)
        v, sc, clf = self.vectorizer, self.scaler, self.classifier
        record = {"format": SAVED_FORMAT,
                  "model": {"C": self.C, "dense_scale": self.dense_scale, "ngram_max": self.ngram_max,
                            "max_features": self.max_features, "seed": self.seed},
                  "min_df": v.min_df, "vocabulary": {t: int(k) for t, k in v.vocabulary_.items()},
                  "scaler_samples": int(sc.n_samples_seen_) if np.ndim(sc.n_samples_seen_) == 0
                  else [int(x) for x in sc.n_samples_seen_]}
        (folder / "lexical.json").write_text(json.dumps(record) + "\n")
        np.savez(folder / "lexical.npz", idf=v.idf_, mean=sc.mean_, scale=sc.scale_, var=sc.var_, coef=clf.coef_,
                 intercept=clf.intercept_, classes=clf.classes_, n_iter=clf.n_iter_)

    @staticmethod
    def load(folder: Path) -> "LexicalModel":
        """The model :meth:`save` wrote, rebuilt from its JSON and arrays (predictions bit-identical
        to the fitted model's). A pickle (``.joblib``/``.pkl``) is refused, never loaded."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        folder = Path(folder)
        record_path, arrays_path = folder / "lexical.json", folder / "lexical.npz"
        if not record_path.is_file() or not arrays_path.is_file():
            raise PresetError(f"no fitted lexical model at {folder} (lexical.json + lexical.npz): run the train stage "
                              f"for 'lexical' (a model saved by an older kit as a pickle is not loaded: retrain it)")
        try:
            record = read_json(record_path, "retrain it", PresetError)
            arrays = dict(np.load(arrays_path, allow_pickle=False))
        except (ValueError, OSError) as e:
            raise PresetError(f"{folder}: the lexical model is unreadable ({type(e).__name__}: {e}): retrain it") from None
        if record.get("format") != SAVED_FORMAT:
            raise PresetError(f"{record_path}: format {record.get('format')!r}, expected {SAVED_FORMAT!r}: retrain it")
        model = LexicalModel(**record["model"])
        v = TfidfVectorizer(ngram_range=(1, model.ngram_max), min_df=record["min_df"], max_features=model.max_features,
                            sublinear_tf=True)
        v.vocabulary_ = dict(record["vocabulary"])
        v.idf_ = arrays["idf"]
        sc = StandardScaler()
        sc.mean_, sc.scale_, sc.var_ = arrays["mean"], arrays["scale"], arrays["var"]
        sc.n_features_in_, sc.n_samples_seen_ = len(arrays["mean"]), np.asarray(record["scaler_samples"])
        clf = LogisticRegression(C=model.C, max_iter=3000, random_state=model.seed)
        clf.coef_, clf.intercept_, clf.classes_, clf.n_iter_ = (arrays["coef"], arrays["intercept"], arrays["classes"],
                                                                 arrays["n_iter"])
        clf.n_features_in_ = arrays["coef"].shape[1]
        model.vectorizer, model.scaler, model.classifier = v, sc, clf
        return model


class LexicalPredictor(Predictor):
    """A fitted :class:`LexicalModel` as a member's predictor (no devices, no batches)."""

    def __init__(self, model: LexicalModel):
        self.model = model

    def predict_proba(self, frame: pd.DataFrame, swap: bool = False, **options) -> np.ndarray:
        rows = frame.rename(columns={"response_a": "response_b", "response_b": "response_a"}) if swap else frame
        return self.model.predict_proba(rows)

    def predict(self, frame: pd.DataFrame, swap: bool = False, **options) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(frame, swap), 1e-300, 1.0))


@register
class LexicalMember(MemberType):
    """The lexical member type: text in the cache, a scikit-learn model, no backbone."""

    name = "lexical"
    uses_backbone = False
    uses_tta = False  # the model already averages the (A, B) and mirrored (B, A) passes
    cache_columns = TEXT_COLUMNS

    def encoder(self, preset: Preset, pack: dict | None = None) -> Encoder:
        return Encoder(lambda frame, desc: frame[["id", *TEXT_COLUMNS]].reset_index(drop=True), None)

    def fit(self, preset: Preset, train_rows: pd.DataFrame, held_rows: pd.DataFrame, settings: TrainSettings,
            context: FitContext) -> Fitted:
        self.check_cache(train_rows, context.tokenized)
        started = time.time()
        targets = soft_targets(train_rows)
        model = LexicalModel(C=preset.lexical_c, dense_scale=preset.lexical_dense_scale, seed=settings.seed)
        model.fit(train_rows, train_rows["label"], targets)
        metrics = {"train_rows": len(train_rows), "train_seconds": time.time() - started,
                   "soft_labels": targets is not None,
                   "trainable_params": int(model.classifier.coef_.size + model.classifier.intercept_.size)}
        held = model.predict_proba(held_rows) if len(held_rows) else None
        return Fitted(model.save, held, metrics)

    def load(self, model_dir: Path, preset: Preset, devices=("cpu",)) -> Predictor:
        return LexicalPredictor(LexicalModel.load(Path(model_dir) / "adapter"))
