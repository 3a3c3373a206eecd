"""Extra preference data in the competition's columns: chosen/rejected pairs become A/B rows.

Formats, detected from the records (a file's suffix only says how to read them):

* ``hh-rlhf`` — Anthropic HH-RLHF: ``{"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": …}``,
  two whole transcripts that share every turn but the last assistant reply;
* ``messages`` — UltraFeedback-style: ``{"prompt": …, "chosen": [{"role", "content"}, …],
  "rejected": [...]}`` (the message lists hold the whole conversation);
* ``pairs`` — plain ``prompt`` / ``chosen`` / ``rejected`` text columns (one turn).

Read from ``.jsonl`` / ``.jsonl.gz`` / ``.json`` (records) or CSV / parquet (columns).

Guarantees of :func:`to_competition_rows`:

* one output row per input record, in order, with the competition's columns (id, prompt,
  response_a, response_b as JSON lists of turns, winner_model_a/b/tie); the shared turns
  go to ``prompt`` (user turns) and to both responses (earlier assistant turns), the two
  differing final replies to ``response_a`` / ``response_b``;
* which reply is A is decided by a coin seeded by ``seed`` (both labels occur; the same
  file and seed give the same table); no ties (chosen/rejected data has none);
* a record that cannot be split into a shared prefix and two replies keeps its row with the
  reason in ``READER_PROBLEM``: :func:`kit.data.ingest.load_conversations` reports it as a skipped
  row (row, id, column ``chosen/rejected``, problem) — never dropped silently;
* ids: the record's ``id`` when it has one, else ``<file stem>-<record index>``.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

READER_PROBLEM = "_reader_problem"  # a column only this module writes
RECORD_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


def is_record_file(path: Path) -> bool:
    return any(path.name.lower().endswith(s) for s in RECORD_SUFFIXES)


def read_records(path: Path) -> list[dict]:
    """Every record of a JSON-lines file (gzip or not) or a JSON array; a line that is not a
    JSON object becomes a record holding only the reason (:data:`READER_PROBLEM`)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        items = json.loads(stripped)
        return [x if isinstance(x, dict) else {READER_PROBLEM: f"not a JSON object: {type(x).__name__}"}
                for x in items]
    records = []
    for n, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            records.append({READER_PROBLEM: f"line {n + 1}: bad JSON ({err.msg} at char {err.pos})"})
            continue
        except RecursionError:  # a line nested deeper than the parser goes: that record is unusable, not the run
            records.append({READER_PROBLEM: f"line {n + 1}: JSON nested too deeply to be a preference record"})
            continue
        records.append(item if isinstance(item, dict) else {READER_PROBLEM: f"line {n + 1}: not a JSON object"})
    return records


def detect_format(records: list[dict]) -> str | None:
    """"hh-rlhf", "messages", "pairs", or None (not chosen/rejected data), from the first
    record that has a ``chosen`` field."""
    for rec in records:
        chosen = rec.get("chosen")
        if chosen is None:
            continue
        if isinstance(chosen, str) and "prompt" not in rec and _HH_TURN.search(chosen):
            return "hh-rlhf"
        if isinstance(chosen, (list, np.ndarray)):
            return "messages"
        if isinstance(chosen, str):
            return "pairs"
    return None


def _hh_turns(transcript) -> list[tuple[str, str]]:
    if not isinstance(transcript, str):
        raise ValueError(f"expected a transcript string, got {type(transcript).__name__}")
    parts = _HH_TURN.split(transcript)
    if parts[0].strip():
        raise ValueError("text before the first 'Human:' / 'Assistant:' turn")
    return [("user" if role == "Human" else "assistant", text.strip()) for role, text in zip(parts[1::2], parts[2::2])]


def _message_turns(messages) -> list[tuple[str, str]]:
    if not isinstance(messages, (list, np.ndarray)):
        raise ValueError(f"expected a list of messages, got {type(messages).__name__}")
    turns = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError("a message without role/content")
        role = {"human": "user", "gpt": "assistant"}.get(m["role"], m["role"])
        if role == "system":  # kept as context of the first user turn
            role = "user"
        turns.append((role, "" if m["content"] is None else str(m["content"])))
    merged: list[tuple[str, str]] = []  # consecutive turns of one role (a system turn, then the user's) joined
    for role, text in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + text)
        else:
            merged.append((role, text))
    return merged


