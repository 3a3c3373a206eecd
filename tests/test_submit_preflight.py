"""``kit submit`` decides everything it can before the first model loads: which saved blend (only
a blend report's own, and the one whose members match), whether the test ids fit the sample, and
whether the output can be written — each failure one line, within seconds."""
import json
import shutil
import time
from dataclasses import replace

import pandas as pd
import pytest

from conftest import KAGGLE_TEST, PANDALM, ROOT, SAMPLE_SUB
from kit.core.errors import SubmitError
from kit.stages.blend import blend_stage
from kit.workflows.discovery import choose_saved_blend, find_saved_blends
from kit.workflows.submit import submit


@pytest.fixture(scope="module")
def two_members(tmp_path_factory):
    """Two members trained apart, each session with its own blend report: the lexical preset and a
    second preset of the lexical member type (less regularised)."""
    from kit.core.presets import PRESETS, register_preset
    from kit.stages.infer import infer_stage
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage
    register_preset(replace(PRESETS["lexical"], name="lexical-wide", lexical_c=0.3))
    root = tmp_path_factory.mktemp("members")
    groups = {}
    for name in ("lexical", "lexical-wide"):
        session = root / name
        tokenize_stage(name, [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=100, out=session / "tok")
        dirs = []
        for k in range(2):
            model = train_stage(name, k, tokenized=session / "tok", out=session / "models" / name / f"fold{k}").out_dir
            infer_stage(model, "oof")
            infer_stage(model, "test")
            dirs.append(model)
        groups[name] = dirs
        blend_stage({name: dirs}, weights="fit", out=session / "submission.csv", report_dir=session / "report",
                    sample_submission=SAMPLE_SUB)
    return root, groups


def test_only_a_blend_reports_own_file_is_a_candidate(two_members, tmp_path):
    root, _ = two_members
    shutil.copytree(ROOT / "results" / "main_job", tmp_path / "kit" / "results" / "main_job")  # the repository's copy
    found = find_saved_blends([root, tmp_path / "kit"])
    assert sorted(p.parent.parent.name for p in found) == ["lexical", "lexical-wide"]
    edited = json.loads((root / "lexical" / "report" / "blend.json").read_text())
    shutil.copytree(root / "lexical" / "report", tmp_path / "edited")
    (tmp_path / "edited" / "blend.json").write_text(json.dumps({**edited, "weights": [0.5]}))
    with pytest.raises(SubmitError, match="blend.json changed after its stage wrote it"):  # damaged: named, not skipped
        find_saved_blends([tmp_path / "edited"])


def test_the_blend_whose_members_match_is_chosen_or_the_candidates_are_named(two_members):
    root, _ = two_members
    found = find_saved_blends([root])
    assert choose_saved_blend(found, ["lexical"]).parent.parent.name == "lexical"
    with pytest.raises(SubmitError, match=r"none matches the models found \['lexical', 'lexical-wide'\].*lexical-wide"):
        choose_saved_blend(found, ["lexical", "lexical-wide"])


def test_a_mismatch_fails_in_preflight_before_any_model_scores(two_members, tmp_path):
    root, _ = two_members
    started = time.time()
    with pytest.raises(SubmitError, match="none matches"):
        submit([root], KAGGLE_TEST, work=tmp_path / "w", out=tmp_path / "s.csv", sample_submission=SAMPLE_SUB)
    assert time.time() - started < 30 and not (tmp_path / "w").exists()  # nothing tokenized, nothing scored
    # BLEND_JSON set to one member's own blend while both members are attached: named at once too
    started = time.time()
    with pytest.raises(SubmitError, match=r"members \['lexical'\]\) does not match the models found"):
        submit([root], KAGGLE_TEST, blend_json=root / "lexical" / "report" / "blend.json", work=tmp_path / "w",
               out=tmp_path / "s.csv", sample_submission=SAMPLE_SUB)
    assert time.time() - started < 30 and not (tmp_path / "w").exists()
    # fixed weights need no saved blend and no out-of-fold rows
    done = submit([root], KAGGLE_TEST, weights="equal", work=tmp_path / "w", out=tmp_path / "s.csv",
                  sample_submission=SAMPLE_SUB)
    assert done.weights["weights"] == [0.5, 0.5]


def test_a_hidden_test_table_with_another_sample_fails_in_preflight(two_members, tmp_path):
    """A 200-row test table and the 3-row sample: refused by ids at once (not by row counts after
    hours of scoring); validating against the test ids alone goes through."""
    root, groups = two_members
    rows = pd.read_csv(PANDALM).head(200).drop(columns=["model_a", "model_b", "winner_model_a", "winner_model_b",
                                                         "winner_tie"])
    rows.to_csv(tmp_path / "test.csv", index=False)
    started = time.time()
    with pytest.raises(SubmitError, match="hold different ids.*SAMPLE_SUBMISSION = None"):
        submit([root / "lexical"], tmp_path / "test.csv", work=tmp_path / "w", out=tmp_path / "s.csv",
               sample_submission=SAMPLE_SUB)
    assert time.time() - started < 30
    done = submit([root / "lexical"], tmp_path / "test.csv", work=tmp_path / "w", out=tmp_path / "s.csv",
                  sample_submission=None)
    assert len(pd.read_csv(done.submission)) == 200


def test_an_output_that_cannot_be_made_fails_in_preflight(two_members, tmp_path):
    root, _ = two_members
    (tmp_path / "a-file").write_text("x")
    started = time.time()
    with pytest.raises(SubmitError, match="is a file, not a folder"):
        submit([root / "lexical"], KAGGLE_TEST, weights="equal", work=tmp_path / "w", out=tmp_path / "a-file" / "s.csv")
    assert time.time() - started < 30 and not (tmp_path / "w").exists()


def test_members_trained_apart_on_one_shared_fold_get_fitted_weights(two_members, tmp_path):
    """The recipe for big members: each trained on fold 0 of the same split in its own session (one
    dataset each), its held-out rows scored there; the submission fits the weights on the rows they
    share — cross-fitted on parts of that one fold — and so does the blend stage."""
    from kit.core.presets import PRESETS, register_preset
    from kit.stages.infer import infer_stage
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage
    root, groups = two_members
    for name, dirs in groups.items():  # only fold 0 travels: what a one-fold session saves
        shutil.copytree(dirs[0], tmp_path / f"dataset-{name}" / name / "fold0")
    roots = [tmp_path / f"dataset-{name}" for name in groups]
    done = submit(roots, KAGGLE_TEST, weights="fit", work=tmp_path / "w", out=tmp_path / "s.csv",
                  sample_submission=SAMPLE_SUB)
    applied = done.weights
    assert applied["weights_mode"] == "fit" and "parts" in applied["oof_score"] and applied["oof_rows"] >= 40
    assert sum(applied["weights"]) == pytest.approx(1.0) and len(applied["weights"]) == 2
    assert applied["oof"]["blend"]["log_loss"] < 1.0986  # better than uniform on the shared held-out rows
    result = blend_stage({name: [dirs[0]] for name, dirs in groups.items()}, weights="fit", out=tmp_path / "b.csv",
                         report_dir=tmp_path / "report", sample_submission=SAMPLE_SUB)
    assert result.report["oof_score"].startswith("cross-fitted on 5 parts") and len(result.report["per_fold"]) == 5
    # a member trained on another split shares no holdout: named before anything is scored
    register_preset(replace(PRESETS["lexical"], name="lexical-seed7"))
    tokenize_stage("lexical-seed7", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=100, seed=7, out=tmp_path / "tok7")
    model = train_stage("lexical-seed7", 0, tokenized=tmp_path / "tok7", out=tmp_path / "dataset-7" / "m" / "fold0")
    infer_stage(model.out_dir, "oof")
    with pytest.raises(SubmitError, match="different fold assignments.*--seed"):
        submit([*roots, tmp_path / "dataset-7"], KAGGLE_TEST, weights="fit", work=tmp_path / "w2",
               out=tmp_path / "s2.csv", sample_submission=SAMPLE_SUB)
    assert not (tmp_path / "w2").exists()


def test_the_cli_with_the_repository_among_the_roots_uses_the_matching_blend(two_members, tmp_path):
    """`kit submit --model-roots <a copy of the repository>,<models>` with defaults: the repository's
    own results/main_job/blend.json (members smollm2, minilm, lexical) is no candidate; the models'
    blend report is."""
    from conftest import run_kit
    from kaggle_sim import attach_repository
    root, _ = two_members
    attach_repository(tmp_path / "repository")  # what git tracks: no local artifacts/
    result = run_kit("submit", "--model-roots", f"{tmp_path / 'repository'},{root / 'lexical'}", "--test", str(KAGGLE_TEST),
                     "--work", str(tmp_path / "w"), "--out", str(tmp_path / "s.csv"))
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "w" / "submit").iterdir()
    record = json.loads((run / "submit.json").read_text())
    assert record["blend"]["members"] == ["lexical"] and record["blend"]["weights_mode"] == "fit"


