"""The trained ensemble as a Python object: pairs held in memory scored exactly as ``kit submit`` scores a table.

    ens = kit.load_ensemble(["artifacts/models"])        # the model folders, as kit submit takes them
    ens.compare("What is 2 + 2?", "4", "5")              # {"p_a": ..., "p_b": ..., "p_tie": ...}
    ens.predict(frame)                                   # id, p_a, p_b, p_tie for every row of a DataFrame

Guarantees:

* the same probabilities as ``kit submit`` with the same settings on the same rows: :meth:`Ensemble.predict` *is*
  kit submit's path (preflight, the saved blend or weights mode, swap TTA, the guardrails), run on the rows
  written as a competition test table into a temporary folder;
* nothing is written anywhere else, and that folder is removed afterwards; ids come back as given, in order;
* no deadline: every member is scored.

Each call loads the models again: score many rows with one :meth:`~Ensemble.predict`, not one
:meth:`~Ensemble.compare` per row.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.errors import DataError
from ..core.schema import LABEL_COLUMNS, PROB_COLUMNS
from ..store.io import read_csv_keeping_ids
from .settings import SubmitSettings
from .submit import submit

__all__ = ["Ensemble", "load_ensemble"]

TEXT_COLUMNS = ("prompt", "response_a", "response_b")


@dataclass
class Ensemble:
    """Trained members and how they are blended (kit submit's settings, less its tables and deadline)."""

    settings: SubmitSettings

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """id, p_a, p_b, p_tie for each row of ``frame`` (columns prompt, response_a, response_b: a text, or a
        list of turns for a multi-turn conversation; an ``id`` column is kept, else the rows are numbered)."""
        missing = [c for c in TEXT_COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(f"predict: the rows need the columns {list(TEXT_COLUMNS)}; {missing} missing")
        ids = frame["id"].tolist() if "id" in frame.columns else list(range(len(frame)))
        table = pd.DataFrame({"id": [str(i) for i in ids],
                              **{c: [_turns(v, row, c) for row, v in enumerate(frame[c])] for c in TEXT_COLUMNS}})
        with tempfile.TemporaryDirectory(prefix="kit-ensemble-") as tmp:
            test = Path(tmp) / "test.csv"
            table.to_csv(test, index=False)
            given = {**self.settings.to_dict(), "test": str(test), "out": str(Path(tmp) / "submission.csv"),
                     "work": str(Path(tmp) / "work"), "budget_hours": None, "sample_submission": None}
            result = submit(**given)
            probs = read_csv_keeping_ids(result.submission)
        return pd.DataFrame({"id": ids, **{c: probs[w].to_numpy() for c, w in zip(PROB_COLUMNS, LABEL_COLUMNS)}})

    def compare(self, prompt: str | list, response_a: str | list, response_b: str | list) -> dict:
        """{p_a, p_b, p_tie}: how likely people prefer ``response_a``, ``response_b``, or call it a tie."""
        row = self.predict(pd.DataFrame({"prompt": [prompt], "response_a": [response_a],
                                         "response_b": [response_b]}))
        return {c: float(row[c].iloc[0]) for c in PROB_COLUMNS}


def _turns(value, row: int, column: str) -> str:
    """A cell as the competition writes it: a JSON list of turns."""
    turns = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if turns is None or not all(isinstance(t, str) or t is None for t in turns):
        raise DataError(f"predict: row {row}, column {column}: give a text or a list of texts, not "
                        f"{type(value).__name__}")
    return json.dumps(turns, ensure_ascii=False)


def load_ensemble(model_roots: list[str] | None = None, weights: str = "auto", blend_json: str | None = None,
                  space: str = "prob", devices: list[str] | None = None, tta: bool = True,
                  model_dir: dict | None = None, quantization: str | None = None,
                  average_folds: bool = False) -> Ensemble:
    """The trained ensemble under ``model_roots`` (train-stage outputs, or folders holding them, as
    ``kit submit --model-roots`` takes; default: every trained model under ``<work>/models``), blended as
    ``kit submit`` would blend it: the saved blend (``blend_json``, or one found beside the models) with
    ``weights="auto"``, else the weights mode given. Each parameter is the :class:`SubmitSettings` field of that
    name. The settings are checked now; the models load when rows are scored.

    Returns:
        :class:`Ensemble`: ``predict(frame)`` and ``compare(prompt, response_a, response_b)``.

    Example:
        >>> ens = load_ensemble(["artifacts/models"])                           # doctest: +SKIP
        >>> ens.compare("Name a prime.", "7", "8")                              # doctest: +SKIP
    """
    return Ensemble(SubmitSettings(model_roots=model_roots, weights=weights, blend_json=blend_json, space=space,
                                   devices=devices, tta=tta, model_dir=model_dir, quantization=quantization,
                                   average_folds=average_folds))
