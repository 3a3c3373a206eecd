"""Backbones as three-way sequence classifiers, with LoRA (QLoRA on CUDA) adapters.

* Any local Hugging Face folder or preset loads as ``AutoModelForSequenceClassification``
  with ``num_labels=3`` (0 = A, 1 = B, 2 = tie).
* Decoders get a pad token (their EOS when they have none) and right padding: the
  classifier reads the last non-pad token.
* ``load_in_4bit`` gives nf4 weights through bitsandbytes, compute in bf16 where the GPU
  supports it, fp16 otherwise (T4) and fp32 on CPU; the new head is kept out of
  quantisation (``llm_int8_skip_modules``) and trained in fp32. bitsandbytes >= 0.48 runs
  nf4 on CPU too: the same QLoRA code path as on a GPU (the tests run it on tiny Gemma-2
  and Llama models), saving memory but not time — a warning says so.
* The head is trained and saved with the adapter (peft ``modules_to_save``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .presets import Preset, PresetError, load_tokenizer, model_path

HEAD_MODULES = ["classifier", "score"]  # BERT-style and decoder-style classification heads
LABELS = {0: "A", 1: "B", 2: "tie"}


def compute_dtype() -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on older ones (T4), fp32 on CPU."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def check_preset_runtime(preset: Preset) -> None:
    """Warn when a 4-bit preset runs on CPU: it works, but is slower than fp32 there."""
    if preset.load_in_4bit and not torch.cuda.is_available():
        import warnings
        warnings.warn(f"preset {preset.name!r} loads in 4-bit and no CUDA GPU is visible: nf4 on CPU saves memory, "
                      f"not time (fp32 is faster here). For full precision pass --no-4bit (CLI) or LOAD_IN_4BIT = "
                      f"False (notebooks)", RuntimeWarning, stacklevel=2)


def loading_kwargs(preset: Preset, device_map=None, skip_modules=None) -> dict:
    """``from_pretrained`` keyword arguments for the preset: attention implementation; 4-bit nf4
    (`skip_modules` left unquantised) on the current GPU — or on the CPU where there is none —
    or fp32 (mixed precision on GPU comes from autocast)."""
    from transformers import BitsAndBytesConfig

    kwargs = {}
    if preset.attn_implementation:
        kwargs["attn_implementation"] = preset.attn_implementation
    if preset.load_in_4bit:
        dtype = compute_dtype()
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=skip_modules)
        kwargs["dtype"] = dtype
        if device_map is None:
            device_map = {"": torch.cuda.current_device() if torch.cuda.is_available() else "cpu"}
        kwargs["device_map"] = device_map
    else:
        kwargs["dtype"] = torch.float32
        if device_map is not None:
            kwargs["device_map"] = device_map
    return kwargs


def load_base_classifier(preset: Preset, device_map=None):
    """(model, tokenizer) for the preset's backbone with a fresh 3-way head."""
    from transformers import AutoModelForSequenceClassification

    check_preset_runtime(preset)
    path = model_path(preset)
    tokenizer = load_tokenizer(preset)
    kwargs = {"num_labels": 3, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()},
              **loading_kwargs(preset, device_map, skip_modules=HEAD_MODULES)}
    model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def head_module_names(model) -> list[str]:
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    return [h for h in HEAD_MODULES if h in names]


def lora_config(preset: Preset, model):
    from peft import LoraConfig, TaskType

    if tuple(preset.target_modules) == ("all-linear",):
        targets = "all-linear"  # peft: every linear layer but the head
    else:
        present = {n.split(".")[-1] for n, _ in model.named_modules()}
        missing = [m for m in preset.target_modules if m not in present]
        if missing:
            raise PresetError(f"target module(s) {missing} not found in {preset.name!r}'s backbone")
        targets = list(preset.target_modules)
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=preset.lora_r, lora_alpha=preset.lora_alpha,
                      lora_dropout=preset.lora_dropout, target_modules=targets,
                      layers_to_transform=(list(preset.layers_to_transform)
                                           if preset.layers_to_transform is not None else None),
                      modules_to_save=head_module_names(model))


def build_lora_model(preset: Preset, device_map=None):
    """(peft model, tokenizer): backbone frozen, LoRA on `target_modules`, head trainable."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    model, tokenizer = load_base_classifier(preset, device_map)
    if preset.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=preset.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, lora_config(preset, model))
    return model, tokenizer


def attach_trained_adapter(model, model_dir: str | Path):
    """The base `model` with a train-stage output's saved adapter (LoRA + heads), in eval mode."""
    from peft import PeftModel

    adapter = Path(model_dir) / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"no trained adapter in {model_dir} (expected {adapter}/adapter_config.json)")
    model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    model.eval()
    return model


def load_trained(model_dir: str | Path, preset: Preset, device_map=None):
    """(model, tokenizer) from a train-stage output: base backbone + saved adapter and head."""
    model, tokenizer = load_base_classifier(preset, device_map)
    return attach_trained_adapter(model, model_dir), tokenizer


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
