"""Ids come back exactly as given: from the input tables (CSV or parquet) through every stage to
submission.csv — text stays text, ``001`` stays ``001``, ``NA`` is an id, not a missing value."""
import pandas as pd
import pytest

from kit.stages.blend import blend_stage
from kit.stages.infer import infer_stage
from kit.store.io import read_csv_keeping_ids
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from conftest import KAGGLE_TEST, PANDALM, run_kit

TEST_IDS = ["001", "NA", "a b-3"]  # a leading zero, pandas' favourite missing value, spaces


def _tables(tmp_path, fmt: str):
    train = pd.read_csv(PANDALM).head(150)
    train["id"] = [f"{i:05d}" for i in range(len(train))]  # "00007" is not 7
    test = pd.read_csv(KAGGLE_TEST)
    test["id"] = TEST_IDS
    paths = []
    for name, frame in (("train", train), ("test", test)):
        path = tmp_path / f"{name}.{fmt}"
        frame.to_parquet(path, index=False) if fmt == "parquet" else frame.to_csv(path, index=False)
        paths.append(path)
    return train, paths


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_ids_reach_the_submission_exactly_as_given(tmp_path, fmt):
    train, (train_path, test_path) = _tables(tmp_path, fmt)
    tok = tokenize_stage("lexical", [train_path], test_path, n_folds=2, out=tmp_path / "tok")
    assert tok.test["id"].tolist() == TEST_IDS
    dirs = [train_stage("lexical", k, tokenized=tok.out_dir, out=tmp_path / f"fold{k}").out_dir for k in (0, 1)]
    for d in dirs:
        oof = infer_stage(d, "oof").predictions
        assert set(oof["id"]) <= set(train["id"])
        infer_stage(d, "test")
    result = blend_stage({"lexical": dirs}, weights="fit", out=tmp_path / "submission.csv",
                     report_dir=tmp_path / "report")
    lines = (tmp_path / "submission.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == TEST_IDS
    assert read_csv_keeping_ids(tmp_path / "submission.csv")["id"].tolist() == TEST_IDS
    # the baselines are scored on the right rows: every training id found, none dropped
    assert len(result.oof_ids) == len(train) and set(result.oof_ids) == set(train["id"])
    assert result.table.loc["tfidf", "log_loss"] < 1.2


def test_numeric_ids_stay_the_same_ids_across_formats(tmp_path):
    """A parquet table with int ids and a CSV with the same digits name the same rows."""
    test = pd.read_csv(KAGGLE_TEST)  # int ids
    test.to_parquet(tmp_path / "test.parquet", index=False)
    tok = tokenize_stage("lexical", [PANDALM], tmp_path / "test.parquet", n_folds=2, max_rows=80,
                         out=tmp_path / "tok")
    assert tok.test["id"].tolist() == [str(i) for i in test["id"]]


def test_an_empty_id_is_a_clear_error(tmp_path):
    test = pd.read_csv(KAGGLE_TEST, dtype={"id": str})
    test.loc[1, "id"] = ""
    test.to_csv(tmp_path / "test.csv", index=False)
    proc = run_kit("tokenize", "--model", "lexical", "--train", PANDALM, "--test", tmp_path / "test.csv",
                   "--max-rows", "60", "--folds", "2", "--out", tmp_path / "tok")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "test.csv") in message and "empty id in 1 row(s) [1]" in message
    assert not (tmp_path / "tok" / "train.parquet").exists()  # nothing half-written is left to read


def test_a_submission_in_another_order_than_the_sample_is_refused(tmp_path):
    """Same ids, other order: the submission must follow the sample's rows (row by row, as Kaggle reads it)."""
    from kit.core.errors import SubmissionError
    from kit.ensemble.submission import validate_submission
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"id": ["001", "7", "NA"], "winner_model_a": 1 / 3, "winner_model_b": 1 / 3,
                  "winner_tie": 1 / 3}).to_csv(sample, index=False)
    ours = pd.DataFrame({"id": ["7", "001", "NA"], "winner_model_a": 0.5, "winner_model_b": 0.25, "winner_tie": 0.25})
    with pytest.raises(SubmissionError, match="id order differs from .*sample.csv: row 0 has id 7, the sample has 001"):
        validate_submission(ours, ["7", "001", "NA"], sample)
    validate_submission(ours.iloc[[1, 0, 2]], ["001", "7", "NA"], sample)  # the sample's order: accepted