def test_a_projected_time_over_the_budget_fails_in_preflight(two_members, tmp_path, monkeypatch):
    """Each model's infer stage recorded how fast it scored; preflight projects the test table's
    scoring time from it before any model loads, and stops when it exceeds BUDGET_HOURS. (These models
    were timed on the official test's 3 rows, fewer than a projection needs: the bar is lowered here.)"""
    from kit.workflows import preflight
    from kit.workflows.preflight import project_scoring_hours, recorded_timing, timing_parts
    monkeypatch.setattr(preflight, "MIN_TIMED_ROWS", 1)
    root, groups = two_members
    timing = recorded_timing(groups["lexical"][0])
    assert timing["rows"] > 0 and timing["seconds"] > 0 and timing["device_names"] == ["cpu"]
    hours = project_scoring_hours({"lexical": groups["lexical"]}, 1000, ["cpu"], True, None)
    parts = [timing_parts(recorded_timing(d)) for d in groups["lexical"]]
    assert hours == pytest.approx(sum(fixed + 1000 * per_row for fixed, per_row in parts) / 3600)
    started = time.time()
    with pytest.raises(SubmitError, match=r"projected scoring time .* exceeds BUDGET_HOURS = 1e-09 .*TTA = False"):
        submit([root / "lexical"], KAGGLE_TEST, budget_hours=1e-9, work=tmp_path / "w", out=tmp_path / "s.csv",
               sample_submission=SAMPLE_SUB)
    assert time.time() - started < 30 and not (tmp_path / "w").exists()


