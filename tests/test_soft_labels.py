"""Soft labels end to end: probabilities in the winner columns are parsed and validated, swap
augmentation exchanges them, the loss on one-hot targets equals the hard-label loss, and
soft-labelled rows train (every member type) but are never held out or scored."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from kit.data.ingest import load_conversations
from kit.members import get_member_type
from kit.ops.losses import soft_cross_entropy
from kit.stages.infer import infer_stage
from kit.core.schema import EXTRA_FOLD, TARGET_COLUMNS
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from conftest import PANDALM


def _soft_table(tmp_path, hard: int = 150, soft: int = 60):
    """Real PandaLM rows: the first ``hard`` as labelled, the next ``soft`` with a teacher-like
    distribution (0.7 on the human label, the rest split) in place of the one-hot label."""
    table = pd.read_csv(PANDALM).head(hard + soft)
    cols = ["winner_model_a", "winner_model_b", "winner_tie"]
    one_hot = table[cols].to_numpy(dtype=float)
    table[cols] = table[cols].astype(float)
    table.loc[hard:, cols] = 0.7 * one_hot[hard:] + 0.15 * (1 - one_hot[hard:])
    path = tmp_path / "soft.csv"
    table.to_csv(path, index=False)
    return path, table


def test_soft_labels_are_parsed_and_bad_ones_reported(tmp_path):
    path, table = _soft_table(tmp_path, hard=5, soft=5)
    bad = table.copy()
    bad.loc[0, ["winner_model_a", "winner_model_b", "winner_tie"]] = [-0.2, 0.6, 0.6]
    bad.loc[1, ["winner_model_a", "winner_model_b", "winner_tie"]] = [0.5, 0.3, 0.1]
    bad.loc[2, "winner_tie"] = np.nan
    conv = load_conversations(bad)
    problems = dict(zip(conv.skipped["row"], conv.skipped["problem"]))
    assert "not a probability" in problems[0] and "summing to 1" in problems[1] and "not a probability" in problems[2]
    soft = conv.frame.set_index("id").loc[str(table["id"].iloc[7])]
    assert soft["target"] == pytest.approx(table.iloc[7][["winner_model_a", "winner_model_b", "winner_tie"]].tolist())
    assert soft["label"] == int(np.argmax(soft["target"]))


def test_soft_loss_equals_hard_loss_on_one_hot_rows_and_swap_exchanges_soft_labels():
    torch.manual_seed(0)
    logits = torch.randn(8, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    hard = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(soft_cross_entropy({"logits": logits}, one_hot), hard, atol=1e-6)
    assert torch.allclose(soft_cross_entropy({"logits": logits}, labels), hard)
    frame = pd.DataFrame({"input_ids": [[1, 2], [3]], "input_ids_swap": [[2, 1], [3]], "label": [0, 2],
                          TARGET_COLUMNS[0]: [0.6, 0.0], TARGET_COLUMNS[1]: [0.3, 0.0], TARGET_COLUMNS[2]: [0.1, 1.0]})
    ds = get_member_type("joint").dataset(frame, swap_augment=True)
    np.testing.assert_allclose(np.stack([ds[i]["labels"] for i in range(4)]),
                               [[0.6, 0.3, 0.1], [0, 0, 1], [0.3, 0.6, 0.1], [0, 0, 1]], atol=1e-6)
    one_hot_rows = frame.assign(**dict(zip(TARGET_COLUMNS, ([1.0, 0.0], [0.0, 0.0], [0.0, 1.0]))))
    hard_only = get_member_type("joint").dataset(one_hot_rows, swap_augment=False)
    assert [hard_only[i]["labels"] for i in range(2)] == [0, 2]  # all hard: class indices, as always


def test_soft_rows_train_every_member_and_are_never_held_out(tmp_path):
    path, table = _soft_table(tmp_path)
    soft_ids = set(table["id"].astype(str).iloc[150:])
    lex = tokenize_stage("lexical", [path], "", n_folds=2, out=tmp_path / "lex")
    kept = set(lex.train.loc[lex.train["fold"] == EXTRA_FOLD, "id"])
    removed = set(pd.read_csv(tmp_path / "lex" / "dedup_removed.csv", dtype=str)["id"])  # PandaLM repeats prompts
    assert kept | removed == soft_ids and not kept & removed and len(kept) > 20
    meta = json.loads((tmp_path / "lex" / "meta.json").read_text())
    assert meta["extra_rows"]["soft_labelled"] == len(kept)
    lexical = train_stage("lexical", 0, tokenized=tmp_path / "lex", out=tmp_path / "lex-m")
    assert lexical.metrics["soft_labels"] is True
    assert lexical.metrics["train_rows"] == int((lex.train["fold"] == 1).sum()) + len(kept)
    oof = infer_stage(lexical.out_dir, "oof").predictions
    assert not set(oof["id"]) & soft_ids  # scored against human labels only

    tok = tokenize_stage("minilm", [path], "", n_folds=2, max_length=64, out=tmp_path / "tok", member="pairwise")
    res = train_stage("minilm", 0, tokenized=tok.out_dir, out=tmp_path / "m",
                      max_steps=2, batch_size=8, max_eval_rows=8, evals_per_run=1)
    assert res.metrics["soft_labels"] is True and np.isfinite(res.metrics["train_loss"])
    assert not set(res.oof["id"]) & soft_ids


def test_soft_labels_through_the_joint_head_and_the_trainer_loss(tmp_path):
    """The joint head (an HF sequence classifier, whose own loss would read float labels as
    multi-label): the Trainer uses soft_cross_entropy, with swap augmentation on."""
    path, table = _soft_table(tmp_path, hard=80, soft=40)
    tok = tokenize_stage("minilm", [path], "", n_folds=2, max_length=96, out=tmp_path / "tok", member="joint")
    res = train_stage("minilm", 0, tokenized=tok.out_dir, out=tmp_path / "m",
                      max_steps=2, batch_size=8, max_eval_rows=8, evals_per_run=1)
    assert res.metrics["soft_labels"] is True and np.isfinite(res.metrics["train_loss"])
    assert res.oof["label"].isin([0, 1, 2]).all()
