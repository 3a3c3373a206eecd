"""The pairwise head on real backbones and real rows: swap equivariance, head/cache mismatch,
resume after SIGKILL, exact reload."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from kit.core.metrics import softmax
from kit.stages.infer import infer_stage
from kit.members.pairwise import build_pairwise, predict_pair_logits
from kit.core.errors import PresetError
from kit.core.presets import resolve_preset
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from kit.store.io import read_csv_keeping_ids
from conftest import KAGGLE_TRAIN, PANDALM, ROOT, kill_when_checkpointed, run_kit


@pytest.fixture(scope="module")
def pair_cache(tmp_path_factory):
    """Real Kaggle (multi-turn) + PandaLM rows packed per side at 96 tokens for MiniLM, with a
    test table that is the first 12 Kaggle rows and the same rows with A and B exchanged."""
    base = tmp_path_factory.mktemp("pair")
    rows = pd.read_csv(KAGGLE_TRAIN).head(12).drop(columns=["winner_model_a", "winner_model_b", "winner_tie"])
    mirrored = rows.assign(id=rows["id"] + 10**9, response_a=rows["response_b"], response_b=rows["response_a"])
    test = pd.concat([rows, mirrored], ignore_index=True)
    test.to_csv(base / "test.csv", index=False)
    tokenize_stage("minilm", [KAGGLE_TRAIN, PANDALM], base / "test.csv", max_length=96, max_rows=160, n_folds=4,
                   out=base / "tok", member="pairwise")
    return base


@pytest.fixture(scope="module")
def trained_pair(pair_cache):
    res = train_stage("minilm", 0, tokenized=pair_cache / "tok", out=pair_cache / "model",
                      max_steps=6, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0,
                      max_train_rows=48, max_eval_rows=24, evals_per_run=1)
    return res


def test_cache_holds_both_sides_within_the_budget(pair_cache):
    train = pd.read_parquet(pair_cache / "tok" / "train.parquet")
    meta = json.loads((pair_cache / "tok" / "meta.json").read_text())
    assert meta["preset"]["member"] == "pairwise" and "input_ids" not in train
    for col in ("side_a_ids", "side_b_ids"):
        assert train[col].map(len).le(96).all() and train[col].map(len).gt(10).all()
    # a multi-turn Kaggle row keeps its cut markers and its last turn on each side
    assert (train["turns_kept"] >= 1).all() and (train["turns_kept"] <= train["turns_total"]).all()


def test_swapped_rows_get_mirrored_probabilities(trained_pair, pair_cache):
    """predict(B, A) equals predict(A, B) with the A/B columns exchanged — a trained model
    (non-zero heads), through the infer stage, with no TTA."""
    res = infer_stage(trained_pair.out_dir, "test", out=pair_cache / "test_pred.csv")
    assert res.flip_rate is None and "p_a_swap" not in res.predictions  # one pass only
    preds = res.predictions.set_index("id")
    ids = pd.read_csv(pair_cache / "test.csv", dtype={"id": str})["id"].tolist()
    plain, mirrored = preds.loc[ids[:12]], preds.loc[ids[12:]]
    assert plain[["p_a", "p_b"]].std().min() > 1e-4  # the model says something row by row
    np.testing.assert_allclose(mirrored[["p_b", "p_a", "p_tie"]].to_numpy(),
                               plain[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-5)


def test_decoder_pairwise_head_is_swap_equivariant_with_padding(pair_cache):
    """A Llama decoder (last-token pooling, right padding in mixed-length batches), random heads and
    LoRA: SmolLM2's preset and tokenizer on a tiny random-init Llama (kit.ops.tiny) — the property is
    the architecture's and the padding's, not the weights'."""
    from kit.ops.tiny import make_tiny_backbone
    torch.manual_seed(0)
    tokenize_stage("smollm2", [PANDALM], "", max_length=256, max_rows=16, n_folds=2,
                   out=pair_cache / "tok_smol", member="pairwise")
    frame = pd.read_parquet(pair_cache / "tok_smol" / "train.parquet")
    tiny = make_tiny_backbone("llama", pair_cache / "tiny_llama")
    model, tok = build_pairwise(resolve_preset("smollm2", dict(max_length=256, model_dir=str(tiny))))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    model.eval()
    a, b = list(frame["side_a_ids"]), list(frame["side_b_ids"])
    assert len({len(x) for x in a + b}) > 3  # batches mix lengths: padding is exercised
    direct = softmax(predict_pair_logits(model, a, b, tok.pad_token_id, progress=False, max_tokens=1200))
    swapped = softmax(predict_pair_logits(model, b, a, tok.pad_token_id, progress=False, max_tokens=1200))
    assert direct.std(0).max() > 1e-3
    np.testing.assert_allclose(swapped[:, [1, 0, 2]], direct, atol=1e-5)
    # one row alone (no padding) gives what it gets inside a padded batch
    alone = softmax(predict_pair_logits(model, a[:1], b[:1], tok.pad_token_id, progress=False))
    np.testing.assert_allclose(alone[0], direct[0], atol=1e-5)


