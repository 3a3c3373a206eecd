"""The QLoRA path every GPU user runs, executed here on CPU (bitsandbytes nf4 runs there):
tiny random-init Gemma-2 (eager attention, soft-capping) and Llama (no pad token) built from
config at the GPU presets, and SmolLM2 in 4-bit. nf4 load with the head skipped,
prepare_model_for_kbit_training, LoRA + head training through the Trainer, save, reload onto a
fresh 4-bit base, inference — for the joint and the pairwise head."""
import json
import warnings

import numpy as np
import pytest
import torch

from kit.stages.infer import infer_stage
from kit.ops.tiny import make_tiny_backbone
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from conftest import KAGGLE_TRAIN, PANDALM

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of 4-bit (on a GPU: the usual one)")


def _linear4bit_count(model) -> int:
    return sum(type(m).__name__ == "Linear4bit" for m in model.modules())


@pytest.fixture(scope="module")
def tiny_backbones(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    return {"gemma2-9b": make_tiny_backbone("gemma2", base / "gemma2"),
            "llama3-8b": make_tiny_backbone("llama", base / "llama", pad_token=False)}


@pytest.mark.parametrize("preset_name", ["gemma2-9b", "llama3-8b"])
@pytest.mark.parametrize("head", ["joint", "pairwise"])
def test_qlora_trains_saves_reloads_and_infers_on_cpu(tiny_backbones, preset_name, head, tmp_path):
    from kit.members import get_member_type
    from kit.core.presets import Preset

    folder = tiny_backbones[preset_name]
    tok = tmp_path / "tok"
    tokenize_stage(preset_name, [KAGGLE_TRAIN], "", max_length=96, max_rows=40, n_folds=2, out=tok,
                   model_dir=str(folder), member=head)
    with pytest.warns(RuntimeWarning, match="saves memory, not time"):
        res = train_stage(preset_name, 0, tokenized=tok, out=tmp_path / "model",
                          max_steps=2, batch_size=4, grad_accum=1, learning_rate=1e-3,
                          max_train_rows=8, evals_per_run=1)
    config = json.loads((res.out_dir / "config.json").read_text())
    assert config["preset"]["load_in_4bit"] and config["preset"]["member"] == head
    assert res.metrics["global_steps"] == 2 and np.isfinite(res.metrics["train_loss"])
    if preset_name == "gemma2-9b":
        assert config["preset"]["attn_implementation"] == "eager"

    # the reloaded model is nf4 with a full-precision head, and scores the held-out rows as trained
    preset = Preset.from_dict(config["preset"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model, tokenizer = get_member_type(head).load_model(res.out_dir, preset)
    assert _linear4bit_count(model) > 0
    # LoRA stays unmerged on nf4 weights (folding it in would requantise them)
    assert not any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "lora_A"))
    heads = [m for n, m in model.named_modules() if n.endswith(("score.modules_to_save.default",
                                                                "reward_head.modules_to_save.default"))]
    assert heads and all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32 for m in heads)
    assert tokenizer.pad_token is not None  # Llama's tokenizer has none: the kit gives it one
    rescored = infer_stage(res.out_dir, "oof", reuse_train_scores=False, tta=False).predictions
    trained = res.oof.set_index("id").loc[rescored["id"]]
    np.testing.assert_allclose(rescored[["p_a", "p_b", "p_tie"]].to_numpy(),
                               trained[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-4)
    assert rescored[["p_a", "p_b", "p_tie"]].std().max() > 1e-6  # row-dependent, not a constant


def test_smollm2_qlora_on_cpu(tmp_path):
    tok = tmp_path / "tok"
    tokenize_stage("smollm2", [PANDALM], "", max_length=64, max_rows=24, n_folds=2, out=tok, member="pairwise")
    with pytest.warns(RuntimeWarning, match="saves memory, not time"):
        res = train_stage("smollm2", 1, tokenized=tok, out=tmp_path / "model", load_in_4bit=True,
                          max_steps=2, batch_size=2, learning_rate=1e-3, max_train_rows=4,
                          max_eval_rows=6, evals_per_run=1)
    assert json.loads((res.out_dir / "config.json").read_text())["preset"]["load_in_4bit"]
    again = infer_stage(res.out_dir, "oof", reuse_train_scores=False, out=tmp_path / "oof.csv").predictions
    trained = res.oof.set_index("id")
    np.testing.assert_allclose(again.set_index("id").loc[trained.index, ["p_a", "p_b", "p_tie"]].to_numpy(),
                               trained[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-4)


def test_gemma3_270m_real_weights_qlora_on_cpu(tmp_path):
    """A real Gemma (Gemma-3-270M, exported once from its packaged GGUF) through the QLoRA path:
    nf4 load with eager attention, LoRA + pairwise head steps, save, reload onto a fresh 4-bit base,
    the held-out rows scored again as trained."""
    tok = tmp_path / "tok"
    tokenize_stage("gemma3-270m", [PANDALM], "", max_length=64, max_rows=16, n_folds=2, out=tok)
    with pytest.warns(RuntimeWarning, match="saves memory, not time"):
        res = train_stage("gemma3-270m", 0, tokenized=tok, out=tmp_path / "model", load_in_4bit=True,
                          max_steps=2, batch_size=2, learning_rate=1e-3, max_train_rows=4,
                          max_eval_rows=6, evals_per_run=1)
    config = json.loads((res.out_dir / "config.json").read_text())
    assert config["preset"]["load_in_4bit"] and config["preset"]["attn_implementation"] == "eager"
    assert res.metrics["global_steps"] == 2 and np.isfinite(res.metrics["train_loss"])
    assert 200e6 < res.metrics["total_params"] < 280e6  # 268M in fp32; nf4 packs two weights per stored element
    again = infer_stage(res.out_dir, "oof", reuse_train_scores=False, out=tmp_path / "oof.csv").predictions
    trained = res.oof.set_index("id")
    np.testing.assert_allclose(again.set_index("id").loc[trained.index, ["p_a", "p_b", "p_tie"]].to_numpy(),
                               trained[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-4)


def test_a_member_trained_in_4bit_scores_in_8bit(tiny_backbones, tmp_path):
    """The medal solutions' scoring lever: a member trained in 4-bit (QLoRA) scored with its backbone in
    int8 (bitsandbytes runs LLM.int8() on the CPU too): int8 layers, the same adapter, probabilities nearer
    the full-precision backbone's than nf4's are, and the predictions' record says how it was scored."""
    from kit.core.presets import Preset, quantized_as
    from kit.members import get_member_type
    tok = tmp_path / "tok"
    tokenize_stage("gemma2-9b", [KAGGLE_TRAIN], "", max_length=96, max_rows=40, n_folds=2, out=tok,
                   model_dir=str(tiny_backbones["gemma2-9b"]), member="joint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model_dir = train_stage("gemma2-9b", 0, tokenized=tok, out=tmp_path / "model",
                                max_steps=2, batch_size=4, learning_rate=1e-3,
                                max_train_rows=8, evals_per_run=1).out_dir
        scored = {q: infer_stage(model_dir, "oof", tta=False, quantization=q, out=tmp_path / f"{q}.csv")
                  for q in ("none", "8bit", "4bit")}
        preset = quantized_as(Preset.from_dict(json.loads((model_dir / "config.json").read_text())["preset"]), "8bit")
        model, _ = get_member_type("joint").load_model(model_dir, preset)
    assert sum(type(m).__name__ == "Linear8bitLt" for m in model.modules()) > 0 and _linear4bit_count(model) == 0
    probs = {q: r.predictions[["p_a", "p_b", "p_tie"]].to_numpy() for q, r in scored.items()}
    np.testing.assert_allclose(probs["8bit"].sum(1), 1.0, atol=1e-6)
    int8_error = np.abs(probs["8bit"] - probs["none"]).max()
    nf4_error = np.abs(probs["4bit"] - probs["none"]).max()
    assert int8_error < nf4_error, (int8_error, nf4_error)
    record = json.loads((tmp_path / "8bit.manifest.json").read_text())
    assert record["settings"]["quantization"] == "8bit"
    with pytest.raises(Exception, match="choose one of"):
        infer_stage(model_dir, "oof", quantization="3bit", out=tmp_path / "x.csv")
