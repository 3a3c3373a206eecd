"""The lexical member through train -> infer -> blend, and the honest (cross-fitted) blend."""
import json

import numpy as np
import pandas as pd
import pytest

from kit.blend import Member, blend_members, blend_stage
from kit.evaluation import log_loss
from kit.inference import infer_stage
from kit.lexical import LexicalModel
from kit.submission import validate_submission
from kit.tokenization import tokenize_stage
from kit.training import train_stage
from conftest import KAGGLE_TEST, KAGGLE_TRAIN, PANDALM, SAMPLE_SUB, run_kit


def test_lexical_member_round_trips_train_infer_blend(tmp_path):
    tok = tokenize_stage("lexical", [KAGGLE_TRAIN, PANDALM], KAGGLE_TEST, n_folds=3, max_rows=400,
                         out=tmp_path / "tok")
    assert set(tok.train.columns) >= {"id", "prompt", "response_a", "response_b", "label", "fold"}
    dirs = []
    for k in range(3):
        res = train_stage("lexical", k, tokenized=tok.out_dir, out=tmp_path / "models" / "lexical" / f"fold{k}")
        # the infer stage reloads the fitted model and reproduces the train stage's out-of-fold rows
        oof = infer_stage(res.out_dir, "oof").predictions
        np.testing.assert_allclose(oof[["p_a", "p_b", "p_tie"]].to_numpy(),
                                   res.oof[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-12)
        infer_stage(res.out_dir, "test")
        dirs.append(res.out_dir)
    result = blend_stage({"lexical": dirs}, weights="fit", temperature=True, out=tmp_path / "submission.csv",
                         report_dir=tmp_path / "report")
    sub = pd.read_csv(tmp_path / "submission.csv")
    validate_submission(sub, pd.read_csv(KAGGLE_TEST)["id"].tolist(), SAMPLE_SUB)
    table = result.table
    assert {"uniform", "prior", "tfidf", "lexical", "blend", "blend (in-sample fit)"} <= set(table.index)
    # it learns: better than the class prior on 400 real rows it never saw
    assert table.loc["lexical", "log_loss"] < table.loc["prior", "log_loss"] - 0.02
    report = json.loads((tmp_path / "report" / "blend.json").read_text())
    assert report["oof_score"] == "cross-fitted per fold" and set(report["per_fold"]) == {"0", "1", "2"}


def test_lexical_predictions_are_mirrored_for_mirrored_rows():
    frame = pd.DataFrame({"prompt": [["Say hi"], ["Name a prime"], ["2+2?"], ["Write a list"]] * 6,
                          "response_a": [["hi!"], ["7"], ["4"], ["- a\n- b\n- c"]] * 6,
                          "response_b": [["Hello there, friend."], ["I cannot answer"], ["five"], ["abc"]] * 6})
    labels = np.array([0, 0, 0, 0, 1, 2] * 4)
    model = LexicalModel().fit(frame, labels)
    mirrored = frame.assign(response_a=frame["response_b"], response_b=frame["response_a"])
    np.testing.assert_allclose(model.predict_proba(mirrored)[:, [1, 0, 2]], model.predict_proba(frame), atol=1e-12)


def _member(name, probs, labels, folds):
    ids = np.arange(len(labels))
    oof = pd.DataFrame({"id": ids, "p_a": probs[:, 0], "p_b": probs[:, 1], "p_tie": probs[:, 2], "label": labels,
                        "fold": folds})
    return Member(name, [], None, oof)


def test_cross_fitted_weights_are_not_scored_on_their_own_rows():
    """Member 'lucky' is right on fold 1 and confidently wrong on fold 0; 'steady' is mildly right
    everywhere. The in-sample fit sees both folds; the cross-fitted fold-0 weights come from fold 1
    alone, which flatters 'lucky' — the honest figure must be worse than the in-sample one."""
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 3, n)
    folds = np.repeat([0, 1], n // 2)
    onehot = np.eye(3)[labels]
    wrong = np.eye(3)[(labels + 1) % 3]
    lucky = np.where((folds == 1)[:, None], 0.9 * onehot + 0.05, 0.9 * wrong + 0.05)
    steady = 0.5 * onehot + 0.5 / 3 + rng.uniform(0, 0.01, (n, 3))
    steady /= steady.sum(1, keepdims=True)
    res = blend_members([_member("lucky", lucky, labels, folds), _member("steady", steady, labels, folds)], "fit")
    per_fold = res.report["per_fold"]
    assert res.report["oof_score"] == "cross-fitted per fold"
    assert per_fold[0]["weights"][0] > 0.9  # fitted on fold 1: 'lucky' looks perfect there
    assert abs(per_fold[0]["weights"][0] - res.weights[0]) > 0.3  # ... unlike the all-rows fit
    in_sample, honest = res.table.loc["blend (in-sample fit)", "log_loss"], res.table.loc["blend", "log_loss"]
    assert honest > in_sample + 0.1
    assert np.isclose(honest, log_loss(labels, res.oof_blend))
    # fixed weights fit nothing: one figure, no per-fold fits
    fixed = blend_members([_member("lucky", lucky, labels, folds), _member("steady", steady, labels, folds)], "equal")
    assert fixed.report["per_fold"] == {} and "blend (in-sample fit)" not in fixed.table.index


def test_fit_on_a_single_fold_is_refused():
    labels = np.array([0, 1, 2, 0])
    probs = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="at least two folds"):
        blend_members([_member("a", probs, labels, np.zeros(4, int)), _member("b", probs, labels, np.zeros(4, int))],
                      "fit")


def test_cv_validates_model_names_before_any_work(tmp_path):
    proc = run_kit("cv", "--train", PANDALM, "--models", "minilm,nosuch", "--out", tmp_path / "cv")
    assert proc.returncode == 2 and "unknown model preset 'nosuch'" in proc.stderr
    assert not (tmp_path / "cv").exists()
