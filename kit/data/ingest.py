"""Ingest of the competition's train/test tables (CSV or parquet, same columns).

Guarantees of :func:`load_conversations`:

* every returned row has ``prompt``, ``response_a`` and ``response_b`` as lists of
  ``str`` of the same length (>= 1), with ``null`` turns as ``""`` and no lone
  surrogate code points;
* a *train* row that cannot be used is not returned; it is listed in the
  ``skipped`` table (row, id, column, problem) — nothing is dropped silently;
* a *test* row is never dropped: a cell that cannot be parsed keeps its raw text as
  a single turn, and turn lists of unequal length are padded with ``""`` (both are
  noted in the ``notes`` table);
* ids are text exactly as written (``001`` stays ``001``; a parquet file's numbers become
  their decimal text); missing columns, empty ids and duplicate ids raise
  :class:`DataError` naming them.

Labels are 0 (A wins), 1 (B wins), 2 (tie); -1 for unlabelled (test) rows. A labelled row
may carry probabilities in the winner columns instead of 0/1 (a *soft* label, e.g. a
teacher's): ``target`` holds the three probabilities (one-hot for a hard row), ``label`` the
most likely class (:func:`label_target`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from ..core.errors import DataError
from ..core.schema import LABEL_COLUMNS, TEXT_COLUMNS
from ..core.log import get_logger
from ..store.io import ids_as_text
from .preference import READER_PROBLEM, convert_frame, is_record_file, read_preference_file

log = get_logger(__name__)
SKIP_COLUMNS = ["row", "id", "column", "problem"]

_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass
class Conversations:
    """Parsed rows plus the report of what was skipped (train) or repaired (test)."""

    frame: pd.DataFrame  # id, prompt, response_a, response_b, label (+ model_a/b)
    skipped: pd.DataFrame  # row, id, column, problem — rows NOT in `frame`
    notes: pd.DataFrame  # row, id, column, problem — rows kept with a repair

    def __len__(self) -> int:
        return len(self.frame)


def strip_surrogates(text: str) -> str:
    """Remove lone UTF-16 surrogates (they make tokenizers and UTF-8 encoders fail)."""
    return _SURROGATES.sub("", text)


def parse_turns(cell) -> list[str]:
    """Parse one prompt/response cell into a list of turns.

    Accepts a JSON list of strings (``null`` items become ``""``; numbers etc. are
    stringified), a Python list, or NaN/None (an empty list). Raises ``ValueError``
    with the reason for anything else.
    """
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    if isinstance(cell, (list, tuple, np.ndarray)):
        items = list(cell)
    else:
        if not isinstance(cell, str):
            raise ValueError(f"expected a JSON list, got {type(cell).__name__}")
        try:
            items = json.loads(cell)
        except json.JSONDecodeError as err:
            raise ValueError(f"bad JSON ({err.msg} at char {err.pos})") from None
        except RecursionError:
            raise ValueError("JSON nested too deeply to be a list of turns") from None
        if items is None:
            return []
        if not isinstance(items, list):
            raise ValueError(f"JSON is a {type(items).__name__}, not a list of turns")
    turns = []
    for item in items:
        if item is None:
            turns.append("")
        elif isinstance(item, str):
            turns.append(strip_surrogates(item))
        elif isinstance(item, (int, float, bool)):
            turns.append(str(item))
        else:
            raise ValueError(f"turn of type {type(item).__name__}, not a string")
    return turns


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or parquet table; ids and text stay as written (no NaN coercion of text).
    Chosen/rejected preference data (HH-RLHF, UltraFeedback-style messages, prompt/chosen/rejected
    columns; also ``.jsonl[.gz]`` / ``.json`` records) comes back in the competition's columns
    (:mod:`kit.data.preference`)."""

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such table: {path}")
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a table: pass the CSV or parquet file inside it")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (not even a header): pass a table in the competition's "
                        f"columns")
    if is_record_file(path):
        try:
            return read_preference_file(path)
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}): re-save the file as "
                            f"UTF-8") from None
        except RecursionError:  # a JSON array nested deeper than the parser goes
            raise DataError(f"{path}: not readable JSON records (nested too deeply for preference data): one JSON "
                            f"object per line (.jsonl), or one JSON array of objects (.json)") from None
        except (OSError, EOFError, ValueError) as err:  # a broken gzip stream, a broken JSON array
            raise DataError(f"{path}: not readable JSON records ({type(err).__name__}: {err}): one JSON object "
                            f"per line (.jsonl), or one JSON array (.json)") from None
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return convert_frame(pd.read_parquet(path), path)
        except Exception as err:  # pyarrow's errors share no base class worth naming
            raise DataError(f"{path}: not a readable parquet file ({type(err).__name__}: {err}): "
                            f"re-export it, or pass a CSV") from None
    try:
        # keep_default_na=False: a prompt that reads "null" or "NA" is text, not a missing value;
        # ids stay text exactly as written ("001" is not 1)
        return convert_frame(pd.read_csv(path, dtype={c: str for c in ("id", *TEXT_COLUMNS)}, keep_default_na=False),
                             path)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}): re-save the file as "
                        f"UTF-8") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a readable CSV ({err}): check its quoting") from None


