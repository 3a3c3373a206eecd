"""Extra training rows deduplicated against the main table's and the test table's prompts:
exact (normalised) and near duplicates go, test rows never, the rest join every fold's training."""
import json

import pandas as pd
import pytest

from kit.data.dedup import dedup_extra
from kit.stages.infer import infer_stage
from kit.core.schema import EXTRA_FOLD
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from conftest import KAGGLE_TEST, PANDALM, ROOT, lexical_folds

HH = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def _extra_table(tmp_path):
    """Real rows: PandaLM prompts re-cased/re-spaced (exact), with one word changed (near), and HH rows."""
    pandalm = pd.read_csv(PANDALM).head(300)
    test = pd.read_csv(KAGGLE_TEST)
    long = pandalm[pandalm["prompt"].str.len() > 200].iloc[0]
    exact = pandalm.iloc[[0]].assign(id="x-exact",
                                     prompt=json.dumps(["  " + json.loads(pandalm["prompt"].iloc[0])[0].upper() + " "]))
    words = json.loads(long["prompt"])[0].split(" ")
    words[len(words) // 2] = "banana"
    near = long.to_frame().T.assign(id="x-near", prompt=json.dumps([" ".join(words)]))
    from_test = test.iloc[[1]].assign(id="x-test", winner_model_a=1, winner_model_b=0, winner_tie=0)
    hh = pd.DataFrame([{"id": f"x-hh-{i}", "prompt": json.dumps([f"an unrelated question number {i} about gardens"]),
                        "response_a": json.dumps(["yes"]), "response_b": json.dumps(["no"]),
                        "winner_model_a": 1, "winner_model_b": 0, "winner_tie": 0} for i in range(3)])
    table = pd.concat([exact, near, from_test, hh], ignore_index=True)[
        ["id", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"]]
    path = tmp_path / "extra.csv"
    table.to_csv(path, index=False)
    return path


def test_exact_and_near_duplicates_of_train_or_test_prompts_are_removed_and_reported(tmp_path):
    res = tokenize_stage("lexical", [PANDALM], KAGGLE_TEST, n_folds=3, max_rows=300, out=tmp_path / "tok",
                         extra=[_extra_table(tmp_path), HH])
    removed = pd.read_csv(tmp_path / "tok" / "dedup_removed.csv", dtype=str)
    rules = dict(zip(removed["id"], removed["rule"]))
    assert rules == {"x-exact": "exact", "x-near": "near", "x-test": "exact"}, removed
    assert removed.set_index("id").loc["x-test", "matched_split"] == "test"
    assert float(removed.set_index("id").loc["x-near", "similarity"]) >= 0.9
    extra = res.train[res.train["fold"] == EXTRA_FOLD]
    assert set(extra["id"]) >= {"x-hh-0", "x-hh-1", "x-hh-2"} and len(extra) == 3 + 2303
    assert len(res.test) == len(pd.read_csv(KAGGLE_TEST))  # a test row is never removed
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    assert meta["extra_rows"] == {"kept": 3 + 2303, "soft_labelled": 0, "removed_exact": 2, "removed_near": 1}
    # exact rule only: the near duplicate stays
    kept, gone = dedup_extra(pd.DataFrame({"id": ["a"], "prompt": [["Hello  World"]]}),
                             {"train": pd.DataFrame({"id": ["t"], "prompt": [["hello world!"]]})}, threshold=1.0)
    assert len(kept) == 1 and gone.empty
    with pytest.raises(ValueError, match="dedup similarity"):
        dedup_extra(kept, {}, threshold=0)


def test_extra_rows_train_in_every_fold_and_are_never_held_out(tmp_path):
    tok = tokenize_stage("lexical", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=200, out=tmp_path / "tok",
                         extra=[_extra_table(tmp_path)])
    model = train_stage("lexical", 0, tokenized=tok.out_dir, out=tmp_path / "m")
    n_extra = int((tok.train["fold"] == EXTRA_FOLD).sum())
    assert n_extra == 3
    assert model.metrics["train_rows"] == int((tok.train["fold"] == 1).sum()) + n_extra
    oof = infer_stage(model.out_dir, "oof").predictions
    assert not oof["id"].str.startswith("x-").any() and len(oof) == int((tok.train["fold"] == 0).sum())


def test_the_blend_report_scores_baselines_on_a_cache_with_extra_rows(tmp_path):
    from kit.stages.blend import blend_stage

    dirs = lexical_folds(tmp_path, max_rows=200, extra=[_extra_table(tmp_path)])
    result = blend_stage({"lexical": dirs}, weights="equal", out=tmp_path / "s.csv", report_dir=tmp_path / "r",
                         sample_submission=None)
    assert result.oof_rows == 200 and {"prior", "tfidf", "blend"} <= set(result.table.index)


def test_cv_extra_trains_every_fold_on_the_extra_rows_and_scores_only_the_main_table(tmp_path):
    """`kit cv --extra`: the real HH-RLHF pairs join each fold's training rows (fold -2, deduplicated
    as tokenize does), never its held-out rows; the out-of-fold rows are the main table's only, and a
    second call with the same extra reuses the cache while another extra is refused."""
    import gzip
    from conftest import run_kit
    hh = tmp_path / "hh-300.jsonl.gz"  # the first 300 real pairs: the same reader, at CI's scale
    with gzip.open(HH, "rt") as source, gzip.open(hh, "wt") as target:
        target.writelines(line for _, line in zip(range(300), source))
    args = ["cv", "--train", str(PANDALM), "--models", "lexical", "--folds", "2", "--max-rows", "120",
            "--out", str(tmp_path / "cv")]
    result = run_kit(*args, "--extra", str(hh))
    assert result.returncode == 0, result.stderr[-2000:]
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert cv["rows"] == 120 and cv["settings"]["extra"] == [str(hh)]
    n_extra = cv["settings"]["extra_rows"]
    assert 290 <= n_extra <= 300 and cv["settings"]["extra_removed"] == 0  # a few records cannot be split
    assert f"extra training rows in every fold: {n_extra}" in (tmp_path / "cv" / "cv.md").read_text()
    for k in range(2):
        metrics = json.loads((tmp_path / "cv" / "models" / "lexical" / f"fold{k}" / "metrics.json").read_text())
        held_in = pd.read_parquet(tmp_path / "cv" / "tokenized" / "lexical" / "train.parquet", columns=["fold"])
        assert metrics["train_rows"] == int((held_in["fold"] == 1 - k).sum()) + n_extra
    refused = run_kit(*args)  # the cache was made with the extra rows: not silently reused without them
    assert refused.returncode == 2 and "other settings" in refused.stderr and "extra_sources" in refused.stderr