def test_rerunning_infer_after_another_fold_keeps_what_is_current(tmp_path):
    """03_infer_two_t4 rerun after training another fold: the first fold's predictions (same run,
    same table) are kept, the new fold is scored — no OutputExists; OVERWRITE scores both again."""
    from kit.core.settings import InferSettings
    from kit.stages.infer_many import infer_many
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage
    tokenize_stage("lexical", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=100, out=tmp_path / "tok")
    first = train_stage("lexical", 0, tokenized=tmp_path / "tok", out=tmp_path / "m" / "fold0").out_dir
    assert not infer_many([first], ["test", "oof"])["kept"].any()
    second = train_stage("lexical", 1, tokenized=tmp_path / "tok", out=tmp_path / "m" / "fold1").out_dir
    again = infer_many([first, second], ["test", "oof"])
    assert again["kept"].tolist() == [True, True, False, False]
    assert not infer_many([first, second], ["test"], settings=InferSettings(overwrite=True))["kept"].any()
    # predictions edited since: not current, so not silently kept
    edited = first / "predictions" / "test.csv"
    edited.chmod(0o644)
    edited.write_text(edited.read_text().replace("0.", "0.0", 1))
    from kit.core.errors import OutputExists
    with pytest.raises(OutputExists, match="--overwrite"):
        infer_many([first], ["test"])