def split_pair(chosen: list[tuple[str, str]], rejected: list[tuple[str, str]]):
    """(prompt turns, earlier assistant turns, chosen reply, rejected reply) of two transcripts
    that share every turn but the last assistant reply; ValueError naming why not."""
    if not chosen or not rejected:
        raise ValueError("an empty transcript")
    if chosen[-1][0] != "assistant" or rejected[-1][0] != "assistant":
        raise ValueError("a transcript does not end with an assistant reply")
    if len(chosen) != len(rejected):
        raise ValueError(f"the transcripts have {len(chosen)} and {len(rejected)} turns: not one shared prefix")
    if chosen[:-1] != rejected[:-1]:
        first = next(i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b)
        raise ValueError(f"the transcripts differ at turn {first + 1} of {len(chosen)}, not only in the last reply")
    roles = [r for r, _ in chosen]
    if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
        raise ValueError("turns do not alternate user / assistant, starting with the user")
    if chosen[-1][1] == rejected[-1][1]:
        raise ValueError("the chosen and rejected replies are identical")
    prefix = chosen[:-1]
    return ([t for r, t in prefix if r == "user"], [t for r, t in prefix if r == "assistant"],
            chosen[-1][1], rejected[-1][1])


def to_competition_rows(records: list[dict], fmt: str, stem: str, seed: int = 0) -> pd.DataFrame:
    """The records as competition rows (see the module docstring)."""
    coins = np.random.default_rng(seed).integers(0, 2, size=len(records))  # 1: the chosen reply is B
    rows = []
    for i, (rec, coin) in enumerate(zip(records, coins)):
        rid = str(rec["id"]) if rec.get("id") not in (None, "") else f"{stem}-{i}"
        row = {"id": rid, "prompt": None, "response_a": None, "response_b": None,
               "winner_model_a": 0, "winner_model_b": 0, "winner_tie": 0, READER_PROBLEM: rec.get(READER_PROBLEM)}
        if row[READER_PROBLEM] is None:
            try:
                if "chosen" not in rec or "rejected" not in rec:
                    raise ValueError(f"no {'chosen' if 'chosen' not in rec else 'rejected'} field")
                if fmt == "hh-rlhf":
                    prompt, earlier, good, bad = split_pair(_hh_turns(rec["chosen"]), _hh_turns(rec["rejected"]))
                elif fmt == "messages":
                    prompt, earlier, good, bad = split_pair(_message_turns(rec["chosen"]),
                                                            _message_turns(rec["rejected"]))
                else:
                    if not all(isinstance(rec.get(k), str) for k in ("prompt", "chosen", "rejected")):
                        raise ValueError("prompt, chosen and rejected must be text")
                    if rec["chosen"] == rec["rejected"]:
                        raise ValueError("the chosen and rejected replies are identical")
                    prompt, earlier, good, bad = [rec["prompt"]], [], rec["chosen"], rec["rejected"]
                a, b = (bad, good) if coin else (good, bad)
                row.update(prompt=json.dumps(prompt), response_a=json.dumps(earlier + [a]),
                           response_b=json.dumps(earlier + [b]), winner_model_a=int(not coin),
                           winner_model_b=int(coin))
            except ValueError as err:
                row[READER_PROBLEM] = str(err)
        rows.append(row)
    return pd.DataFrame(rows)


def read_preference_file(path: Path, seed: int = 0) -> pd.DataFrame | None:
    """A chosen/rejected file as competition rows; None when ``path`` holds no chosen/rejected
    data (a competition table read as usual)."""
    if is_record_file(path):
        records = read_records(path)
    else:
        return None
    fmt = detect_format(records)
    problems = [r[READER_PROBLEM] for r in records if READER_PROBLEM in r]
    if fmt is None and problems and len(problems) == len(records):  # nothing to read at all: say why
        raise ValueError(f"none of its {len(records)} record(s) is readable (first: {problems[0]})")
    if fmt is None:  # records already in the competition's columns
        return pd.DataFrame([{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()}
                             for r in records])
    stem = path.name.split(".")[0]
    return to_competition_rows(records, fmt, stem, seed)


def convert_frame(frame: pd.DataFrame, path: Path, seed: int = 0) -> pd.DataFrame:
    """A CSV / parquet table with chosen/rejected columns as competition rows (else as is)."""
    if not {"chosen", "rejected"} <= set(frame.columns):
        return frame
    records = frame.to_dict("records")
    fmt = detect_format(records) or "pairs"
    return to_competition_rows(records, fmt, path.name.split(".")[0], seed)
