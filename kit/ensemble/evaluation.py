"""Out-of-fold evaluation: the baselines every member is compared with (uniform, class prior,
TF-IDF + length logistic regression, all cross-fitted on the same folds)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import BlendError
from ..core.metrics import metrics
from ..data.ingest import load_tables
from ..store.cache import cache_sources, check_cache
from ..store.io import read_parquet_keeping_ids
from .combine import BlendResult


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


def evaluation_table(result: BlendResult, tokenized_train: str | Path) -> pd.DataFrame:
    """The OOF comparison: uniform, class prior and TF-IDF baselines (cross-fitted on the same
    folds), each member without and with TTA, and the blend — all on the same rows."""
    tokenized_train = Path(tokenized_train)
    check_cache(tokenized_train, "train")
    packed = read_parquet_keeping_ids(tokenized_train / "train.parquet", columns=["id", "label", "fold"])
    sources = cache_sources(tokenized_train, "train")
    if sources is None:
        raise BlendError(f"the training tables of {tokenized_train} are not here: the baselines re-read them "
                         f"(--no-baselines leaves them out)")
    text = load_tables(sources, labelled=True).frame.set_index("id")
    text = text.loc[packed["id"]].reset_index()
    # baselines fit on every training row outside a fold, predict that fold's rows
    all_labels, all_folds = packed["label"].to_numpy(), packed["fold"].to_numpy()
    where = pd.Index(packed["id"]).get_indexer(result.oof_ids)
    if (where < 0).any():
        lost = [i for i, w in zip(result.oof_ids, where) if w < 0]
        raise BlendError(f"{len(lost)} out-of-fold id(s) of the predictions are not in {tokenized_train / 'train.parquet'} "
                         f"(e.g. {lost[:5]}): the cache was re-tokenized after the models were trained; rerun the "
                         f"train and infer stages on it")
    needed = set(all_folds[where])
    labels = result.oof_labels
    probs = {"uniform": uniform_probs(len(labels)), "prior": prior_probs(all_labels, all_folds)[where],
             "tfidf": tfidf_probs(text, all_labels, all_folds, only_folds=needed)[where]}
    result.oof_methods.update(probs)
    # the prompt of each out-of-fold row: rows of one prompt are resampled together (kit.ensemble.intervals)
    result.oof_groups = ["\x1e".join(turns) for turns in text["prompt"].iloc[where]]
    base = {name: metrics(labels, p) for name, p in probs.items()}
    return pd.concat([pd.DataFrame(base).T, result.table])


def table_scores(table: pd.DataFrame) -> dict:
    """A comparison table as JSON-ready scores: each row's log loss, accuracy and macro-F1 (None where
    the row has none, e.g. a judge known only by its verdicts has no log loss)."""
    def value(r, k):
        v = r.get(k)
        return float(v) if v is not None and v == v else None  # NaN: not scored
    return {name: {k: value(r, k) for k in ("log_loss", "accuracy", "macro_f1")} for name, r in table.iterrows()}
