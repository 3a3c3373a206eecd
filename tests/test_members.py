"""The lexical member through train -> infer -> blend, and the honest (cross-fitted) blend."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from kit.store.predictions import MemberPredictions

from kit.ensemble.combine import blend_members

from kit.stages.blend import blend_stage
from kit.core.metrics import log_loss
from kit.stages.infer import infer_stage
from kit.members.lexical import LexicalModel
from kit.ensemble.submission import validate_submission
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
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
    # three folds: cross-fitted on five parts by id, each fit seeing 80 % of every fold's rows
    assert report["oof_score"] == "cross-fitted on 5 parts (by id) of the out-of-fold rows of 3 folds"
    assert set(report["per_fold"]) == {"0", "1", "2", "3", "4"}


def test_a_member_type_hyperparameter_is_a_typed_setting_recorded_with_the_model(tmp_path):
    """The lexical member's C is a preset field like lora_r: set on the train stage (CLI, notebook,
    Python), recorded in config.json, and it changes the fitted model; older records' untyped
    ``extra`` dict reads into the same fields."""
    from kit.core.presets import Preset, resolve_preset
    from kit.store.models import read_trained
    tok = tokenize_stage("lexical", [PANDALM], None, n_folds=2, max_rows=120, out=tmp_path / "tok")
    default = train_stage("lexical", 0, tokenized=tok.out_dir, out=tmp_path / "default")
    loose = train_stage("lexical", 0, tokenized=tok.out_dir, out=tmp_path / "loose", lexical_c=10.0)
    assert read_trained(default.out_dir).preset.lexical_c == resolve_preset("lexical").lexical_c
    assert read_trained(loose.out_dir).preset.lexical_c == 10.0
    a, b = (r.oof[["p_a", "p_b", "p_tie"]].to_numpy() for r in (default, loose))
    assert np.abs(a - b).max() > 1e-3  # less regularised: other probabilities
    old = Preset.from_dict({"name": "lexical", "kind": "lexical", "member": "lexical",
                            "extra": {"C": 0.5, "dense_scale": 2.0}})
    assert (old.kind, old.lexical_c, old.lexical_dense_scale) == ("none", 0.5, 2.0)
    assert "--lexical-c" in run_kit("train", "--help").stdout


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
    return MemberPredictions(name, [], None, oof)


def test_cross_fitted_weights_are_not_scored_on_their_own_rows():
    """Member 'lucky' is right on folds 1-4 and confidently wrong on fold 0; 'steady' is mildly right
    everywhere. The in-sample fit sees every fold; the cross-fitted fold-0 weights come from folds
    1-4 alone, which flatters 'lucky' — the honest figure must be worse than the in-sample one."""
    rng = np.random.default_rng(0)
    n = 500
    labels = rng.integers(0, 3, n)
    folds = np.repeat(np.arange(5), n // 5)  # five folds: cross-fitted per fold
    onehot = np.eye(3)[labels]
    wrong = np.eye(3)[(labels + 1) % 3]
    lucky = np.where((folds != 0)[:, None], 0.9 * onehot + 0.05, 0.9 * wrong + 0.05)
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


def test_each_member_is_ablated_on_the_same_rows_with_the_same_cross_fitting():
    """With three fitted members the table shows the blend refitted without each one: the row for a
    member must equal blending the other two (cross-fitted alike), and dropping the informative
    member must cost more than dropping pure noise."""
    rng = np.random.default_rng(1)
    n = 300
    labels = rng.integers(0, 3, n)
    folds = np.arange(n) % 3
    onehot = np.eye(3)[labels]

    def noisy(signal):
        p = signal * onehot + rng.dirichlet([1, 1, 1], n)
        return p / p.sum(1, keepdims=True)
    good, fair, noise = noisy(1.5), noisy(0.6), rng.dirichlet([1, 1, 1], n)
    trio = [_member("good", good, labels, folds), _member("fair", fair, labels, folds),
            _member("noise", noise, labels, folds)]
    res = blend_members(trio, "fit", "log")
    pair = blend_members([trio[0], trio[1]], "fit", "log")
    assert np.isclose(res.table.loc["blend without noise", "log_loss"], pair.table.loc["blend", "log_loss"])
    assert res.table.loc["blend without good", "log_loss"] > res.table.loc["blend without noise", "log_loss"] + 0.05
    # fixed weights and two members: no ablation rows
    assert not any(i.startswith("blend without") for i in pair.table.index)
    assert not any(i.startswith("blend without") for i in blend_members(trio, "equal").table.index)


def test_an_overconfident_member_gets_a_cross_fitted_temperature_row():
    """A member right 60 % of the time but sure of itself: its '+ temperature' row must equal the
    temperature fitted on the other parts applied to each part (the blend's parts: three folds are
    cross-fitted on five parts by id), and beat the raw member."""
    from kit.ensemble.combine import combine, fit_temperature, holdout_parts
    rng = np.random.default_rng(2)
    n = 300
    labels = rng.integers(0, 3, n)
    folds = np.arange(n) % 3
    guess = np.where(rng.random(n) < 0.6, labels, (labels + 1) % 3)
    sure = 0.94 * np.eye(3)[guess] + 0.02
    res = blend_members([_member("sure", sure, labels, folds), _member("flat", np.full((n, 3), 1 / 3), labels, folds)],
                        "fit", "log")
    expected = np.zeros((n, 3))
    parts = holdout_parts(res.oof_ids)
    assert len(set(parts.tolist())) == 5
    for k in range(5):
        t = fit_temperature(sure[parts != k], labels[parts != k])
        expected[parts == k] = combine([sure[parts == k]], [1.0], "log", t)
    assert np.isclose(res.table.loc["sure + temperature", "log_loss"], log_loss(labels, expected))
    assert res.table.loc["sure + temperature", "log_loss"] < res.table.loc["sure", "log_loss"] - 0.2


def test_fit_on_a_single_shared_fold_is_cross_fitted_on_its_parts():
    """Members trained apart on one shared held-out fold: the weights are cross-fitted on 5 parts of it
    (stable, by id); too few shared rows for that are refused."""
    from kit.ensemble.combine import holdout_parts
    labels = np.array([0, 1, 2, 0])
    probs = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="at least 10 out-of-fold rows"):
        blend_members([_member("a", probs, labels, np.zeros(4, int)), _member("b", probs, labels, np.zeros(4, int))],
                      "fit")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    good = np.full((200, 3), 0.2)
    good[np.arange(200), labels] = 0.6
    res = blend_members([_member("good", good, labels, np.zeros(200, int)),
                         _member("noise", rng.dirichlet(np.ones(3), 200), labels, np.zeros(200, int))], "fit")
    assert res.report["oof_score"].startswith("cross-fitted on 5 parts") and res.weights[0] > 0.8
    parts = holdout_parts(res.oof_ids)
    assert sorted(res.report["per_fold"]) == sorted(set(parts.tolist())) and (parts == holdout_parts(res.oof_ids)).all()


def test_few_folds_are_cross_fitted_on_parts_that_mix_every_folds_models():
    """Two folds whose models are calibrated differently (the main job's failure: a fit on one fold's
    rows, applied to the other fold's models). Five or more folds keep the per-fold scheme; fewer are
    cross-fitted on five parts by id, each part blended by a fit that never saw it."""
    from kit.ensemble.combine import combine, cross_fit_parts, fit_weights, holdout_parts
    rng = np.random.default_rng(3)
    n = 400
    labels = rng.integers(0, 3, n)
    folds = np.repeat([0, 1], n // 2)
    onehot = np.eye(3)[labels]
    # 'sharp' is informative but overconfident on fold 0's model, informative and tame on fold 1's
    scale = np.where(folds == 0, 4.0, 1.0)[:, None]
    logits = scale * (1.2 * onehot + rng.normal(0, 1, (n, 3)))
    sharp = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    fair = 0.3 * onehot + rng.dirichlet([2, 2, 2], n)
    fair /= fair.sum(1, keepdims=True)
    members = [_member("sharp", sharp, labels, folds), _member("fair", fair, labels, folds)]
    res = blend_members(members, "fit", "log")
    assert res.report["oof_score"] == "cross-fitted on 5 parts (by id) of the out-of-fold rows of 2 folds"
    parts = holdout_parts(res.oof_ids)
    expected = np.zeros((n, 3))
    for k in range(5):
        w = fit_weights([sharp[parts != k], fair[parts != k]], labels[parts != k], "log")
        np.testing.assert_allclose(res.report["per_fold"][k]["weights"], w, atol=1e-9)
        expected[parts == k] = combine([sharp[parts == k], fair[parts == k]], w, "log")
    np.testing.assert_allclose(res.oof_blend, expected, atol=1e-12)
    # the per-fold scheme on the same rows: each fit sees one fold's models only, and scores worse
    per_fold = np.zeros((n, 3))
    for k in (0, 1):
        w = fit_weights([sharp[folds != k], fair[folds != k]], labels[folds != k], "log")
        per_fold[folds == k] = combine([sharp[folds == k], fair[folds == k]], w, "log")
    assert log_loss(labels, res.oof_blend) < log_loss(labels, per_fold) - 0.02
    # five folds: per fold; two folds with too few rows for parts: per fold, said so
    five = np.arange(n) % 5
    assert (cross_fit_parts(five, range(n))[0] == five).all()
    assert cross_fit_parts(five, range(n))[1] == "cross-fitted per fold"
    assert cross_fit_parts(np.array([0, 1] * 4), range(8))[1] == "cross-fitted per fold (too few rows for parts)"


def test_cv_validates_model_names_before_any_work(tmp_path):
    proc = run_kit("cv", "--train", PANDALM, "--models", "minilm,nosuch", "--out", tmp_path / "cv")
    assert proc.returncode == 2 and "unknown model preset 'nosuch'" in proc.stderr
    assert not (tmp_path / "cv").exists()


def _closeness_case(seed=0, n=600):
    """A member whose A/B direction is informative and whose tie probability is constant — while
    in truth ties happen when its two scores are close (the pattern the MiniLM member shows)."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0, 1.5, n)
    p_tie_true = 0.45 * np.exp(-margin ** 2)
    p_a_true = (1 - p_tie_true) / (1 + np.exp(-margin))
    truth = np.column_stack([p_a_true, 1 - p_tie_true - p_a_true, p_tie_true])
    labels = np.array([rng.choice(3, p=row) for row in truth])
    member = np.column_stack([(1 - 0.12) / (1 + np.exp(-margin)), (1 - 0.12) / (1 + np.exp(margin)),
                              np.full(n, 0.12)])
    noise = rng.dirichlet(np.ones(3), n)
    return member, noise, labels, np.arange(n) % 3


def test_stacker_recalibrates_what_weights_cannot_and_stays_swap_symmetric():
    from kit.ensemble.stacking import MirrorStacker
    member, noise, labels, folds = _closeness_case()
    members = [_member("closeness", member, labels, folds), _member("noise", noise, labels, folds)]
    fit = blend_members(members, "fit")
    stack = blend_members(members, "stack")
    assert stack.report["oof_score"].startswith("cross-fitted on 5 parts") and len(stack.report["per_fold"]) == 5
    assert stack.weights == [] and set(stack.report["stacker"]["coefficients"]) == {"a", "b", "tie"}
    honest_fit, honest_stack = (r.table.loc["blend", "log_loss"] for r in (fit, stack))
    assert honest_stack < honest_fit - 0.03  # ties come from closeness, which no weighting can give
    assert np.isclose(honest_stack, log_loss(labels, stack.oof_blend))
    assert stack.table.loc["blend (in-sample fit)", "log_loss"] < honest_stack  # in-sample flatters
    # swap symmetry, exactly: stacking the mirrored rows gives the mirrored probabilities
    model = MirrorStacker().fit([member, noise], labels)
    direct = model.predict([member, noise])
    mirrored = model.predict([member[:, [1, 0, 2]], noise[:, [1, 0, 2]]])
    np.testing.assert_allclose(mirrored[:, [1, 0, 2]], direct, atol=1e-12)
    np.testing.assert_allclose(direct.sum(1), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="all three outcomes"):
        MirrorStacker().fit([member[labels != 2]], labels[labels != 2])


def test_predictions_of_an_earlier_training_run_are_never_blended(tmp_path):
    """Retraining a model (--overwrite) retires its predictions: gone from the model folder, and a
    copy put back is refused as stale (it carries the old run's id), as is one without its manifest.
    Re-tokenizing with other folds makes `infer --split oof` an error, not a leak."""
    import shutil
    tok = tokenize_stage("lexical", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=120, out=tmp_path / "tok")
    dirs = [tmp_path / "models" / "lexical" / f"fold{k}" for k in range(2)]
    for k, d in enumerate(dirs):
        train_stage("lexical", k, tokenized=tok.out_dir, out=d)
        infer_stage(d, "test")
        infer_stage(d, "oof")
    blend_stage({"lexical": dirs}, weights="equal", out=tmp_path / "sub1.csv", report_dir=tmp_path / "r1")
    old = tmp_path / "old_predictions"
    shutil.copytree(dirs[0] / "predictions", old)

    train_stage("lexical", 0, tokenized=tok.out_dir, out=dirs[0], overwrite=True)
    assert not (dirs[0] / "predictions").exists()
    with pytest.raises(ValueError, match="missing test predictions .*fold0/predictions/test.csv: run the infer"):
        blend_stage({"lexical": dirs}, weights="equal", out=tmp_path / "sub2.csv", report_dir=tmp_path / "r2")
    shutil.copytree(old, dirs[0] / "predictions")
    with pytest.raises(ValueError, match="stale test predictions .*an earlier training run of that folder made them"):
        blend_stage({"lexical": dirs}, weights="equal", out=tmp_path / "sub2.csv", report_dir=tmp_path / "r2")
    (dirs[0] / "predictions" / "test.manifest.json").unlink()
    with pytest.raises(ValueError, match="stale test predictions .*no test.manifest.json"):
        blend_stage({"lexical": dirs}, weights="equal", out=tmp_path / "sub2.csv", report_dir=tmp_path / "r2")
    infer_stage(dirs[0], "test", overwrite=True)
    infer_stage(dirs[0], "oof", overwrite=True)
    blend_stage({"lexical": dirs}, weights="equal", out=tmp_path / "sub2.csv", report_dir=tmp_path / "r2")

    tokenize_stage("lexical", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=120, seed=7, out=tmp_path / "tok",
                   overwrite=True)
    with pytest.raises(ValueError, match="splits its rows differently .*seed: 42 then, 7 now"):
        infer_stage(dirs[1], "oof", overwrite=True)
    proc = run_kit("infer", "--trained", dirs[1], "--split", "oof", "--overwrite")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "training rows" in proc.stderr


def test_a_killed_cv_resumes_from_what_its_manifests_vouch_for(tmp_path, capsys):
    """A cv killed after a fold's training, before its out-of-fold predictions: the rerun reuses
    the finished fold, only predicts the other one (its model is kept), and scores the same."""
    from kit.workflows.cv import cv_stage

    first = cv_stage([PANDALM], models=("lexical",), folds=2, max_rows=120, out=tmp_path / "cv")
    fold1 = tmp_path / "cv" / "models" / "lexical" / "fold1"
    run_id = json.loads((fold1 / "config.json").read_text())["run_id"]
    shutil.rmtree(fold1 / "predictions")
    capsys.readouterr()
    again = cv_stage([PANDALM], models=("lexical",), folds=2, max_rows=120, out=tmp_path / "cv")
    out = capsys.readouterr().out
    assert "reusing" in out and f"{tmp_path / 'cv' / 'models' / 'lexical' / 'fold0'}" in out
    assert json.loads((fold1 / "config.json").read_text())["run_id"] == run_id  # not retrained
    assert again["results"] == first["results"]
