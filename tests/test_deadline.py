"""A submission that cannot time out: with a budget shorter than its members need, kit submit (and the one Kaggle
submission notebook) finishes within the budget with a valid submission of what finished, and its record names
what was left out. Real members: the lexical model (seconds) and SmolLM2 (a real 135M decoder that needs minutes
to score 600 rows on 2 cores), each trained briefly."""
import json
import time
import warnings

import pandas as pd
import pytest

from conftest import PANDALM
from kaggle_sim import common_parameters, kaggle, outputs_of, read_only, run_notebook, snapshot  # noqa: F401

from kit import submit, tokenize_stage, train_stage
from kit.ensemble.submission import validate_submission

TEST_ROWS = 600


def _two_members(base, cache_test: str = "") -> tuple:
    """(models root, test table) under ``base``: a lexical and a SmolLM2 member trained on fold 0 of PandaLM's
    first rows; a test table of TEST_ROWS other PandaLM rows (in the members' caches too with ``cache_test``)."""
    table = pd.read_csv(PANDALM, dtype={"id": str}, keep_default_na=False)
    test = base / "test.csv"
    table.iloc[399:399 + TEST_ROWS].drop(columns=["winner_model_a", "winner_model_b", "winner_tie"]).to_csv(
        test, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, extra in (("lexical", {}), ("smollm2", {"max_length": 64})):
            tokenize_stage(name, [PANDALM], str(test) if cache_test else "", n_folds=2, max_rows=60,
                           out=base / "tokenized" / name, **extra)
            train_stage(name, 0, tokenized=base / "tokenized" / name, out=base / "models" / name / "fold0",
                        max_steps=1, batch_size=4, grad_accum=1, max_eval_rows=4)
    return base / "models", test


@pytest.fixture(scope="module")
def slow_and_fast(tmp_path_factory):
    """(models root, test table): the two members, their caches without the test table (kit submit packs it)."""
    return _two_members(tmp_path_factory.mktemp("deadline"))


def _record(work) -> dict:
    (run,) = (work / "submit").iterdir()
    return json.loads((run / "submit.json").read_text())


def test_a_model_still_scoring_at_the_deadline_is_stopped_and_the_submission_stands(slow_and_fast, tmp_path,
                                                                                     monkeypatch):
    """The edge: every projection says "it fits" (SmolLM2's forced to 1 s here), so SmolLM2 starts after the
    lexical member, in its own process as on GPUs, and is still scoring when the 25-second deadline comes: it is
    stopped, the lexical member's submission stands, and the whole call ends within the budget."""
    from kit.workflows import submit_run
    monkeypatch.setattr(submit_run, "projected_seconds", lambda d, *a, **k: 1.0 if "smollm2" in str(d) else 0.0)
    models, test = slow_and_fast
    budget_s = 25
    started = time.time()
    res = submit([str(models)], str(test), weights="equal", work=tmp_path / "w", out=tmp_path / "submission.csv",
                 sample_submission=None, budget_hours=budget_s / 3600, isolate=True)
    elapsed = time.time() - started
    assert elapsed <= budget_s + 3, elapsed  # the margin (5 %) absorbs writing the submission
    record = _record(tmp_path / "w")
    assert list(record["scored"]) == ["lexical"]
    assert any(line.startswith("smollm2/fold0:") and "deadline" in line for line in record["left_out"]), record
    assert record["blend"]["members"] == ["lexical"] and "1 of 2 members finished" in record["blend"]["why"]
    sub = pd.read_csv(res.submission, dtype={"id": str})
    validate_submission(sub, pd.read_csv(test, dtype={"id": str})["id"].tolist(), None)


def test_with_a_budget_too_small_for_every_member_05_submits_what_fits_and_names_the_rest(slow_and_fast, kaggle,
                                                                                            tmp_path):
    """The simulated Kaggle: the trained members attached as a dataset (read-only), the hidden test table attached,
    05_submit run with the budget as its only change: a valid submission of every test id, and the report (the
    notebook's output and submit.json) names SmolLM2 as left out."""
    import shutil
    models, test = slow_and_fast
    inp, working, cwd = kaggle / "input", kaggle / "working", kaggle.parent / "kernel-cwd"
    shutil.copytree(models, inp / "my-models")
    (inp / "my-test").mkdir()
    shutil.copy(test, inp / "my-test" / "test.csv")
    read_only(inp)
    before = snapshot(inp)
    budget_s = 40
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        executed = run_notebook("05_submit", tmp_path / "executed", cwd, MODEL_ROOTS=[str(inp / "my-models")],
                                TEST=str(inp / "my-test" / "test.csv"), SAMPLE_SUBMISSION=None,
                                BUDGET_HOURS=budget_s / 3600, **common_parameters(kaggle))
    assert snapshot(inp) == before
    record = _record(working)
    assert record["seconds"] <= budget_s + 3
    assert list(record["scored"]) == ["lexical"] and any(x.startswith("smollm2/") for x in record["left_out"])
    validate_submission(pd.read_csv(working / "submission.csv", dtype={"id": str}),
                        pd.read_csv(test, dtype={"id": str})["id"].tolist(), None)
    text, _ = outputs_of(executed)
    assert "left_out" in text and "smollm2/fold0" in text


@pytest.fixture(scope="module")
def session_run(tmp_path_factory):
    """(a main-job run folder after training, test table): the two members, the test table in their caches."""
    run = tmp_path_factory.mktemp("session")
    return run, _two_members(run, cache_test="yes")[1]


def test_the_main_jobs_scoring_publishes_the_first_member_and_stops_at_the_deadline(session_run, tmp_path,
                                                                                    monkeypatch):
    """07 / kit main after training: the members' test rows go through 03_infer_two_t4 cheapest first against
    the session's deadline. The lexical member is scored and published at once; SmolLM2 (projected to fit, forced
    here, so that it starts) is still scoring when the 45-second deadline comes and is stopped; the held-out rows
    of the lexical member are scored and 04_blend replaces the partial submission, or, with no time left, the
    partial one stands. Either way: a valid submission of every test id, within the deadline plus the blend, and
    session.json naming what was left out."""
    from kit.core.settings import BlendSettings
    from kit.workflows import main_scoring
    from kit.workflows.main import execute_notebook
    run, test = session_run
    monkeypatch.setattr(main_scoring, "projected_seconds", lambda d, *a, **k: 1.0 if "smollm2" in str(d) else 0.0)
    monkeypatch.setenv("KIT_WORK", str(run))
    target = tmp_path / "published" / "submission.csv"
    budget_s = 45
    started = time.time()
    scoring = main_scoring.SessionScoring(run, target, started + budget_s, BlendSettings(
        weights="fit", space="log", sample_submission=None, judge_csv=None), execute_notebook, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert scoring.run() == target
    elapsed = time.time() - started
    record = json.loads((run / "session.json").read_text())
    assert record["scored"] == ["lexical"], record
    assert any(x.startswith("smollm2 (test):") and "deadline" in x for x in record["left_out"]), record
    assert (run / "partial" / "submission.csv").is_file()  # published after the first member, before SmolLM2 ran
    published_by_blend = record["published"].startswith("04_blend")
    assert published_by_blend or record["published"].startswith("partial: "), record
    # the stage stops itself at the deadline; what follows is the notebook kernel's shutdown (seconds, more on a busy
    # machine) and, if there was time, the blend: both inside the session's margin (5 %, up to 15 min, on Kaggle)
    assert elapsed <= budget_s + (30 if published_by_blend else 15), (elapsed, record)
    validate_submission(pd.read_csv(target, dtype={"id": str}), pd.read_csv(test, dtype={"id": str})["id"].tolist(),
                        None)
    assert not (run / "models" / "smollm2" / "fold0" / "predictions" / "test.csv").exists()  # stopped: nothing written
