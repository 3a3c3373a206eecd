"""The main job, end to end through the four notebooks, at toy scale (--quick)."""
import json

import pandas as pd
import pytest

from kit.ensemble.submission import validate_submission
from conftest import KAGGLE_TEST, SAMPLE_SUB, run_kit


def test_main_job_quick_produces_a_valid_submission(tmp_path):
    run_dir, publish = tmp_path / "run", tmp_path / "submissions"
    publish.mkdir()
    (publish / "submission.csv").write_text("an earlier submission\n")
    # a relative --run-dir, from another folder: every stage writes into that one folder (not a copy nested in it)
    proc = run_kit("main", "--quick", "--run-dir", "run", "--publish-dir", publish, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not (run_dir / "run").exists() and (run_dir / "models").is_dir()
    sub = pd.read_csv(publish / "submission.csv")
    validate_submission(sub, pd.read_csv(KAGGLE_TEST)["id"].tolist(), SAMPLE_SUB)
    # the earlier submission was moved aside, not overwritten
    aside = [p for p in publish.iterdir() if p.name.startswith("submission-")]
    assert len(aside) == 1 and aside[0].read_text() == "an earlier submission\n"
    executed = {p.name for p in (run_dir / "notebooks").iterdir()}
    assert {"01_tokenize-gemma3-270m.ipynb", "01_tokenize-minilm.ipynb", "01_tokenize-lexical.ipynb",
            "02_train-gemma3-270m-fold0.ipynb", "02_train-minilm-fold1.ipynb", "02_train-lexical-fold1.ipynb",
            "03_infer_two_t4-test-lexical.ipynb", "03_infer_two_t4-test-gemma3-270m.ipynb",
            "03_infer_two_t4-oof-minilm.ipynb", "04_blend.ipynb"} <= executed
    session = json.loads((run_dir / "session.json").read_text())  # every member scored, the planned blend published
    assert sorted(session["scored"]) == ["gemma3-270m", "lexical", "minilm"] and session["left_out"] == []
    assert session["published"].startswith("04_blend: 'fit' over ")
    report = (run_dir / "report" / "report.md").read_text()
    assert "weights: fit gemma3-270m " in report and ", minilm " in report and ", lexical " in report
    assert "cross-fitted on 5 parts (by id) of the out-of-fold rows of 2 folds; part 0: weights [" in report
    blend = json.loads((run_dir / "report" / "blend.json").read_text())
    assert blend["space"] == "log" and len(blend["weights"]) == 3 and abs(sum(blend["weights"]) - 1) < 1e-9
    table = pd.read_csv(run_dir / "report" / "evaluation.csv").set_index("method")
    assert {"uniform", "prior", "tfidf", "gemma3-270m", "minilm", "lexical", "blend", "blend (in-sample fit)",
            "gemma3-270m + temperature", "blend without minilm"} <= set(table.index)
    assert "gemma3-270m+tta" not in table.index  # the pairwise head needs no swap TTA
    assert (run_dir / "report" / "reliability.png").stat().st_size > 1000
    # each difference on the same rows with its paired bootstrap interval: blend vs members, ablations, TF-IDF
    compared = {(c["a"], c["b"], c["metric"]): c for c in blend["comparisons"]}
    assert {("blend", "gemma3-270m", "log_loss"), ("blend", "blend without minilm", "accuracy"),
            ("blend", "tfidf", "log_loss"), ("gemma3-270m", "minilm", "accuracy")} <= set(compared)
    assert all(c["low"] <= c["high"] and c["rows"] == blend["oof_rows"] for c in compared.values())
    assert "paired bootstrap 95 % intervals" in report and "| blend − blend without minilm | log loss |" in report


def test_kit_main_runs_the_default_members_or_the_papers_pairing():
    """`kit main` runs Gemma-3-270M + MiniLM + lexical; `--paper` the paper's Gemma + Llama (SmolLM2)
    pairing; `--quick` keeps the members chosen at the toy recipes."""
    from kit.workflows.settings import MainRun, MainSettings

    assert MainSettings.for_run(MainRun()).models == ["gemma3-270m", "minilm", "lexical"]
    paper = MainSettings.for_run(MainRun(paper=True))
    assert paper.models == ["gemma3-270m", "smollm2", "lexical"] and paper.max_rows == 400
    quick_paper = MainSettings.for_run(MainRun(paper=True, quick=True))
    assert quick_paper.models == paper.models and quick_paper.max_rows == MainSettings.quick().max_rows
    assert quick_paper.recipes == MainSettings.quick().recipes
    # the full job compares its blend with the shipped PandaLM judges; the toy job's Kaggle rows have none
    assert sorted(MainSettings().judge_csv) == ["gpt-3.5-turbo", "pandalm-7b"]
    assert MainSettings.quick().judge_csv == {}


def test_a_bad_main_setting_stops_before_any_folder_exists(tmp_path):
    """07_one_session's parameters are checked whole before the run folder is made: MAX_LENGTH as one number
    is every member's; a wrong type, a missing table or a backbone folder that holds no model is one line."""
    from kit.core.errors import SettingsError
    from kit.workflows.main import run_main
    from kit.workflows.settings import MainSettings
    assert MainSettings(models=["llama3-8b", "lexical"], max_length=128).max_length == {"llama3-8b": 128, "lexical": 128}
    for bad in ({"max_length": "128"}, {"max_length": {"gemma3-270m": 0}}, {"model_dir": {"not-a-member": "/x"}}):
        with pytest.raises(SettingsError):
            MainSettings(**bad)
    run = tmp_path / "run"
    for settings, said in ((MainSettings(models=["llama3-8b"], model_dir={"llama3-8b": str(tmp_path / "none")}),
                            "no Hugging Face model folder there"),
                           (MainSettings(train=[str(tmp_path / "missing.csv")]), "is not a file")):
        with pytest.raises(SettingsError, match=said):
            run_main(**settings.to_dict(), run_dir=str(run))
        assert not run.exists()
