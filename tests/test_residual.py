"""Residual members: a pairwise member trained on top of a base member's out-of-fold
log-probabilities (MiniLM on the lexical model): the margin is in the loss and in every
prediction, it never comes from a base model that saw the row's fold, and rows without one
(extra rows) or a base on other folds are refused."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import KAGGLE_TEST, PANDALM
from kit.core.errors import BlendError, PresetError
from kit.stages.infer import infer_stage
from kit.store.io import read_csv_keeping_ids
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage

SMALL = dict(batch_size=8, max_train_rows=16, evals_per_run=1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("residual")
    tokenize_stage("lexical", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=40, out=root / "tok-lexical")
    tokenize_stage("minilm", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=40, max_length=64, out=root / "tok-minilm")
    for k in range(2):
        model = train_stage("lexical", k, tokenized=root / "tok-lexical", out=root / "models" / "lexical" / f"fold{k}")
        infer_stage(model.out_dir, "oof")
        infer_stage(model.out_dir, "test")
    return root


def _probs(frame):
    return frame.set_index("id")[["p_a", "p_b", "p_tie"]]


def test_untrained_residual_member_predicts_its_base_exactly(base):
    """With a zero learning rate the member's own logits stay 0 (zero heads, zero LoRA B): its
    held-out and test probabilities are the base's — the margin is wired into training, the train
    stage's scoring and the infer stage's."""
    res = train_stage("minilm", 0, tokenized=base / "tok-minilm", out=base / "zero",
                      learning_rate=0.0, max_steps=1, residual_on=str(base / "models" / "lexical"),
                      **SMALL)
    assert res.metrics["residual_on"] == str(base / "models" / "lexical")
    lexical_oof = _probs(read_csv_keeping_ids(base / "models" / "lexical" / "fold0" / "predictions" / "oof.csv"))
    np.testing.assert_allclose(_probs(res.oof).to_numpy(), lexical_oof.loc[_probs(res.oof).index].to_numpy(), atol=1e-6)
    again = infer_stage(res.out_dir, "oof", reuse_train_scores=False, out=base / "zero-oof.csv").predictions
    np.testing.assert_allclose(_probs(again).to_numpy(), lexical_oof.loc[_probs(again).index].to_numpy(), atol=1e-6)
    test = infer_stage(res.out_dir, "test").predictions
    lexical_test = np.mean([_probs(read_csv_keeping_ids(base / "models" / "lexical" / f"fold{k}" / "predictions" / "test.csv"))
                            .to_numpy() for k in range(2)], axis=0)
    np.testing.assert_allclose(_probs(test).to_numpy(), lexical_test, atol=1e-6)


def test_a_trained_residual_member_learns_a_correction(base):
    res = train_stage("minilm", 1, tokenized=base / "tok-minilm", out=base / "trained",
                      learning_rate=5e-3, max_steps=3, residual_on=str(base / "models" / "lexical"),
                      **SMALL)
    assert np.isfinite(res.metrics["train_loss"])
    lexical_oof = _probs(read_csv_keeping_ids(base / "models" / "lexical" / "fold1" / "predictions" / "oof.csv"))
    diff = np.abs(_probs(res.oof).to_numpy() - lexical_oof.loc[_probs(res.oof).index].to_numpy()).max()
    assert 1e-4 < diff < 0.5  # a correction, not a new model
    config = json.loads((res.out_dir / "config.json").read_text())
    assert config["train"]["residual_on"] == str(base / "models" / "lexical")


def test_a_base_on_other_folds_or_rows_without_a_margin_are_refused(base, tmp_path):
    tokenize_stage("minilm", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=40, max_length=64, seed=7,
                   out=tmp_path / "tok-seed7")
    with pytest.raises(PresetError, match="another fold assignment.*would leak"):
        train_stage("minilm", 0, tokenized=tmp_path / "tok-seed7", out=tmp_path / "m",
                    max_steps=1, residual_on=str(base / "models" / "lexical"), **SMALL)
    extra = pd.read_csv(PANDALM).iloc[500:520].assign(id=lambda f: "x-" + f["id"].astype(str))
    extra.to_csv(tmp_path / "extra.csv", index=False)
    tokenize_stage("minilm", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=40, max_length=64, extra=[tmp_path / "extra.csv"],
                   out=tmp_path / "tok-extra")
    with pytest.raises((BlendError, PresetError)):
        # other folds fingerprint (the extra rows change the cache) or no margin for the extra rows: refused
        train_stage("minilm", 0, tokenized=tmp_path / "tok-extra", out=tmp_path / "m2",
                    max_steps=1, residual_on=str(base / "models" / "lexical"), **SMALL)


def test_cv_trains_a_residual_member_after_its_base(tmp_path):
    from kit.workflows.cv import cv_stage
    result = cv_stage([PANDALM], ["minilm", "lexical"], 2, out=tmp_path / "cv", max_rows=40, max_length=64,
                      max_train_rows=16, residual={"minilm": ["lexical"]})
    config = json.loads((tmp_path / "cv" / "models" / "minilm" / "fold0" / "config.json").read_text())
    assert config["train"]["residual_on"] == str(tmp_path / "cv" / "models" / "lexical")
    assert {"minilm", "lexical", "blend"} <= set(result["table"].index)
    assert "residual members: minilm on lexical" in result["markdown"]
