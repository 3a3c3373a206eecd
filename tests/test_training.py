"""Real few-step LoRA training of both embedded backbones on real rows (slow-ish: ~2 min)."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kit.core.errors import StaleOutput
import torch

from kit.core.errors import PresetError

from kit.core.presets import resolve_preset
from kit.stages.tokenize import tokenize_stage
from kit.core.settings import TrainSettings
from kit.stages.train import train_stage
from kit.store.io import read_csv_keeping_ids
from conftest import KAGGLE_TRAIN, PANDALM, ROOT, kill_when_checkpointed, run_kit

FAST = dict(max_steps=12, batch_size=4, grad_accum=1, learning_rate=2e-3, warmup_ratio=0.0,
            evals_per_run=1, max_train_rows=16, max_eval_rows=16, logging_steps=1)


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    """Real PandaLM + Kaggle rows packed at 128 tokens for each embedded preset (joint head;
    the pairwise head has its own tests in test_pairwise.py)."""
    base = tmp_path_factory.mktemp("tok")
    for model in ("minilm", "smollm2"):
        tokenize_stage(model, [KAGGLE_TRAIN, PANDALM], "", max_length=128, max_rows=200, n_folds=4,
                       out=base / model, member="joint")
    return base


def _loss(model, frame, pad_id):
    from kit.members.joint import predict_logits
    logits = torch.tensor(predict_logits(model, list(frame["input_ids"]), pad_id, progress=False))
    return torch.nn.functional.cross_entropy(logits, torch.tensor(frame["label"].to_numpy())).item()


@pytest.mark.parametrize("model", ["minilm", "smollm2"])
def test_few_steps_change_lora_and_head_and_lower_training_loss(tokenized, tmp_path, model):
    from transformers import set_seed
    from kit.members.joint import build_lora_model, load_trained

    settings = TrainSettings(**FAST, swap_augment=False)
    frame = pd.read_parquet(tokenized / model / "train.parquet")
    seen = frame[frame["fold"] != 0].head(settings.max_train_rows)

    set_seed(settings.seed)  # the same head initialisation as the run below
    # the joint recipe: LoRA on every layer (the SmolLM2 preset's top-8 layers are its pairwise recipe)
    recipe = {"layers_to_transform": list(range(30))} if model == "smollm2" else {}
    initial, tok = build_lora_model(resolve_preset(model, dict(max_length=128, member="joint", **recipe)))
    initial.eval()
    before = {n: p.detach().clone() for n, p in initial.named_parameters() if p.requires_grad}
    loss_before = _loss(initial, seen, tok.pad_token_id)

    res = train_stage(model, 0, tokenized=tokenized / model, out=tmp_path / "run", **settings.to_dict(), **recipe)
    trained, _ = load_trained(res.out_dir, resolve_preset(model, dict(max_length=128, member="joint", **recipe)))
    after = dict(trained.named_parameters())
    lora_b = [n for n in before if "lora_B" in n]
    head = [n for n in before if "modules_to_save" in n]
    assert lora_b and head
    assert all(before[n].abs().sum() == 0 for n in lora_b)  # LoRA starts as a no-op ...
    assert sum(after[n].abs().sum().item() > 0 for n in lora_b) > len(lora_b) // 2  # ... and learns
    assert all(not torch.equal(before[n], after[n]) for n in head)
    assert _loss(trained, seen, tok.pad_token_id) < loss_before - 0.01
    m = json.loads((res.out_dir / "metrics.json").read_text())
    assert m["global_steps"] == 12 and 0 < m["log_loss"] < 5 and m["held_out_rows"] == 16
    oof = read_csv_keeping_ids(res.out_dir / "oof.csv")
    assert len(oof) == 16 and np.allclose(oof[["p_a", "p_b", "p_tie"]].sum(1), 1)
    assert (res.out_dir / "training.png").exists() and not (res.out_dir / "checkpoints").exists()


RELOAD = """
import sys, numpy as np, pandas as pd
from kit.members.joint import predict_logits
from kit.members.joint import load_trained
from kit.core.presets import resolve_preset
from kit.core.metrics import softmax
model, tok = load_trained(sys.argv[1], resolve_preset("minilm", dict(max_length=128)))
held = pd.read_parquet(sys.argv[2]).set_index("id").loc[pd.read_csv(sys.argv[1] + "/oof.csv", dtype={"id": str})["id"]]
probs = softmax(predict_logits(model, list(held["input_ids"]), tok.pad_token_id, progress=False))
np.save(sys.argv[3], probs)
"""


def test_cli_train_then_reload_in_a_fresh_process_gives_the_same_probabilities(tokenized, tmp_path):
    out = tmp_path / "cli"
    proc = run_kit("train", "--model", "minilm", "--fold", "1", "--tokenized", tokenized / "minilm",
                   "--out", out, "--max-steps", "4", "--batch-size", "4", "--max-train-rows", "16",
                   "--max-eval-rows", "12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preset"]["name"] == "minilm" and cfg["preset"]["max_length"] == 128 and cfg["fold"] == 1
    # the values that ran are recorded, never null for "the preset's": in config.json and in the manifest
    preset = resolve_preset("minilm")
    assert cfg["train"]["batch_size"] == 4 and cfg["train"]["max_steps"] == 4  # given
    assert (cfg["train"]["learning_rate"], cfg["train"]["epochs"], cfg["train"]["grad_accum"]) == (
        preset.learning_rate, preset.epochs, preset.grad_accum)  # the preset's, as they ran
    assert None not in [cfg["train"][k] for k in ("learning_rate", "epochs", "batch_size", "grad_accum",
                                                  "warmup_ratio", "weight_decay", "group_by_length", "head_lr_scale")]
    manifest = json.loads((out / "manifest.json").read_text())["settings"]
    assert {k: manifest[k] for k in cfg["train"]} == cfg["train"] and manifest["preset"] == "minilm"
    subprocess.run([sys.executable, "-c", RELOAD, str(out), str(tokenized / "minilm" / "train.parquet"),
                    str(tmp_path / "p.npy")], check=True, cwd=ROOT, capture_output=True)
    oof = read_csv_keeping_ids(out / "oof.csv")
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), oof[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-6)
    # a second run into the same folder is refused, not silently overwritten
    again = run_kit("train", "--model", "minilm", "--fold", "1", "--tokenized", tokenized / "minilm",
                    "--out", out, "--max-steps", "1")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_killed_run_resumes_to_the_same_metrics(tokenized, tmp_path):
    args = ["train", "--model", "minilm", "--fold", "0", "--tokenized", tokenized / "minilm",
            "--max-steps", "12", "--eval-steps", "3", "--batch-size", "4", "--max-train-rows", "32",
            "--max-eval-rows", "16", "--seed", "7"]
    ref = run_kit(*args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "killed"
    kill_when_checkpointed(args, out, "checkpoint-6")
    # resuming with other arguments is refused, naming what differs (nothing is trained)
    other = run_kit(*args, "--lr", "1e-3", "--out", out)
    assert other.returncode == 2 and "cannot resume" in other.stderr and "train.learning_rate" in other.stderr
    assert "--no-resume" in other.stderr and "Traceback" not in other.stderr
    # a checkpoint folder left half-written by a kill during the save is skipped, not resumed
    (out / "checkpoints" / "checkpoint-9").mkdir()

    resumed = run_kit(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from the last checkpoint" in resumed.stdout and "(checkpoint-6)" in resumed.stdout
    assert "checkpoint-9 is incomplete" in resumed.stdout
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "ref", out))
    assert b["resumed"] and not a["resumed"] and a["global_steps"] == b["global_steps"] == 12
    assert abs(a["log_loss"] - b["log_loss"]) < 1e-5 and a["accuracy"] == b["accuracy"]
    # the metrics describe the whole run, not only the part after the resume
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
    assert a["best_step"] == b["best_step"] and "best_checkpoint" not in b
    pa, pb = (pd.read_csv(d / "oof.csv")[["p_a", "p_b", "p_tie"]].to_numpy() for d in (tmp_path / "ref", out))
    np.testing.assert_allclose(pa, pb, atol=1e-5)


def test_bad_configuration_is_named(tokenized, tmp_path):
    tok = tokenized / "minilm"
    with pytest.raises(PresetError, match="unknown model preset 'nope'"):
        train_stage("nope", 0, tokenized=tok)
    with pytest.raises(PresetError, match="fold 7 out of range"):
        train_stage("minilm", 7, tokenized=tok, out=tmp_path / "a")
    with pytest.raises(PresetError, match="model folder for preset 'gemma2-9b' not found"):
        tokenize_stage("gemma2-9b", [KAGGLE_TRAIN], "", out=tmp_path / "c", model_dir=str(tmp_path / "none"))
    with pytest.raises(StaleOutput, match="run `python -m kit tokenize` first"):
        train_stage("minilm", 0, tokenized=tmp_path / "empty")
    with pytest.raises(PresetError, match="tokenized for 'minilm', not 'smollm2'"):
        train_stage("smollm2", 0, tokenized=tok)


def test_ddp_two_cpu_ranks_end_with_identical_weights(tokenized, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "ddp"
    proc = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29533", "-m", "kit", "train",
                           "--model", "minilm", "--fold", "0", "--tokenized", str(tokenized / "minilm"),
                           "--out", str(out), "--max-steps", "3", "--batch-size", "4",
                           "--max-train-rows", "32", "--max-eval-rows", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert json.loads((out / "metrics.json").read_text())["global_steps"] == 3


def test_any_local_hf_folder_trains_with_all_linear_lora(tmp_path):
    """Not a preset: a plain Hugging Face folder (here the exported SmolLM2 safetensors)."""
    from kit.stages.infer import infer_stage
    from kit.ops.backbones import smollm2_dir
    from conftest import KAGGLE_TEST

    folder = str(smollm2_dir())
    tok = tokenize_stage(folder, [KAGGLE_TRAIN], KAGGLE_TEST, max_length=96, max_rows=24, n_folds=2,
                         out=tmp_path / "tok")
    res = train_stage(folder, 0, tokenized=tok.out_dir, out=tmp_path / "model",
                      max_steps=2, batch_size=4, max_train_rows=8, max_eval_rows=4)
    cfg = json.loads((res.out_dir / "config.json").read_text())
    assert cfg["preset"]["target_modules"] == ["all-linear"] and cfg["preset"]["name"] == smollm2_dir().name
    preds = infer_stage(res.out_dir, "test", tta=False, out=tmp_path / "p.csv").predictions
    assert preds["id"].tolist() == pd.read_csv(KAGGLE_TEST, dtype={"id": str})["id"].tolist()
