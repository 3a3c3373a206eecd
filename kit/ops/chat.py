"""A backbone's chat template as packing frames: the token ids around user and assistant turns.

The packer (:mod:`kit.ops.packing`) works on token ids with fixed framing around each field, so a
chat template is read once, by rendering a probe conversation and splitting it at the probes —
never by re-rendering every row. Guarantees:

* :func:`chat_frame` — ``before + ids + after`` is exactly what the template renders for one user
  turn holding ``ids`` with the assistant's turn opened after it (the zero-shot judge's prompt);
  a tokenizer without a template gets a plain ``"Verdict:"`` cue.
* :func:`chat_turn_framing` — ``system + (user_open P user_close_assistant_open R assistant_close)*``
  is exactly what the template renders for alternating user/assistant turns ``P``, ``R``; a
  template that does not frame every turn alike is an error, never a silent approximation.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import PresetError

# placeholders no conversation contains: where the template puts each turn's content
PROBES = tuple(f"\u2063turn{i}\u2063" for i in range(4))


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (empty text: none)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def require_chat_template(tokenizer, name: str = "this backbone") -> None:
    """A one-line :class:`PresetError` (what to do) when the tokenizer has no chat template."""
    if not has_chat_template(tokenizer):
        raise PresetError(f"{name}: the tokenizer has no chat template, so chat_template packing cannot apply; "
                          f"pack plain text (drop chat_template from the packing options)")


def chat_frame(tokenizer) -> tuple[list[int], list[int]]:
    """Token ids before and after a user turn in the backbone's chat template, the assistant's turn
    opened after it; a tokenizer without a chat template gets a plain "Verdict:" cue instead."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template([{"role": "user", "content": PROBES[0]}], add_generation_prompt=True,
                                             tokenize=False)
        before, _, after = text.partition(PROBES[0])
    else:
        before, after = "", "\n\nVerdict:"
    return encode_text(tokenizer, before), encode_text(tokenizer, after)


@dataclass(frozen=True)
class TurnFraming:
    """Token ids of a chat template's framing: ``system`` once, then per turn
    ``user_open + prompt + user_close + response + assistant_close`` (``user_close`` also opens
    the assistant's turn)."""

    system: list[int]
    user_open: list[int]
    user_close: list[int]
    assistant_close: list[int]


def chat_turn_framing(tokenizer, name: str = "this backbone") -> TurnFraming:
    """The framing of alternating user/assistant turns in the tokenizer's chat template.

    Raises :class:`PresetError` (one line, what to do) when the tokenizer has no chat template or
    its template frames the second turn unlike the first (then per-turn packing would misstate it).
    """
    require_chat_template(tokenizer, name)
    messages = [{"role": role, "content": probe} for role, probe in zip(("user", "assistant") * 2, PROBES)]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    parts, rest = [], text
    for probe in PROBES:
        head, found, rest = rest.partition(probe)
        if not found:
            raise PresetError(f"{name}: the chat template drops or rewrites turn content, so chat_template packing "
                              f"cannot frame turns; pack plain text")
        parts.append(head)
    system_and_open, user_close, between, user_close_2, assistant_close = parts + [rest]
    # between = assistant_close + user_open (the second turn): the template must repeat itself
    user_open = between[len(assistant_close):] if between.startswith(assistant_close) else None
    if user_open is None or user_close != user_close_2 or not system_and_open.endswith(user_open):
        raise PresetError(f"{name}: the chat template frames the second turn unlike the first, so chat_template "
                          f"packing cannot frame turns one by one; pack plain text")
    system = system_and_open[:len(system_and_open) - len(user_open)]
    return TurnFraming(*(encode_text(tokenizer, t) for t in (system, user_open, user_close, assistant_close)))
