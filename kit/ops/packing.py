"""Budgeted packing of a multi-turn (prompt, response A, response B) conversation.

A packed sequence is::

    <special prefix> [omitted-note] TURN TURN ... [omitted-note] QUESTION <special suffix>
    TURN = <prompt framing> prompt <A framing> response_a <B framing> response_b

Guarantees of :meth:`Packer.pack_ids` (and so of :meth:`Packer.pack`):

* ``len(input_ids) <= config.max_length`` — always.
* At least one turn is kept; kept turns are contiguous and in their original order
  (the latest ones with ``keep="last"``, the first ones with ``keep="first"``).
* Every kept turn shows its prompt and both responses: the content budget is shared
  by capped water-filling with weights ``shares`` (prompt, A, B), so a field that
  needs less than its share hands the rest to the others.
* A turn beyond the first is added only if, with it, every kept prompt keeps
  ``min(len, min_prompt_tokens)`` tokens and every kept response
  ``min(len, min_response_tokens)`` — more turns never starve the responses.
* Every field that is cut ends (``cut="end"``) or is split (``cut="middle"``) with the
  visible ``marker``; dropped turns are announced by ``omitted_note``.
* Deterministic: the same input gives the same ids.

``Packed.retention`` holds, per field, the tokens kept and the tokens in total (all
turns), and the turns kept and in total.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import pandas as pd
from tqdm import tqdm  # text lines: they stay readable in executed notebooks (a widget saves as "0%")

from ..core.errors import SettingsError
from ..core.schema import FIELDS
from .chat import chat_frame, chat_turn_framing, encode_text, require_chat_template

SIDE_FIELDS = ("prompt", "response")  # side=True: one response and its prompt (pairwise head)


@dataclass(frozen=True)
class PackConfig:
    max_length: int = 512
    shares: tuple[float, float, float] = (0.2, 0.4, 0.4)  # prompt, response A, response B
    keep: str = "last"  # which end of the conversation survives: "last" or "first" turns
    cut: str = "end"  # "end": keep a field's beginning; "middle": keep its head and tail
    min_prompt_tokens: int = 16
    min_response_tokens: int = 32
    marker: str = " (...)"
    omitted_note: str = "\n(earlier turns omitted)\n"
    prompt_template: str = "\n\n<prompt>: {text}"
    response_a_template: str = "\n<response_a>: {text}"
    response_b_template: str = "\n<response_b>: {text}"
    question: str = "\n\nWhich response do people prefer, a or b, or is it a tie?"
    # one side (prompt + one response) for the pairwise head: the prompt gets at most a third
    side_shares: tuple[float, float] = (1.0, 2.0)  # prompt, response
    response_template: str = "\n<response>: {text}"
    side_question: str = "\n\nHow good is this response?"
    # the backbone's chat template around the text (kit.ops.chat): a side becomes user turns (prompts) and
    # assistant turns (responses), its question dropped; one joint sequence becomes one user turn with the
    # assistant's turn opened after it. False: plain text in the special-token frame
    chat_template: bool = False

    def __post_init__(self):
        if not isinstance(self.max_length, int) or self.max_length <= 0:
            raise ValueError(f"max_length must be a positive int, got {self.max_length!r}")
        for name, n in (("shares", 3), ("side_shares", 2)):
            shares = tuple(float(s) for s in getattr(self, name))
            if len(shares) != n or any(not math.isfinite(s) or s <= 0 for s in shares):
                raise ValueError(f"{name} must be {n} positive numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, shares)
        if self.keep not in ("last", "first"):
            raise ValueError(f"keep must be 'last' or 'first', got {self.keep!r}")
        if self.cut not in ("end", "middle"):
            raise ValueError(f"cut must be 'end' or 'middle', got {self.cut!r}")
        for name in ("prompt_template", "response_a_template", "response_b_template", "response_template"):
            if getattr(self, name).count("{text}") != 1:
                raise ValueError(f"{name} must contain exactly one '{{text}}'")
        if self.min_prompt_tokens < 0 or self.min_response_tokens < 0:
            raise ValueError("min_prompt_tokens and min_response_tokens must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Packed:
    input_ids: list[int]
    retention: dict = field(default_factory=dict)
    kept_turns: list[int] = field(default_factory=list)  # original turn indices, in order
    kept_tokens: list[tuple[int, int, int]] = field(default_factory=list)  # per kept turn: P, A, B


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer wraps a single sequence in: (prefix, suffix).

    Found by encoding a probe text with and without special tokens. For decoders
    whose pad token is their EOS, a trailing EOS is dropped: right-padded
    last-token pooling must read a content token, not a pad look-alike.
    """
    probe = "hello world"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            prefix, suffix = list(full[:start]), list(full[start + len(bare):])
            break
    else:  # pragma: no cover - no tokenizer seen does this
        raise ValueError("cannot locate the text inside the tokenizer's special-token frame")
    pad = tokenizer.pad_token_id
    if suffix and pad is not None and suffix[-1] == pad and pad == tokenizer.eos_token_id:
        suffix = suffix[:-1]
    return prefix, suffix