# a chunk of a CSV table holds about this many characters of cells; a parser that keeps only what it makes
# of each chunk (the test table's stream: kit.stages.tokenize) never holds the table's text whole
CHUNK_CHARS = 8 * 1024 ** 2
_FIRST_CHUNK_ROWS = 4


def read_table_chunks(path: str | Path) -> Iterator[pd.DataFrame]:
    """The rows of :func:`read_table`, in order: a CSV in the competition's columns as frames of about
    :data:`CHUNK_CHARS` characters of cells; any other table (parquet, JSON records, a chosen/rejected
    CSV, converted whole) as one frame. The same checks and one-line errors as :func:`read_table`."""
    path = Path(path)
    if is_record_file(path) or path.suffix.lower() in (".parquet", ".pq") or not path.is_file() \
            or path.stat().st_size == 0:
        yield read_table(path)
        return
    try:
        if {"chosen", "rejected"} <= set(pd.read_csv(path, nrows=0).columns):
            yield read_table(path)
            return
        with pd.read_csv(path, iterator=True, dtype={c: str for c in ("id", *TEXT_COLUMNS)},
                         keep_default_na=False) as reader:
            rows = _FIRST_CHUNK_ROWS
            while True:
                try:
                    chunk = reader.get_chunk(rows)
                except StopIteration:
                    return
                chars = sum(int(chunk[c].str.len().sum()) for c in TEXT_COLUMNS if c in chunk.columns)
                yield chunk
                rows = max(1, int(CHUNK_CHARS * len(chunk) / max(chars, 1)))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}): re-save the file as "
                        f"UTF-8") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a readable CSV ({err}): check its quoting") from None


def iter_conversations(path: str | Path, labelled: bool) -> Iterator["Conversations"]:
    """:func:`load_conversations` of the table at ``path``, chunk by chunk (:func:`read_table_chunks`), with
    the same guarantees over the whole table: row numbers counted from its first data row, ids unique
    across chunks, a table of only a header refused."""
    seen, first_row = set(), 0
    for chunk in read_table_chunks(path):
        if not len(chunk) and first_row:
            continue
        part = load_conversations(chunk, labelled=labelled, name=str(path), first_row=first_row)
        again = [i for i in part.frame["id"] if i in seen]
        if again:
            raise DataError(f"{path}: duplicate id(s) {sorted(set(again), key=str)[:20]} (each row needs its own id)")
        seen.update(part.frame["id"])
        first_row += len(chunk)
        yield part


def _check_columns(df: pd.DataFrame, labelled: bool, source: str, first_row: int = 0) -> pd.Series:
    """The table's ids as text, once columns and ids are checked (DataError otherwise)."""
    need = ["id", *TEXT_COLUMNS, *(LABEL_COLUMNS if labelled else ())]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(df.columns)}")
    ids_text = ids_as_text(df["id"])
    empty = [first_row + i for i, v in enumerate(ids_text) if v is None or v != v or not str(v).strip()]
    if empty:
        raise DataError(f"{source}: empty id in {len(empty)} row(s) {empty[:20]}{' ...' if len(empty) > 20 else ''} "
                        f"(data rows counted from 0, header excluded): give every row a unique id")
    dup = ids_text[ids_text.duplicated(keep=False)]
    if len(dup):
        ids = sorted(set(dup.tolist()), key=str)
        raise DataError(f"{source}: {len(dup)} rows share {len(ids)} duplicate id(s): "
                        f"{ids[:20]}{' ...' if len(ids) > 20 else ''}")
    return ids_text


def label_target(row, columns) -> tuple[int, list[float]]:
    """(label, target) of one row's three winner cells: one-hot cells give that class and the
    one-hot target; probabilities (each in [0, 1], summing to 1 within 1e-3) are a *soft* label:
    the target is them (renormalised), the label their most likely class. ValueError otherwise."""
    values = []
    for col in columns:
        v = row[col]
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"label {col}={v!r} is not a number") from None
        if not np.isfinite(f) or f < 0 or f > 1:
            raise ValueError(f"label {col}={v!r} is not a probability (0 to 1)")
        values.append(f)
    if sorted(values) == [0.0, 0.0, 1.0]:
        return values.index(1.0), values
    if abs(sum(values) - 1) > 1e-3:
        raise ValueError(f"labels {dict(zip(columns, values))} are not one-hot, nor probabilities summing to 1 "
                         f"(within 1e-3)")
    target = [v / sum(values) for v in values]
    return int(np.argmax(target)), target


