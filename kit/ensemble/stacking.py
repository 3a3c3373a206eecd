"""A stacker for the blend: logistic regression on the members' log-probabilities.

A weighted mean can only trade members off against each other. A stacker can also
*recalibrate* them: a member whose A/B direction is right but whose tie probability
ignores how close its two scores are (log p_A + log p_B is largest when they are equal)
gets that closeness turned into tie probability. On PandaLM's prompt-grouped folds this
is worth more than any weighting (results/cv_pandalm).

Features per member: ``log p_A, log p_B, log p_tie``, each probability clipped at 0.01 first:
a member that is overconfident on a few rows (log p of -10 where its peers say -1) would
otherwise steer the fit. On PandaLM's prompt-grouped folds, clipping at 0.01 with C = 1 was as good as
the best setting tried for MiniLM + lexical and the only one not hurt by adding a badly calibrated SmolLM2
member (the figures: docs/results.md). Guarantees:

* **Swap symmetry, exactly:** it is fitted on every row and its mirror (A and B
  exchanged, labels A<->B), and predicts the mean of the row and its mirror's swapped
  prediction — so stacking (B, A) gives (A, B)'s probabilities with p_A and p_B exchanged.
* Rows sum to 1; the L2 penalty (``C``) keeps the 9 coefficients per member sane on a few
  hundred OOF rows. Like every fitted blend, it is cross-fitted for the OOF figure
  (:func:`kit.ensemble.combine.blend_members`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.schema import SWAP, SWAP_INDEX  # the mirrored row's columns: p_B, p_A, p_tie



FLOOR = 0.01  # probabilities below it are read as it (see above)


def _features(probs: Sequence[np.ndarray]) -> np.ndarray:
    return np.hstack([np.log(np.clip(np.asarray(p, dtype=np.float64), FLOOR, 1.0)) for p in probs])


class MirrorStacker:
    """Multinomial logistic regression on members' log-probabilities, symmetric under A<->B."""

    def __init__(self, C: float = 1.0):
        self.C = C
        self.model = None

    def fit(self, probs: Sequence[np.ndarray], labels: np.ndarray) -> "MirrorStacker":
        from sklearn.linear_model import LogisticRegression

        labels = np.asarray(labels, dtype=int)
        if len(np.unique(labels)) < 3:
            raise ValueError("the stacker needs out-of-fold rows of all three outcomes (A, B, tie)")
        x = np.vstack([_features(probs), _features([p[:, SWAP] for p in probs])])
        y = np.concatenate([labels, SWAP_INDEX[labels]])
        self.model = LogisticRegression(C=self.C, max_iter=5000).fit(x, y)
        return self

    def predict(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        direct = self.model.predict_proba(_features(probs))
        mirrored = self.model.predict_proba(_features([p[:, SWAP] for p in probs]))[:, SWAP]
        out = (direct + mirrored) / 2
        return out / out.sum(axis=1, keepdims=True)

    @classmethod
    def from_description(cls, description: dict) -> "MirrorStacker":
        """The stacker a report's ``stacker`` entry describes (:meth:`describe`), ready to predict."""
        from sklearn.linear_model import LogisticRegression

        outcomes = ["a", "b", "tie"]
        names = list(description["coefficients"]["a"])
        stacker = cls(description["C"])
        model = LogisticRegression(C=stacker.C)
        model.classes_ = np.arange(3)
        model.coef_ = np.array([[description["coefficients"][o][n] for n in names] for o in outcomes])
        model.intercept_ = np.array([description["intercept"][o] for o in outcomes])
        model.n_features_in_ = len(names)
        stacker.model = model
        return stacker

    def describe(self, members: Sequence[str]) -> dict:
        """Coefficients per outcome and feature, for the report."""
        names = [f"{m}:log_{c}" for m in members for c in ("p_a", "p_b", "p_tie")]
        outcomes = ["a", "b", "tie"]
        return {"C": self.C,
                "intercept": dict(zip(outcomes, map(float, self.model.intercept_))),
                "coefficients": {o: dict(zip(names, map(float, row))) for o, row in zip(outcomes, self.model.coef_)}}