def test_trained_pairwise_model_reloads_in_a_fresh_process_to_its_oof(trained_pair):
    """adapter + both heads saved by the Trainer path reload exactly (the infer stage reloads)."""
    proc = run_kit("infer", "--trained", trained_pair.out_dir, "--split", "oof",
                   "--out", trained_pair.out_dir / "oof_again.csv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = read_csv_keeping_ids(trained_pair.out_dir / "oof_again.csv").set_index("id")
    oof = read_csv_keeping_ids(trained_pair.out_dir / "oof.csv")  # the Trainer run scored the first 24 held-out rows
    assert len(again) > len(oof) and set(oof["id"]) <= set(again.index)
    np.testing.assert_allclose(again.loc[oof["id"], ["p_a", "p_b", "p_tie"]].to_numpy(),
                               oof[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-6)
    saved = json.loads((trained_pair.out_dir / "adapter" / "adapter_config.json").read_text())
    assert set(saved["modules_to_save"]) == {"reward_head", "tie_head"}
    assert not (trained_pair.out_dir / "adapter" / "model.safetensors").exists()  # no backbone copy


def test_head_and_cache_mismatch_is_a_clear_error(pair_cache, trained_pair, tmp_path):
    with pytest.raises(PresetError, match="tokenized for the 'pairwise' member type, not 'joint'.*--member joint"):
        train_stage("minilm", 0, tokenized=pair_cache / "tok", out=tmp_path / "x", member="joint")
    proc = run_kit("train", "--model", "minilm", "--tokenized", pair_cache / "tok", "--head", "joint",
                   "--out", tmp_path / "y")
    assert proc.returncode == 2 and "MEMBER = 'joint'" in proc.stderr and "Traceback" not in proc.stderr
    tokenize_stage("minilm", [KAGGLE_TRAIN], "", max_length=96, max_rows=24, n_folds=2, out=tmp_path / "joint",
                   member="joint")
    with pytest.raises(ValueError, match="tokenized for the 'joint' member type.*trained as 'pairwise'"):
        infer_stage(trained_pair.out_dir, "oof", tokenized=tmp_path / "joint", out=tmp_path / "p.csv")


def test_killed_pairwise_run_resumes_to_the_same_metrics(pair_cache, tmp_path):
    args = ["train", "--model", "minilm", "--fold", "1", "--tokenized", pair_cache / "tok",
            "--max-steps", "8", "--eval-steps", "2", "--batch-size", "4", "--max-train-rows", "32",
            "--max-eval-rows", "12", "--seed", "3"]
    ref = run_kit(*args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    kill_when_checkpointed(args, out, "checkpoint-4")
    resumed = run_kit(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from the last checkpoint" in resumed.stdout
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "ref", out))
    assert b["resumed"] and a["global_steps"] == b["global_steps"] == 8
    assert abs(a["log_loss"] - b["log_loss"]) < 1e-5
    pa, pb = (pd.read_csv(d / "oof.csv")[["p_a", "p_b", "p_tie"]].to_numpy() for d in (tmp_path / "ref", out))
    np.testing.assert_allclose(pa, pb, atol=1e-5)


def test_pairwise_ddp_two_cpu_ranks_end_with_identical_weights(pair_cache, tmp_path):
    import os
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "ddp"
    proc = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29541", "-m", "kit", "train",
                           "--model", "minilm", "--fold", "2", "--tokenized", str(pair_cache / "tok"),
                           "--out", str(out), "--max-steps", "3", "--batch-size", "4",
                           "--max-train-rows", "32", "--max-eval-rows", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_steps"] == 3 and metrics["held_out_rows"] == 8


def test_infer_reuses_the_train_stages_oof_scores_only_when_they_are_what_scoring_gives(pair_cache, tmp_path,
                                                                                       capsys):
    """A run that scored its whole held-out fold: the infer stage takes those scores (and they
    equal a fresh scoring of the reloaded adapter); a run that scored a capped share is rescored."""
    res = train_stage("minilm", 3, tokenized=pair_cache / "tok", out=tmp_path / "m",
                      max_steps=2, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0,
                      max_train_rows=16, evals_per_run=1)
    capsys.readouterr()
    reused = infer_stage(res.out_dir, "oof").predictions
    assert "reused" in capsys.readouterr().out
    scored = infer_stage(res.out_dir, "oof", out=tmp_path / "rescored.csv", reuse_train_scores=False).predictions
    assert len(reused) == res.metrics["held_out_rows"] == len(scored) > 20
    assert reused["id"].tolist() == scored["id"].tolist() and (reused["label"] == scored["label"]).all()
    np.testing.assert_allclose(reused[["p_a", "p_b", "p_tie"]].to_numpy(),
                               scored[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-5)
    assert reused[["p_a", "p_b"]].std().min() > 1e-4  # not a constant (untrained) prediction


def test_davidson_tie_model_golden():
    """logits [r_A, r_B, (r_A + r_B)/2 + log nu] are Davidson's (1970) model:
    P(tie) = nu*sqrt(pi_A*pi_B) / (pi_A + pi_B + nu*sqrt(pi_A*pi_B)), pi = exp(r) — closest rewards,
    likeliest tie. The free tie model's P(tie) does not depend on how close the rewards are."""
    from transformers import BertConfig, BertModel

    from kit.members.pairwise import PairwiseRewardModel
    backbone = BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=16, vocab_size=30))
    h_a = torch.zeros(5, 8)
    h_b = torch.zeros(5, 8)
    h_a[:, 0] = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0])  # r_A - r_B grows row by row
    for tie_model in ("davidson", "free"):
        model = PairwiseRewardModel(backbone, "mean", tie_model)
        with torch.no_grad():
            model.reward_head.weight[0, 0] = 1.0
            model.reward_head.bias.fill_(0.3)
            model.tie_head.bias.fill_(np.log(0.8))  # nu = 0.8, the same for every row (h_A + h_B = h_A here)
            model.tie_head.weight.zero_()
        p = softmax(model.pair_logits(h_a, h_b).detach().double().numpy())
        r_a, r_b = h_a[:, 0].double().numpy() + 0.3, np.full(5, 0.3)
        if tie_model == "davidson":
            pi_a, pi_b, nu = np.exp(r_a), np.exp(r_b), 0.8
            tie = nu * np.sqrt(pi_a * pi_b)
            np.testing.assert_allclose(p, np.column_stack([pi_a, pi_b, tie]) / (pi_a + pi_b + tie)[:, None],
                                       atol=1e-6)
            assert np.all(np.diff(p[:, 2]) < 0)
        else:
            np.testing.assert_allclose(p[:, 2], 0.8 / (np.exp(r_a) + np.exp(r_b) + 0.8), atol=1e-6)
    with pytest.raises(ValueError, match="tie_model"):
        PairwiseRewardModel(backbone, "mean", "rao-kupper")


