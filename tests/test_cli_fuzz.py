"""Fuzz of the CLI's table inputs: whatever train and test tables a user hands `kit tokenize`
(CSV or parquet; odd cells, ids, labels, missing columns, non-UTF-8 bytes), it either succeeds —
every train row kept or reported, every test id back exactly as written, in order — or stops
with exit code 2 and one line naming the file. Never a traceback."""
import json

import pandas as pd
from hypothesis import HealthCheck, given, settings, strategies as st

from kit.cli import main
from kit.store.io import read_parquet_keeping_ids

odd_cells = st.one_of(st.lists(st.one_of(st.none(), st.text(max_size=30)), max_size=4).map(json.dumps),
                      st.text(max_size=20), st.none(), st.just("[]"))


def mostly(good, odd, one_in: int):
    """``good``, and ``odd`` about once in ``one_in`` draws."""
    return st.integers(0, one_in - 1).flatmap(lambda k: odd if k == one_in - 1 else good)  # 0 is drawn most


# a conversation: prompt, response_a and response_b with as many turns each (now and then an odd cell)
conversation = st.integers(1, 3).flatmap(lambda n: st.tuples(*[st.lists(st.text(min_size=1, max_size=30), min_size=n,
                                                                        max_size=n).map(json.dumps)] * 3))
conversation = conversation.flatmap(lambda c: st.tuples(*(mostly(st.just(cell), odd_cells, 12) for cell in c)))
ids = mostly(st.one_of(st.integers(0, 10**6).map(str), st.from_regex(r"0[0-9]{1,4}", fullmatch=True),
                       st.text("abcxyz-_0", min_size=1, max_size=8), st.just("NA")),
             st.sampled_from(["", " "]), 40)
label = mostly(st.sampled_from([(1, 0, 0), (0, 1, 0), (0, 0, 1)]),
               st.sampled_from([(1, 1, 0), (0, 0, 0), ("yes", 0, 1), (None, 0, 1)]), 15)
row = st.tuples(ids, conversation, label).map(lambda r: (r[0], *r[1], r[2]))
# most tables have unique ids (a duplicate is one more error case, drawn now and then)
table_rows = mostly(st.lists(row, max_size=12, unique_by=lambda r: r[0]), st.lists(row, max_size=12), 8)
columns = ["id", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"]


def _table(rows, labelled: bool, drop: str | None) -> pd.DataFrame:
    frame = pd.DataFrame([(i, p, a, b, *lab) for i, p, a, b, lab in rows], columns=columns)
    if not labelled:
        frame = frame[columns[:4]]
    return frame.drop(columns=[drop]) if drop in frame.columns else frame


def _write(frame: pd.DataFrame, path, kind: str):
    if kind == "parquet":  # a column of mixed types is stored as text, as a user's export would
        mixed = [c for c in frame.columns if frame[c].map(type).nunique() > 1]
        frame = frame.assign(**{c: frame[c].map(lambda v: None if v is None else str(v)) for c in mixed})
        frame.to_parquet(path.with_suffix(".parquet"), index=False)
        return path.with_suffix(".parquet")
    frame.to_csv(path, index=False)
    if kind == "latin-1":
        path.write_bytes(path.read_bytes() + "caf\u00e9\n".encode("latin-1"))
    return path


@given(train_rows=table_rows, test_rows=st.lists(row, max_size=6, unique_by=lambda r: r[0]),
       kind=st.sampled_from(["csv"] * 5 + ["parquet"] * 3 + ["latin-1"]),
       drop=st.sampled_from([None] * 15 + ["prompt", "winner_tie", "id"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_tokenize_succeeds_with_every_row_accounted_for_or_fails_in_one_line(tmp_path_factory, capsys, train_rows,
                                                                              test_rows, kind, drop):
    d = tmp_path_factory.mktemp("fuzz")
    train = _write(_table(train_rows, True, drop), d / "train.csv", kind)
    test_frame = _table(test_rows, False, drop if drop != "winner_tie" else None)
    test = _write(test_frame, d / "test.csv", "parquet" if kind == "parquet" else "csv")
    capsys.readouterr()
    rc = main(["tokenize", "--model", "lexical", "--train", str(train), "--test", str(test), "--folds", "2",
               "--out", str(d / "tok")])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    if rc != 0:
        assert rc == 2, err
        line = err.splitlines()[-1]
        assert line.startswith("error: ") and (str(train) in line or str(test) in line or "--" in line), line
        assert not (d / "tok").exists()  # nothing half-written for a later stage
        return
    cache = d / "tok"
    packed = read_parquet_keeping_ids(cache / "train.parquet")
    skipped = pd.read_csv(cache / "skipped_rows.csv", dtype={"id": str}, keep_default_na=False)
    n_skipped = skipped.query("split == 'train'")["row"].nunique()
    assert len(packed) + n_skipped == len(train_rows)
    assert read_parquet_keeping_ids(cache / "test.parquet")["id"].tolist() == test_frame["id"].tolist()
