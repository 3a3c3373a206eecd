"""The ``zeroshot`` member type: an un-finetuned causal LM as a judge — the paper's comparison
("larger models used as zero-shot judges") at the scale of the embedded decoders.

* Each row becomes one chat turn asking which answer is better (the conversation packed under
  the token budget exactly as for the joint head: prompt and both answers always shown, turns
  cut with a marker), wrapped in the backbone's chat template with the assistant's turn opened.
* The verdict is read from the next-token logits: each class's logit is the log-sum-exp of the
  logits of its single-token spellings ("A"/" A", "B"/" B", "tie"/" tie"/"Tie"...), so the
  softmax of the three is the judge's probability of answering A, B or tie.
* Position-dependent, like any judge: rows are cached in both orders and the infer stage
  averages the swapped pass (swap TTA), A's and B's probabilities exchanged.
* Nothing is trained: ``fit`` records the verdict tokens (``judge.json``) and the parameter count;
  the infer stage scores the held-out rows (both orders). 0 trainable parameters.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..core.errors import PresetError
from ..core.presets import Preset
from ..core.settings import TrainSettings
from ..ops.backbones import check_preset_runtime, load_tokenizer, loading_kwargs, model_path
from ..ops.batching import batched_forward
from ..ops.chat import chat_frame, has_chat_template
from ..ops.hf_training import count_parameters
from ..ops.packing import PackConfig, Packer
from .base import Encoder, FitContext, Fitted, MemberType, Predictor, backbone_predictor, register
from .joint import pack_frame
from ..core.files import read_json

JUDGE_FILE = "judge.json"
VERDICTS = {"A": ("A", " A"), "B": ("B", " B"), "tie": ("tie", " tie", "Tie", " Tie", "TIE")}
JUDGE_PACK = {  # the question a judge is asked (the packing's guarantees are unchanged)
    "prompt_template": "[Question]\n{text}",
    "response_a_template": "\n\n[Answer A]\n{text}",
    "response_b_template": "\n\n[Answer B]\n{text}",
    "question": "\n\nWhich answer is better, A or B? If they are equally good, say tie. "
                "Reply with one word: A, B or tie.",
}
def verdict_token_ids(tokenizer) -> dict[str, list[int]]:
    """For each class, the ids of its spellings that are one token; a class with none is an error."""
    ids = {}
    for verdict, spellings in VERDICTS.items():
        single = sorted({t[0] for s in spellings if len(t := tokenizer(s, add_special_tokens=False)["input_ids"]) == 1})
        if not single:
            raise PresetError(f"the tokenizer has no one-token spelling of the verdict {verdict!r} ({spellings}): "
                              f"this backbone cannot be read as a zero-shot judge")
        ids[verdict] = single
    return ids


class JudgePacker:
    """A :class:`kit.ops.packing.Packer` for the judge's question, inside the chat frame:
    ``len(before + packed + after) <= max_length`` — always."""

    def __init__(self, tokenizer, max_length: int, pack: dict | None = None):
        self.before, self.after = chat_frame(tokenizer)
        budget = max_length - len(self.before) - len(self.after)
        given = {k: v for k, v in (pack or {}).items() if k != "max_length"}  # the whole budget is max_length
        inner = replace(PackConfig(max_length=max(budget, 1)), **{**JUDGE_PACK, **given})
        self.packer = Packer(tokenizer, inner)
        config = replace(inner, max_length=max_length)  # what meta.json records: the whole sequence's budget
        if has_chat_template(tokenizer):  # the template writes its own special tokens (BOS)
            self.packer.prefix, self.packer.suffix = [], []
        self.tokenizer, self.config = tokenizer, config

    def pack_ids(self, prompt, a, b):
        packed = self.packer.pack_ids(prompt, a, b)
        packed.input_ids = self.before + list(packed.input_ids) + self.after
        return packed

    def __getattr__(self, name):  # encode_many and the rest: the inner packer's
        return getattr(self.packer, name)


def load_judge(model_dir, preset: Preset, device_map=None):
    """(causal LM in eval mode, tokenizer): the preset's backbone as it is — no adapter, no head."""
    from transformers import AutoModelForCausalLM

    check_preset_runtime(preset)
    tokenizer = load_tokenizer(preset)
    model = AutoModelForCausalLM.from_pretrained(model_path(preset), **loading_kwargs(preset, device_map))
    return model.eval(), tokenizer


def verdict_logits(model, input_ids, pad_id: int, verdicts: dict[str, list[int]], **options) -> np.ndarray:
    """(n, 3) logits (A, B, tie): each class's log-sum-exp of its tokens' next-token logits after
    the last real token of each row (rows are right-padded)."""
    columns = [torch.as_tensor(verdicts[v]) for v in ("A", "B", "tie")]

    decoder, head = model.get_decoder(), model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)

    def forward(ids, mask):
        # the vocabulary projection of the last real position only (not of every position: 10x less work)
        last = mask.sum(1) - 1
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[torch.arange(len(ids)), last]
        logits = head(hidden).float()
        if cap:  # Gemma's final soft-capping, as the model's own forward applies it
            logits = torch.tanh(logits / cap) * cap
        return torch.stack([torch.logsumexp(logits[:, c.to(logits.device)], dim=1) for c in columns], dim=1)

    device = options.pop("device", None) or next(model.parameters()).device
    return batched_forward(forward, input_ids, pad_id, device=device, width=3, **options)


@register
class ZeroShotMember(MemberType):
    name = "zeroshot"
    uses_backbone = True
    uses_tta = True  # a judge is position-dependent: the swapped pass is averaged in
    is_judge = True
    cache_columns = ("input_ids", "input_ids_swap")

    def encoder(self, preset: Preset, pack: dict | None = None) -> Encoder:
        packer = JudgePacker(load_tokenizer(preset), preset.max_length, pack)
        return Encoder(lambda frame, desc: pack_frame(packer, frame, desc=desc), packer.config)

    def fit(self, preset: Preset, train_rows: pd.DataFrame, held_rows: pd.DataFrame, settings: TrainSettings,
            context: FitContext) -> Fitted:
        self.check_cache(held_rows if len(held_rows) else train_rows, context.tokenized)
        started = time.time()
        model, tokenizer = load_judge(None, preset)
        verdicts = verdict_token_ids(tokenizer)
        _, total = count_parameters(model)
        # the held-out rows are scored by the infer stage, both orders averaged (a judge's direct pass
        # alone carries its position bias): scoring them here too would only add a third pass
        held_probs = None

        def save(folder: Path) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / JUDGE_FILE).write_text(json.dumps({"verdict_token_ids": verdicts, "trained": False}, indent=2))

        metrics = {"train_rows": 0, "trainable_params": 0, "total_params": total,
                   "train_seconds": time.time() - started, "zero_shot": True}
        return Fitted(save, held_probs, metrics)

    def load(self, model_dir: Path, preset: Preset, devices: Sequence[str] = ("cpu",)) -> Predictor:
        saved = read_json(Path(model_dir) / "adapter" / JUDGE_FILE, "rerun the train stage for this judge")
        verdicts = {k: [int(i) for i in v] for k, v in saved["verdict_token_ids"].items()}

        def score(model, frame, pad_id, swap=False, **options):
            column = "input_ids_swap" if swap else "input_ids"
            return verdict_logits(model, list(frame[column]), pad_id, verdicts, **options)

        return backbone_predictor(Path(model_dir), preset, devices, load_judge, score, ("input_ids",))
