"""Dedup of extra training data against the rows it must not leak into.

Extra rows (``tokenize --extra``: other preference data) are training-only: they sit in every
fold's training set and are never held out. So an extra row whose prompt is also a prompt of the
main training table (every main row is held out by some fold) or of the test table would put
that prompt on both sides of the line. :func:`dedup_extra` removes such extra rows:

* **exact**: the same prompt after normalising (Unicode NFKC, case-folded, whitespace collapsed,
  turns joined);
* **near**: cosine similarity of character 3–5-gram TF-IDF vectors (scikit-learn) ≥
  ``threshold`` (default 0.9; ``1.0`` keeps only the exact rule).

Guarantees: only extra rows are ever removed (never a main or test row); every removed row is
returned with the row it matched (split, id, similarity, rule).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

import numpy as np
import pandas as pd

DEFAULT_SIMILARITY = 0.9
_SPACE = re.compile(r"\s+")


def normalise_prompt(turns: Iterable[str]) -> str:
    """A prompt's turns joined, NFKC-normalised, case-folded, whitespace collapsed: equal for rewrites that differ only so."""
    text = "\n".join(turns)
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _nearest(extra: list[str], reference: list[str], chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each extra text: the most similar reference text's index and the cosine similarity."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=1, dtype=np.float32)
    vectorizer.fit(reference + extra)
    ref = vectorizer.transform(reference).T.tocsr()  # rows are L2-normalised: a dot product is the cosine
    best, where = np.zeros(len(extra), dtype=np.float32), np.zeros(len(extra), dtype=np.int64)
    for start in range(0, len(extra), chunk):
        sims = (vectorizer.transform(extra[start:start + chunk]) @ ref).toarray()
        where[start:start + chunk] = sims.argmax(axis=1)
        best[start:start + chunk] = sims.max(axis=1)
    return best, where


def dedup_extra(extra: pd.DataFrame, references: dict[str, pd.DataFrame],
                threshold: float = DEFAULT_SIMILARITY) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept extra rows, removed rows) — see the module docstring. ``references`` maps a split
    name ("train", "test") to a frame with ``id`` and ``prompt`` (a list of turns)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"dedup similarity {threshold}: pass a number in (0, 1]")
    columns = ["id", "matched_split", "matched_id", "similarity", "rule"]
    ref_ids, ref_split, ref_keys = [], [], []
    for split, frame in references.items():
        if frame is not None and len(frame):
            ref_ids += frame["id"].tolist()
            ref_split += [split] * len(frame)
            ref_keys += [normalise_prompt(p) for p in frame["prompt"]]
    if not len(extra) or not ref_keys:
        return extra, pd.DataFrame(columns=columns)
    keys = [normalise_prompt(p) for p in extra["prompt"]]
    exact = {}
    for i, k in enumerate(ref_keys):
        exact.setdefault(k, i)
    removed = []
    match = [exact.get(k) for k in keys]
    if threshold < 1:
        todo = [i for i, m in enumerate(match) if m is None]
        if todo:
            sims, where = _nearest([keys[i] for i in todo], ref_keys)
            for i, s, w in zip(todo, sims, where):
                if s >= threshold:
                    removed.append((i, int(w), float(s), "near"))
    removed += [(i, m, 1.0, "exact") for i, m in enumerate(match) if m is not None]
    removed.sort()
    gone = pd.DataFrame([{"id": extra["id"].iloc[i], "matched_split": ref_split[m], "matched_id": ref_ids[m],
                          "similarity": round(s, 4), "rule": rule} for i, m, s, rule in removed], columns=columns)
    keep = np.ones(len(extra), dtype=bool)
    keep[[i for i, *_ in removed]] = False
    return extra[keep], gone