def _water_fill(sizes: Sequence[int], weights: Sequence[float], budget: int) -> list[int]:
    """Integer allocation a_i <= sizes[i], sum(a) == min(budget, sum(sizes)), max-min fair
    in a_i / weights[i] (each cell gets min(size, level * weight), level as high as fits)."""
    n = len(sizes)
    if budget >= sum(sizes):
        return list(sizes)
    if budget <= 0:
        return [0] * n
    alloc = [0] * n
    order = sorted(range(n), key=lambda i: sizes[i] / weights[i])
    remaining, weight_left = budget, sum(weights)
    for pos, i in enumerate(order):
        level = remaining / weight_left
        if sizes[i] <= level * weights[i]:
            alloc[i] = sizes[i]
            remaining -= sizes[i]
            weight_left -= weights[i]
            continue
        # every cell from here on is capped by the level, not by its size
        rest = order[pos:]
        for j in rest:
            alloc[j] = int(math.floor(level * weights[j]))
        left = remaining - sum(alloc[j] for j in rest)
        for j in sorted(rest, key=lambda j: -weights[j]):  # rounding leftovers, heaviest first
            if left <= 0:
                break
            if alloc[j] < sizes[j]:
                alloc[j] += 1
                left -= 1
        break
    return alloc


class Packer:
    """Packs conversations for one tokenizer; see the module docstring for guarantees.

    ``side=False`` packs (prompt, response A, response B) turns into one sequence (joint
    head); ``side=True`` packs (prompt, one response) turns — one side of the pair, for the
    pairwise head — with ``side_shares``, ``response_template`` and ``side_question``. The
    guarantees are the same for both (the minimum per response applies to the one response).
    """

    def __init__(self, tokenizer, config: PackConfig | None = None, side: bool = False):
        self.tokenizer = tokenizer
        self.config = cfg = config or PackConfig()
        self.side = side
        self.fields = SIDE_FIELDS if side else FIELDS
        templates = (("prompt_template", "response_template") if side
                     else ("prompt_template", "response_a_template", "response_b_template"))
        self.prefix, self.suffix = special_frame(tokenizer)
        self.framing = []
        for name in templates:
            before, after = getattr(cfg, name).split("{text}")
            self.framing.append((self._encode(before), self._encode(after)))
        self.marker = self._encode(cfg.marker)
        self.omitted = self._encode(cfg.omitted_note)
        self.question = self._encode(cfg.side_question if side else cfg.question)
        if cfg.chat_template:  # the template writes its own special tokens (BOS) and turn markers
            name = getattr(tokenizer, "name_or_path", None) or "this backbone"
            if side:
                turns = chat_turn_framing(tokenizer, name)
                self.prefix, self.suffix, self.question = turns.system, [], []
                self.framing = [(turns.user_open, turns.user_close), ([], turns.assistant_close)]
            else:
                require_chat_template(tokenizer, name)
                self.prefix, self.suffix = chat_frame(tokenizer)
        self.turn_cost = sum(len(b) + len(a) for b, a in self.framing)
        self.frame_cost = len(self.prefix) + len(self.suffix) + len(self.question)
        # the smallest budget that still shows one token of each field of one turn,
        # each cut, after a note that other turns were dropped
        self.min_length = (self.frame_cost + len(self.omitted) + self.turn_cost
                           + len(self.fields) * (1 + len(self.marker)))
        if cfg.max_length < self.min_length:
            raise SettingsError(f"max_length {cfg.max_length} is too small for this tokenizer and framing: at least "
                                f"{self.min_length} tokens are needed; pass --max-length {self.min_length} or more "
                                f"(notebook MAX_LENGTH, max_length= in Python)")
        self._weights = cfg.side_shares if side else cfg.shares
        self._minimum = (cfg.min_prompt_tokens,) + (cfg.min_response_tokens,) * (len(self.fields) - 1)

    def _encode(self, text: str) -> list[int]:
        return encode_text(self.tokenizer, text)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts in one (parallel, Rust-side) tokenizer call."""
        if not texts:
            return []
        out = self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [list(ids) for ids in out]

    # -- core ---------------------------------------------------------------------------
    def _allocate(self, sizes: list[list[int]], turns: list[int], n_turns: int):
        """Allocation for the kept `turns`, or None when their framing alone does not fit."""
        cfg = self.config
        budget = cfg.max_length - self.frame_cost - self.turn_cost * len(turns)
        if len(turns) < n_turns:
            budget -= len(self.omitted)
        cells = [(t, f) for t in turns for f in range(len(self.fields))]
        size = [sizes[t][f] for t, f in cells]
        weights = [self._weights[f] for _, f in cells]
        if budget >= sum(size):
            return dict(zip(cells, size))
        m = len(self.marker)
        # pass 1 reserves a marker for every non-empty cell, so it always fits; pass 2
        # reserves markers only for the cells pass 1 cut and hands the rest to content.
        # Pass 2 is kept only if it cuts no cell that pass 1 left whole (integer rounding
        # can, rarely), so every cut cell's marker is paid for.
        first_budget = budget - m * sum(1 for s in size if s > 0)
        if first_budget < 0:
            return None
        first = _water_fill(size, weights, first_budget)
        cut_first = {i for i, (a, s) in enumerate(zip(first, size)) if a < s}
        second = _water_fill(size, weights, budget - m * len(cut_first))
        cut_second = {i for i, (a, s) in enumerate(zip(second, size)) if a < s}
        return dict(zip(cells, second if cut_second <= cut_first else first))

    def _meets_minimum(self, alloc: dict, sizes) -> bool:
        return all(a >= min(sizes[t][f], self._minimum[f]) for (t, f), a in alloc.items())

    def _cut(self, ids: list[int], keep: int) -> list[int]:
        if keep >= len(ids):
            return list(ids)
        if self.config.cut == "end" or keep < 2:
            return list(ids[:keep]) + self.marker
        head = (keep + 1) // 2
        return list(ids[:head]) + self.marker + list(ids[len(ids) - (keep - head):])

    def pack_ids(self, *fields: Sequence[Sequence[int]]) -> Packed:
        """Pack token-id turn lists (equal lengths, >= 1 turn) under the budget: (prompt,
        response_a, response_b), or (prompt, response) with ``side=True``."""
        n, nf = len(fields[0]) if fields else 0, len(self.fields)
        if len(fields) != nf or n == 0 or any(len(f) != n for f in fields):
            raise ValueError(f"need {nf} fields of >= 1 aligned turn, got {[len(f) for f in fields]}")
        sizes = [[len(fields[f][t]) for f in range(nf)] for t in range(n)]
        order = list(range(n - 1, -1, -1)) if self.config.keep == "last" else list(range(n))

        kept, alloc = [], None
        for t in order:
            candidate = sorted(kept + [t])
            trial = self._allocate(sizes, candidate, n)
            if trial is None or (kept and not self._meets_minimum(trial, sizes)):
                break
            kept, alloc = candidate, trial
        assert alloc is not None, "min_length check guarantees the first turn fits"

        # a chat side ends with its last assistant turn (what last-token pooling reads): the note goes first
        note_first = self.config.keep == "last" or (self.side and self.config.chat_template)
        ids = list(self.prefix)
        if len(kept) < n and note_first:
            ids += self.omitted
        for t in kept:
            for f in range(nf):
                before, after = self.framing[f]
                ids += before + self._cut(fields[f][t], alloc[(t, f)]) + after
        if len(kept) < n and not note_first:
            ids += self.omitted
        ids += self.question + self.suffix
        assert len(ids) <= self.config.max_length

        retention = {"n_tokens": len(ids), "turns_kept": len(kept), "turns_total": n}
        for f, name in enumerate(self.fields):
            retention[f"{name}_kept"] = sum(alloc[(t, f)] for t in kept)
            retention[f"{name}_total"] = sum(sizes[t][f] for t in range(n))
        return Packed(ids, retention, kept, [tuple(alloc[(t, f)] for f in range(nf)) for t in kept])

    def pack(self, *fields: Sequence[str]) -> Packed:
        """Pack one conversation given as text turns (the fields of :meth:`pack_ids`)."""
        encoded = self.encode_many([t for f in fields for t in f])
        out, start = [], 0
        for f in fields:
            out.append(encoded[start:start + len(f)])
            start += len(f)
        return self.pack_ids(*out)


def encoded_rows(packer: Packer, frame: pd.DataFrame, desc: str = "pack", chunk: int = 256):
    """(id, prompt turn ids, response A turn ids, response B turn ids) per row, in order; one
    (parallel, Rust-side) tokenizer call per chunk of rows, with a progress bar."""
    with tqdm(total=len(frame), desc=desc, unit="row") as bar:
        for start in range(0, len(frame), chunk):
            part = frame.iloc[start:start + chunk]
            texts, spans = [], []
            for turns in zip(part["prompt"], part["response_a"], part["response_b"]):
                spans.append([])
                for field_turns in turns:
                    spans[-1].append((len(texts), len(texts) + len(field_turns)))
                    texts.extend(field_turns)
            ids = packer.encode_many(texts)
            for rid, span in zip(part["id"], spans):
                yield (rid, *(ids[s:e] for s, e in span))
            bar.update(len(part))
