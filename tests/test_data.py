import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from kit.core.errors import DataError

from kit.data.ingest import assign_folds, load_conversations, parse_turns, strip_surrogates, swap_ab
from conftest import KAGGLE_TEST, KAGGLE_TRAIN, PANDALM


# -- real shipped rows -----------------------------------------------------------------
def test_kaggle_sample_parses_completely():
    conv = load_conversations(KAGGLE_TRAIN)
    assert len(conv) == 100 and conv.skipped.empty
    assert conv.frame["label"].value_counts().to_dict() == {0: 31, 1: 33, 2: 36}
    n_turns = conv.frame["prompt"].map(len)
    assert (n_turns > 1).sum() == 16 and n_turns.max() == 10
    for col in ("prompt", "response_a", "response_b"):
        assert (conv.frame[col].map(len) == n_turns).all()
        assert conv.frame[col].map(lambda t: all(isinstance(x, str) for x in t)).all()


def test_official_test_csv_keeps_every_id():
    conv = load_conversations(KAGGLE_TEST)
    assert conv.frame["id"].tolist() == ["136060", "211333", "1233961"]  # ids are text, as written
    assert (conv.frame["label"] == -1).all()


def test_pandalm_labels_match_provenance_note():
    conv = load_conversations(PANDALM)
    assert len(conv) == 999
    assert conv.frame["label"].value_counts().to_dict() == {0: 422, 1: 472, 2: 105}


# -- the parser --------------------------------------------------------------------------
def test_parse_turns_cases():
    assert parse_turns('["a", null, "c"]') == ["a", "", "c"]
    assert parse_turns("[]") == []
    assert parse_turns("null") == []
    assert parse_turns('["x\\ud83d y"]') == ["x y"]  # lone surrogate removed
    assert parse_turns('["\\ud83d\\ude00"]') == ["\U0001F600"]  # a valid pair survives
    assert parse_turns([1, None, "z"]) == ["1", "", "z"]
    with pytest.raises(ValueError, match="bad JSON"):
        parse_turns('["unterminated')
    with pytest.raises(ValueError, match="not a list"):
        parse_turns('{"a": 1}')
    with pytest.raises(ValueError, match="turn of type"):
        parse_turns('[["nested"]]')


cells = st.one_of(
    st.none(),
    st.text(max_size=30),  # arbitrary (mostly invalid JSON) text
    st.lists(st.one_of(st.none(), st.text(max_size=40), st.integers(), st.floats(allow_nan=False)),
             max_size=20).map(json.dumps),
    st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=20),
)


@given(cells)
@settings(max_examples=300, deadline=None)
def test_parser_returns_clean_strings_or_a_named_error(cell):
    try:
        turns = parse_turns(cell)
    except ValueError as err:
        assert str(err)
        return
    assert all(isinstance(t, str) for t in turns)
    assert not any("\ud800" <= ch <= "\udfff" for t in turns for ch in t)
    for t in turns:
        t.encode("utf-8")  # raises on a lone surrogate


def _frame(rows, labelled=True):
    records = []
    for i, (p, a, b, lab) in enumerate(rows):
        rec = {"id": str(i), "prompt": p, "response_a": a, "response_b": b}
        if labelled:
            rec.update(winner_model_a=lab[0], winner_model_b=lab[1], winner_tie=lab[2])
        records.append(rec)
    return pd.DataFrame(records)


labels = st.sampled_from([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 0, 0), ("x", 0, 1)])