def load_conversations(source, *, labelled: bool | None = None, name: str | None = None, first_row: int = 0
                       ) -> Conversations:
    """Parse a competition-format table (path or DataFrame); see the module docstring.

    ``labelled=None`` decides from the presence of the three winner columns; ``first_row``: the number of
    the frame's first row in its table (a chunk's), as reported rows count.
    """
    if isinstance(source, pd.DataFrame):
        df, name = source, name or "table"
    else:
        df, name = read_table(source), name or str(source)
    if labelled is None:
        labelled = all(c in df.columns for c in LABEL_COLUMNS)
    ids = _check_columns(df, labelled, name, first_row)
    if not len(df):
        raise DataError(f"{name}: no rows, only a header: pass a table with rows")
    df = df.assign(id=ids)

    rows, skipped, notes = [], [], []
    extra = [c for c in ("model_a", "model_b") if c in df.columns]
    for i, rec in enumerate(df.to_dict("records"), start=first_row):
        rid = rec["id"]
        reader_problem = rec.get(READER_PROBLEM)
        if labelled and isinstance(reader_problem, str):  # a chosen/rejected record that could not be split
            skipped.append({"row": i, "id": rid, "column": "chosen/rejected", "problem": reader_problem})
            continue
        turns, problems = {}, []
        for col in TEXT_COLUMNS:
            try:
                turns[col] = parse_turns(rec[col])
            except ValueError as err:
                problems.append((col, str(err)))
                raw = rec[col]
                turns[col] = [strip_surrogates("" if raw is None else str(raw))]
        label, target = -1, None
        if labelled:
            try:
                label, target = label_target(rec, LABEL_COLUMNS)
            except ValueError as err:
                problems.append(("winner_model_a/winner_model_b/winner_tie", str(err)))
        counts = {c: len(turns[c]) for c in TEXT_COLUMNS}
        if len(set(counts.values())) > 1:
            problems.append(("prompt/response_a/response_b",
                             "turn counts disagree: " + ", ".join(f"{c} {n}" for c, n in counts.items())))
        elif max(counts.values()) == 0:
            problems.append(("prompt/response_a/response_b", "no turns (empty lists)"))

        if problems and labelled:
            skipped.extend({"row": i, "id": rid, "column": c, "problem": p} for c, p in problems)
            continue
        if problems:  # test row: repair, never drop
            notes.extend({"row": i, "id": rid, "column": c, "problem": p + " (kept)"} for c, p in problems)
            n = max(1, *counts.values())
            for c in TEXT_COLUMNS:
                turns[c] = turns[c] + [""] * (n - len(turns[c]))
        out = {"id": rid, **turns, "label": label, "target": target}
        out.update({c: rec[c] for c in extra})
        rows.append(out)

    frame = pd.DataFrame(rows, columns=["id", *TEXT_COLUMNS, "label", "target", *extra])
    if not labelled:
        frame = frame.drop(columns="target")
    frame["label"] = frame["label"].astype(np.int64)
    return Conversations(frame, pd.DataFrame(skipped, columns=SKIP_COLUMNS),
                         pd.DataFrame(notes, columns=SKIP_COLUMNS))


def swap_ab(frame: pd.DataFrame) -> pd.DataFrame:
    """Exchange responses (and models) A and B; labels A<->B follow, tie stays tie."""
    out = frame.copy()
    out["response_a"], out["response_b"] = frame["response_b"], frame["response_a"]
    if "model_a" in frame and "model_b" in frame:
        out["model_a"], out["model_b"] = frame["model_b"], frame["model_a"]
    if "label" in frame:
        out["label"] = frame["label"].map({0: 1, 1: 0, 2: 2, -1: -1}).astype(np.int64)
    if "target" in frame:
        out["target"] = frame["target"].map(lambda t: None if t is None else [t[1], t[0], t[2]])
    return out


def assign_folds(frame: pd.DataFrame, n_folds: int = 5, seed: int = 42) -> np.ndarray:
    """Fold index per row: stratified by label, grouped by prompt text.

    The same prompt (all turns joined) never lands in two folds, so a model never
    sees, at validation, a prompt it was trained on.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    groups = frame["prompt"].map(lambda turns: "\x1e".join(turns)).factorize()[0]
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise ValueError(f"only {n_groups} distinct prompts for {n_folds} folds")
    folds = np.full(len(frame), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(frame)), frame["label"], groups)):
        folds[held] = k
    return folds


def load_tables(paths: Sequence[str | Path], labelled: bool) -> Conversations:
    """Parse and concatenate several tables; ids must be unique across all of them."""
    parts = [load_conversations(p, labelled=labelled) for p in paths]
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    dup = frame["id"][frame["id"].duplicated(keep=False)]
    if len(dup):
        raise DataError(f"ids repeated across {[str(p) for p in paths]}: {sorted(set(dup.tolist()), key=str)[:20]}")
    def report(attr):
        return pd.concat([getattr(p, attr).assign(source=str(path)) for p, path in zip(parts, paths)],
                         ignore_index=True)
    return Conversations(frame, report("skipped"), report("notes"))


def source_rows(sources: Sequence[Path], ids: Sequence, labelled: bool) -> pd.DataFrame:
    """The parsed rows (turn lists) of ``ids``, re-read from the tables ``sources`` (in ``ids``' order)."""
    frame = load_tables([Path(p) for p in sources], labelled=labelled).frame.set_index("id")
    return frame.loc[list(ids)].reset_index()
