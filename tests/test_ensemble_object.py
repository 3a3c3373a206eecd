"""The trained ensemble as a Python object: kit.load_ensemble(...).predict / .compare on rows held in memory give
kit submit's probabilities on the same rows (a real MiniLM joint member with swap TTA and the lexical member)."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import PANDALM

import kit
from kit import submit, tokenize_stage, train_stage
from kit.core.errors import DataError
from kit.core.schema import LABEL_COLUMNS, PROB_COLUMNS
from kit.store.io import read_csv_keeping_ids

ROWS = 12


@pytest.fixture(scope="module")
def ensemble_rows(tmp_path_factory):
    """(models root, a competition test table of ROWS PandaLM rows no member trained on, its rows as texts)."""
    base = tmp_path_factory.mktemp("ensemble")
    table = pd.read_csv(PANDALM, dtype={"id": str}, keep_default_na=False)
    rows = table.iloc[500:500 + ROWS].drop(columns=["winner_model_a", "winner_model_b", "winner_tie"])
    rows.to_csv(base / "test.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, extra in (("lexical", {}), ("minilm", {"max_length": 64, "member": "joint"})):
            tokenize_stage(name, [PANDALM], "", n_folds=2, max_rows=60, out=base / "tok" / name, **extra)
            train_stage(name, 0, tokenized=base / "tok" / name, out=base / "models" / name / "fold0",
                        max_steps=2, batch_size=4, grad_accum=1, max_eval_rows=8)
    texts = rows.assign(**{c: rows[c].map(lambda cell: json.loads(cell)) for c in ("prompt", "response_a",
                                                                                 "response_b")})
    return base / "models", base / "test.csv", texts


def test_predict_and_compare_give_kit_submits_probabilities(ensemble_rows, tmp_path):
    models, test, texts = ensemble_rows
    res = submit([str(models)], str(test), weights="equal", out=str(tmp_path / "submission.csv"),
                 work=str(tmp_path / "w"), sample_submission=None, budget_hours=None)
    expected = read_csv_keeping_ids(res.submission)
    ens = kit.load_ensemble([str(models)], weights="equal")
    got = ens.predict(texts)  # the turns as Python lists, the ids as given
    assert got["id"].tolist() == texts["id"].tolist()
    np.testing.assert_allclose(got[PROB_COLUMNS].to_numpy(), expected[LABEL_COLUMNS].to_numpy(), atol=1e-7)
    # both members were blended, MiniLM (a joint head) with its swapped pass
    record = json.loads((res.run_dir / "submit.json").read_text())
    assert sorted(record["scored"]) == ["lexical", "minilm"] and record["left_out"] == [], record
    (scored,) = (res.run_dir / "predictions" / "minilm").glob("*.csv")
    assert "p_a_swap" in read_csv_keeping_ids(scored).columns
    first = texts.iloc[0]
    one = ens.compare(first["prompt"], first["response_a"], first["response_b"])
    assert set(one) == set(PROB_COLUMNS) and abs(sum(one.values()) - 1) < 1e-6
    np.testing.assert_allclose([one[c] for c in PROB_COLUMNS], expected[LABEL_COLUMNS].to_numpy()[0], atol=1e-5)
    # rows as plain texts (one turn each) and integer ids come back as given
    plain = pd.DataFrame({"id": [7, 3], "prompt": ["Name a prime.", "Say hi."], "response_a": ["7", "Hi!"],
                          "response_b": ["8", "No."]})
    out = ens.predict(plain)
    assert out["id"].tolist() == [7, 3] and np.allclose(out[PROB_COLUMNS].sum(axis=1), 1)


def test_rows_without_their_columns_or_with_other_cells_are_one_line(ensemble_rows):
    models, _, _ = ensemble_rows
    ens = kit.load_ensemble([str(models)], weights="equal")
    with pytest.raises(DataError, match=r"\['response_b'\] missing"):
        ens.predict(pd.DataFrame({"prompt": ["a"], "response_a": ["b"]}))
    with pytest.raises(DataError, match="row 0, column response_a: give a text or a list of texts, not int"):
        ens.predict(pd.DataFrame({"prompt": ["a"], "response_a": [5], "response_b": ["c"]}))
