"""Flow (ii) of the README's Kaggle guide, in a simulated Kaggle (tests/kaggle_sim.py): big members
each trained in its own GPU session on fold 0 of one shared split, each session's output saved as
its own dataset, and one submission notebook (05_submit, WEIGHTS = "fit") that finds them among
every attached dataset (the kit's own repository, with its results/, included), fits the weights on
the held-out rows they share and writes the submission — only the parameters the README names,
plus CI's scale (rows, tokens, steps); then 05_submit once more with its default parameters."""
import warnings

import pandas as pd
import pytest

from conftest import KAGGLE_TEST, SAMPLE_SUB
from kaggle_sim import (SMALL_TRAIN, WIDGET, common_parameters, kaggle, outputs_of, read_only,  # noqa: F401
                        run_notebook, save_as_dataset, snapshot)
from kit.ensemble.submission import validate_submission

MEMBERS = ("gemma2-9b", "llama3-8b")


def test_members_trained_apart_then_one_submission_notebook(kaggle, tmp_path):
    inp, working, cwd = kaggle / "input", kaggle / "working", kaggle.parent / "kernel-cwd"
    common = common_parameters(kaggle)
    executed = tmp_path / "executed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model in MEMBERS:  # one GPU session per member: the same TRAIN, N_FOLDS, SEED in each
            run_notebook("01_tokenize", executed, cwd, MODEL=model, N_FOLDS=2, MAX_ROWS=40, MAX_LENGTH=96, **common)
            run_notebook("02_train", executed, cwd, MODEL=model, FOLD=0, **SMALL_TRAIN, **common)
            run_notebook("03_infer_two_t4", executed, cwd, SPLITS=["oof"], **common)
            save_as_dataset(working, inp / f"lora-litee-{model}")

        read_only(inp)
        before = snapshot(inp)
        run_notebook("05_submit", executed, cwd, WEIGHTS="fit", **common)
        # a rerun in the same session needs no OVERWRITE; this one scores each model in its own process
        run_notebook("05_submit", executed, cwd, WEIGHTS="fit", ISOLATE=True, **common)
    assert snapshot(inp) == before  # nothing written under /kaggle/input

    sub = pd.read_csv(working / "submission.csv")
    validate_submission(sub, pd.read_csv(KAGGLE_TEST)["id"].tolist(), SAMPLE_SUB)
    assert len(list(working.glob("submission-*.csv"))) == 1  # the first run's, moved aside
    runs = sorted((working / "submit").iterdir())
    assert len(runs) == 2
    record = pd.read_json(runs[-1] / "submit.json", typ="series")
    assert set(record["models"]) == set(MEMBERS)
    blend = record["blend"]
    assert blend["weights_mode"] == "fit" and sum(blend["weights"]) == pytest.approx(1.0)
    assert blend["oof_rows"] >= 15 and blend["oof_score"].startswith("cross-fitted on 5 parts")
    for name in MEMBERS:
        assert (runs[-1] / "tokenized" / name / "test.parquet").exists()
        assert len(list((runs[-1] / "predictions" / name).glob("*.csv"))) == 1

    # executed notebooks read as text: progress as text lines, no widgets
    text, kinds = outputs_of(executed / "02_train-gemma2-9b-0.ipynb")
    assert "train: 100%" in text and "<progress" not in text and WIDGET not in kinds
    text, kinds = outputs_of(executed / "03_infer_two_t4.ipynb")
    assert "100%" in text and WIDGET not in kinds

    # 05_submit with its default parameters, the whole repository (its results/ with their saved
    # blends) attached: the kit's own reports are never candidates, the members are blended as asked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_notebook("05_submit", executed, cwd, **common)
    runs = sorted((working / "submit").iterdir())
    record = pd.read_json(runs[-1] / "submit.json", typ="series")
    assert len(runs) == 3 and set(record["models"]) == set(MEMBERS)
    assert record["blend"]["weights_mode"] == "paper"  # "auto" without a saved blend of these members
    validate_submission(pd.read_csv(working / "submission.csv"), pd.read_csv(KAGGLE_TEST)["id"].tolist(), SAMPLE_SUB)


def test_submit_names_what_is_missing(tmp_path):
    from kit.core.errors import SubmitError
    from kit.workflows.submit import submit
    with pytest.raises(SubmitError, match="no trained models .* attach the training session's output"):
        submit([tmp_path], KAGGLE_TEST, work=tmp_path / "w")
    with pytest.raises(SubmitError, match="MODEL_ROOTS in the notebook, --model-roots on the CLI"):
        submit([tmp_path / "nowhere"], KAGGLE_TEST, work=tmp_path / "w")