def test_isolated_inference_finds_the_kit_where_the_notebook_found_it(trained_pair, pair_cache, tmp_path):
    """A notebook that put the kit on sys.path by hand (Kaggle: an attached dataset), run from a
    folder without it: the per-model child process must import that same kit. (This checkout is
    also pip-installed in editable mode, so a marker in the copy tells which kit was imported.)"""
    import os
    import shutil
    dataset = tmp_path / "lora-litee-kit"
    shutil.copytree(ROOT / "kit", dataset / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    with open(dataset / "kit" / "__init__.py", "a") as init:
        init.write("\nimport os as _os\nif _os.environ.get('KIT_TEST_IMPORT_MARKER'):\n"
                   "    open(_os.environ['KIT_TEST_IMPORT_MARKER'], 'a').write(str(_os.getpid()) + '\\n')\n")
    marker = tmp_path / "imported.txt"
    script = (f"import sys; sys.path.insert(0, {str(dataset)!r})\n"
              "from kit.stages.infer_many import infer_isolated\n"
              f"print(infer_isolated({str(trained_pair.out_dir)!r}, 'test', out={str(tmp_path / 'iso.csv')!r}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["KIT_TEST_IMPORT_MARKER"] = str(marker)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(set(marker.read_text().split())) == 2  # the notebook's process and the child imported the copy
    isolated = pd.read_csv(tmp_path / "iso.csv")
    assert len(isolated) == len(pd.read_csv(pair_cache / "test.csv"))


def test_a_loaded_adapter_is_folded_in_and_scores_as_the_unmerged_model(trained_pair, pair_cache):
    """The infer path loads a trained LoRA folded into the weights (every adapted layer merged); its
    logits equal the unmerged model's; ``lora_merged`` folds for a block and restores the frozen
    weights after it, leaving the adapter's own tensors as trained."""
    from kit.members import get_member_type
    from kit.ops.lora import lora_merged

    preset = resolve_preset("minilm")
    member = get_member_type("pairwise")
    merged, tokenizer = member.load_model(trained_pair.out_dir, preset)
    lora_layers = [m for m in merged.modules() if hasattr(m, "lora_A") and hasattr(m, "merged")]
    assert lora_layers and all(m.merged for m in lora_layers)
    test = pd.read_parquet(pair_cache / "tok" / "test.parquet")
    a, b = list(test["side_a_ids"]), list(test["side_b_ids"])
    folded = predict_pair_logits(merged, a, b, tokenizer.pad_token_id, progress=False)

    merged.unmerge_adapter()
    assert not any(m.merged for m in lora_layers)
    frozen = {n: p.detach().clone() for n, p in merged.named_parameters() if "lora_" not in n}
    adapter = {n: p.detach().clone() for n, p in merged.named_parameters() if "lora_" in n}
    assert any(p.abs().max() > 0 for n, p in adapter.items() if "lora_B" in n)  # trained: LoRA changes the model
    plain = predict_pair_logits(merged, a, b, tokenizer.pad_token_id, progress=False)
    with lora_merged(merged):
        assert all(m.merged for m in lora_layers)
        inside = predict_pair_logits(merged, a, b, tokenizer.pad_token_id, progress=False)
    assert not any(m.merged for m in lora_layers)
    np.testing.assert_allclose(folded, plain, atol=1e-5)
    np.testing.assert_allclose(inside, plain, atol=1e-5)
    for n, p in merged.named_parameters():
        reference = frozen.get(n, adapter.get(n))
        assert torch.allclose(p, reference, atol=1e-6), n
