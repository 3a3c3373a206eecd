"""Chosen/rejected data read as competition rows: the real HH-RLHF fixture, UltraFeedback-style
messages, plain prompt/chosen/rejected columns, and malformed records (reported, never dropped)."""
import gzip
import json

import pandas as pd

from kit.cli import main
from kit.data.ingest import load_conversations
from kit.data.preference import READER_PROBLEM
from conftest import PANDALM, ROOT

HH = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def test_hh_rlhf_fixture_every_record_kept_or_reported_and_the_chosen_reply_is_the_winner():
    raw = [json.loads(line) for line in gzip.open(HH, "rt", encoding="utf-8")]
    conv = load_conversations(HH)
    assert len(raw) == 2312 and len(conv.frame) + conv.skipped["row"].nunique() == 2312
    assert set(conv.skipped["column"]) == {"chosen/rejected"} and len(conv.skipped) < 20
    assert conv.frame["label"].value_counts().to_dict().keys() == {0, 1}  # both sides win, no ties
    assert 0.4 < (conv.frame["label"] == 0).mean() < 0.6
    multi = 0
    for r in conv.frame.itertuples():
        record = raw[int(r.id.rsplit("-", 1)[1])]
        winner, loser = (r.response_a, r.response_b) if r.label == 0 else (r.response_b, r.response_a)
        assert record["chosen"].rstrip().endswith(winner[-1]) and record["rejected"].rstrip().endswith(loser[-1])
        assert r.response_a[:-1] == r.response_b[:-1] and len(r.prompt) == len(r.response_a)
        assert record["chosen"].startswith("\n\nHuman: " + r.prompt[0])
        multi += len(r.prompt) > 1
    assert multi > 500  # the shared earlier turns are kept, turn by turn
    assert load_conversations(HH).frame.equals(conv.frame)  # the coin is seeded


def test_messages_pairs_and_malformed_records(tmp_path):
    def msgs(*turns):
        return [{"role": role, "content": text} for role, text in turns]

    records = [
        {"prompt": "2+2?", "chosen": msgs(("user", "2+2?"), ("assistant", "4")),
         "rejected": msgs(("user", "2+2?"), ("assistant", "5"))},
        {"prompt": "hi", "chosen": msgs(("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "bye"),
                                        ("assistant", "bye!")),
         "rejected": msgs(("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "bye"),
                          ("assistant", "no"))},
        {"prompt": "x", "chosen": msgs(("user", "x"), ("assistant", "same")),
         "rejected": msgs(("user", "x"), ("assistant", "same"))},
        {"prompt": "y", "chosen": msgs(("user", "y"), ("assistant", "a")),
         "rejected": msgs(("user", "other"), ("assistant", "b"))},
        {"prompt": "z", "chosen": msgs(("user", "z"), ("assistant", "a"))},
    ]
    path = tmp_path / "ultra.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n")
    conv = load_conversations(path)
    assert len(conv.frame) == 2
    second = conv.frame.iloc[1]
    assert second["prompt"] == ["be brief\n\nhi", "bye"] and second["response_a"][0] == second["response_b"][0] == "hello"
    assert {second["response_a"][1], second["response_b"][1]} == {"bye!", "no"}
    problems = dict(zip(conv.skipped["row"], conv.skipped["problem"]))
    assert problems[2] == "the chosen and rejected replies are identical"
    assert problems[3].startswith("the transcripts differ at turn 1")
    assert problems[4] == "no rejected field"
    assert problems[5].startswith("line 6: bad JSON")

    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"prompt": ["p1", "p2"], "chosen": ["good", "fine"], "rejected": ["bad", "fine"]}).to_csv(pairs, index=False)
    conv = load_conversations(pairs)
    assert len(conv.frame) == 1 and conv.frame.iloc[0]["prompt"] == ["p1"] and READER_PROBLEM not in conv.frame
    assert conv.skipped["problem"].tolist() == ["the chosen and rejected replies are identical"]


def test_tokenize_takes_extra_preference_data_beside_the_competition_table(tmp_path, capsys):
    rc = main(["tokenize", "--model", "lexical", "--train", f"{PANDALM},{HH}", "--no-test", "--folds", "5",
               "--out", str(tmp_path / "tok")])
    assert rc == 0, capsys.readouterr().err
    packed = pd.read_parquet(tmp_path / "tok" / "train.parquet")
    skipped = pd.read_csv(tmp_path / "tok" / "skipped_rows.csv")
    from_hh = packed["id"].str.startswith("harmless-base-test-")
    assert (~from_hh).sum() == 999 and from_hh.sum() + skipped.query("column == 'chosen/rejected'")["row"].nunique() == 2312
    assert set(packed.loc[from_hh, "fold"]) == set(range(5))
    assert "skipped 9 unusable train row(s)" in capsys.readouterr().out
