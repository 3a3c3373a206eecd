"""The kit's vocabulary, written once: classes, table columns, the A/B swap, special folds.

Guarantees: class index ``k`` is ``CLASS_NAMES[k]`` everywhere (0 = A wins, 1 = B wins,
2 = tie); a probability table's columns are ``PROB_COLUMNS`` in that order; exchanging A and
B maps class ``k`` to ``SWAP[k]`` and a probability row ``p`` to ``p[..., SWAP]``.
"""
from __future__ import annotations

import numpy as np

CLASS_NAMES = ("A", "B", "tie")
LABELS = dict(enumerate(CLASS_NAMES))  # {0: "A", 1: "B", 2: "tie"}
TEXT_COLUMNS = ("prompt", "response_a", "response_b")  # JSON lists of turns in the competition's tables
# lists, not tuples: pandas selects columns with a list (a tuple is one key)
LABEL_COLUMNS = ["winner_model_a", "winner_model_b", "winner_tie"]  # one-hot (or a soft label) per row
SUBMISSION_COLUMNS = ["id", *LABEL_COLUMNS]
PROB_COLUMNS = ["p_a", "p_b", "p_tie"]  # a predictions file's probability columns
TARGET_COLUMNS = ["target_a", "target_b", "target_tie"]  # a cache row's training target (one-hot or soft)
FIELDS = TEXT_COLUMNS  # the packed fields of a row (retention columns are named after them)

SWAP = [1, 0, 2]  # A <-> B: the class / probability column each one becomes (index arrays and columns)
SWAP_INDEX = np.array(SWAP)

EXTRA_FOLD = -2  # extra or soft-labelled training rows: in every fold's training rows, never held out
TEST_FOLD = -1  # test rows (unlabelled: label -1)


def swap_probs(probs: np.ndarray) -> np.ndarray:
    """``probs`` (n, 3) with A's and B's columns exchanged: the prediction of the mirrored row."""
    return np.asarray(probs)[..., SWAP_INDEX]


def swap_labels(labels: np.ndarray) -> np.ndarray:
    """Class indices of the mirrored rows (A <-> B, a tie stays a tie)."""
    return SWAP_INDEX[np.asarray(labels, dtype=np.int64)]


def is_soft(target) -> bool:
    """True when a target (three probabilities) is not one-hot: a soft label."""
    return sorted(target) != [0.0, 0.0, 1.0]