@given(st.lists(st.tuples(cells, cells, cells, labels), min_size=1, max_size=15))
@settings(max_examples=150, deadline=None)
def test_every_row_is_kept_or_reported(rows):
    frame = _frame(rows)
    train = load_conversations(frame, labelled=True)
    kept, skipped = set(train.frame["id"]), set(train.skipped["id"])
    assert kept | skipped == set(frame["id"]) and not kept & skipped
    for _, r in train.frame.iterrows():
        assert len(r.prompt) == len(r.response_a) == len(r.response_b) >= 1
        assert r.label in (0, 1, 2)
    test = load_conversations(frame.drop(columns=["winner_model_a", "winner_model_b", "winner_tie"]),
                              labelled=False)
    assert test.frame["id"].tolist() == frame["id"].tolist()  # never dropped, order kept
    for _, r in test.frame.iterrows():
        assert len(r.prompt) == len(r.response_a) == len(r.response_b) >= 1


def test_malformed_train_rows_are_reported_with_row_column_problem(tmp_path):
    good = '["hi"]'
    frame = _frame([
        (good, good, good, (1, 0, 0)),
        ('["bad', good, good, (1, 0, 0)),
        ('["a","b"]', good, good, (0, 1, 0)),
        (good, good, good, (1, 1, 0)),
        ("[]", "[]", "[]", (0, 0, 1)),
    ])
    conv = load_conversations(frame)
    assert conv.frame["id"].tolist() == ["0"]
    rep = conv.skipped.set_index("id")
    assert rep.loc["1", "column"] == "prompt" and "bad JSON" in rep.loc["1", "problem"]
    assert "turn counts disagree: prompt 2, response_a 1, response_b 1" in rep.loc["2", "problem"]
    assert "not one-hot" in rep.loc["3", "problem"]
    assert "no turns" in rep.loc["4", "problem"]
    assert rep.loc["2", "row"] == 2


def test_unparseable_test_row_keeps_raw_text():
    frame = _frame([('["bad', '["x"]', '["y", "z"]', None)], labelled=False)
    conv = load_conversations(frame, labelled=False)
    row = conv.frame.iloc[0]
    assert row.prompt == ['["bad', ""] and row.response_a == ["x", ""] and row.response_b == ["y", "z"]
    assert len(conv.notes) == 2


def test_missing_columns_and_duplicate_ids_are_named():
    frame = _frame([('["a"]', '["b"]', '["c"]', (1, 0, 0))])
    with pytest.raises(DataError, match=r"missing column\(s\) \['response_b', 'winner_tie'\]"):
        load_conversations(frame.drop(columns=["response_b", "winner_tie"]), labelled=True)
    dup = pd.concat([frame, frame, frame.assign(id=7)], ignore_index=True)
    with pytest.raises(DataError, match=r"duplicate id\(s\): \['0'\]"):
        load_conversations(dup)


def test_strip_surrogates_keeps_everything_else():
    assert strip_surrogates("a\udc00b\ud800") == "ab"
    assert strip_surrogates("héllo 😀") == "héllo 😀"


# -- swap and folds ---------------------------------------------------------------------
def test_swap_exchanges_responses_and_labels():
    frame = load_conversations(KAGGLE_TRAIN).frame
    swapped = swap_ab(frame)
    assert (swapped["response_a"] == frame["response_b"]).all()
    assert (swapped["model_a"] == frame["model_b"]).all()
    assert swapped["label"].tolist() == [{0: 1, 1: 0, 2: 2}[x] for x in frame["label"]]
    assert swap_ab(swapped)["label"].tolist() == frame["label"].tolist()


def test_folds_are_grouped_by_prompt_and_stratified():
    frame = load_conversations(PANDALM).frame
    folds = assign_folds(frame, n_folds=5, seed=0)
    assert set(folds) == {0, 1, 2, 3, 4}
    prompts = frame["prompt"].map(tuple)
    assert (pd.Series(folds).groupby(prompts.values).nunique() == 1).all()  # no prompt in two folds
    overall = np.bincount(frame["label"], minlength=3) / len(frame)
    for k in range(5):
        share = np.bincount(frame["label"][folds == k], minlength=3) / (folds == k).sum()
        assert np.abs(share - overall).max() < 0.08
    assert (assign_folds(frame, 5, seed=0) == folds).all()
