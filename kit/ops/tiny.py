"""Tiny random-init stand-ins for the GPU backbones: the real architectures, built from config.

``make_tiny_backbone("gemma2", folder)`` writes a Hugging Face folder holding a 2-layer,
hidden-64 Gemma-2 (eager attention, attention and final logit soft-capping as in the 9B)
or Llama model with random weights and the embedded SmolLM2 tokenizer (its vocabulary
sized to match). Nothing is downloaded. Point a GPU preset at it (``model_dir=...``) and
every code path of the real member runs in seconds on a CPU: 4-bit nf4 loading with the
head skipped, ``prepare_model_for_kbit_training``, LoRA on the preset's target modules,
the Trainer, saving, reloading onto a 4-bit base, inference. The tests use it; so can a
Kaggle user who wants to rehearse a notebook before spending GPU hours. Its predictions
mean nothing.
"""
from __future__ import annotations

from pathlib import Path

from ..core.presets import resolve_preset
from .backbones import model_path

ARCHITECTURES = ("gemma2", "llama")


def make_tiny_backbone(arch: str, folder: str | Path, *, pad_token: bool = True, seed: int = 0,
                       layers: int = 2, hidden: int = 64) -> Path:
    """Write the tiny model + tokenizer to ``folder``; ``pad_token=False`` saves a tokenizer
    without one (as Llama-3's), which the kit must cope with. Returns the folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma2Config, LlamaConfig


    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(model_path(resolve_preset("smollm2")))
    if not pad_token:
        tokenizer.pad_token = None
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                  max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id if pad_token else None)
    if arch == "gemma2":
        config = Gemma2Config(**common, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                              query_pre_attn_scalar=hidden // 4, sliding_window=64)
        config._attn_implementation = "eager"
    else:
        config = LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
