import json

import nbformat
import pandas as pd
import pytest

from kit.core.errors import OutputExists
from kit.stages.tokenize import tokenize_stage
from conftest import KAGGLE_TEST, KAGGLE_TRAIN, PANDALM, ROOT, run_kit


@pytest.mark.parametrize("model,head", [("minilm", None), ("smollm2", "joint")])
def test_cli_writes_caches_for_shipped_data(tmp_path, model, head):
    out = tmp_path / model
    proc = run_kit("tokenize", "--model", model, "--out", out, "--max-length", "512",
                   *(["--head", head] if head else []))
    assert proc.returncode == 0, proc.stderr
    train, test = pd.read_parquet(out / "train.parquet"), pd.read_parquet(out / "test.parquet")
    assert len(train) == 1099 and set(train["fold"]) == set(range(5))  # 100 kaggle + 999 pandalm
    assert test["id"].tolist() == ["136060", "211333", "1233961"]
    if head == "joint":
        assert (train["n_tokens"] <= 512).all() and (train["input_ids"].map(len) == train["n_tokens"]).all()
        assert train["input_ids_swap"].map(len).le(512).all()
    else:  # the preset's pairwise head: each side packed on its own, each within the budget
        sides = train["side_a_ids"].map(len), train["side_b_ids"].map(len)
        assert (sides[0] <= 512).all() and (sides[1] <= 512).all()
        assert (pd.concat(sides, axis=1).max(axis=1) == train["n_tokens"]).all()
    for col in ("prompt_kept", "prompt_total", "response_a_kept", "response_b_total", "turns_kept"):
        assert col in train
    meta = json.loads((out / "meta.json").read_text())
    assert meta["preset"]["name"] == model and meta["rows"]["train"] == 1099
    assert meta["preset"]["member"] == (head or "pairwise")
    assert (out / "retention.png").stat().st_size > 1000


def test_cli_with_custom_train_reports_skipped_rows(tmp_path):
    rows = pd.read_csv(KAGGLE_TRAIN).head(12)
    rows.loc[3, "response_a"] = '["broken'
    rows.loc[5, "winner_tie"] = 1  # two winners
    path = tmp_path / "mine.csv"
    rows.to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_kit("tokenize", "--model", "minilm", "--train", path, "--folds", "2", "--out", out,
                   "--max-length", "256")
    assert proc.returncode == 0, proc.stderr
    train = pd.read_parquet(out / "train.parquet")
    assert len(train) == 10 and (train["n_tokens"] <= 256).all()
    skipped = pd.read_csv(out / "skipped_rows.csv").query("split == 'train'")
    assert sorted(skipped["row"]) == [3, 5]
    assert set(skipped["id"]) == {rows.loc[3, "id"], rows.loc[5, "id"]}
    assert "bad JSON" in skipped.set_index("row").loc[3, "problem"]
    assert skipped.set_index("row").loc[3, "column"] == "response_a"


def test_existing_output_is_not_overwritten(tmp_path):
    kwargs = dict(train=[KAGGLE_TRAIN], test=KAGGLE_TEST, out=tmp_path, n_folds=2)
    tokenize_stage("minilm", **kwargs)
    before = (tmp_path / "train.parquet").read_bytes()
    with pytest.raises(OutputExists, match="train.parquet"):
        tokenize_stage("minilm", **kwargs)
    assert (tmp_path / "train.parquet").read_bytes() == before
    tokenize_stage("minilm", **kwargs, overwrite=True, max_length=128)
    assert pd.read_parquet(tmp_path / "train.parquet")["n_tokens"].max() <= 128


def test_cli_errors_are_clear(tmp_path):
    proc = run_kit("tokenize", "--model", "minilm", "--train", tmp_path / "nope.csv", "--out", tmp_path)
    assert proc.returncode == 2 and "no such table" in proc.stderr and "nope.csv" in proc.stderr
    bad = tmp_path / "bad.csv"
    pd.read_csv(PANDALM).drop(columns=["response_b"]).to_csv(bad, index=False)
    proc = run_kit("tokenize", "--model", "minilm", "--train", bad, "--out", tmp_path / "o")
    assert proc.returncode == 2 and "missing column(s) ['response_b']" in proc.stderr


def test_chat_template_packing_from_the_command_line(tmp_path, smollm2_tokenizer):
    """SmolLM2's preset packs each pairwise side as the backbone's own chat rendering (system, user
    turns, assistant turns) by default, recorded in meta.json for the test set's packing; --pack
    '{"chat_template": false}' packs plain text instead; a backbone without a chat template is refused
    in one line."""
    out = tmp_path / "chat"
    proc = run_kit("tokenize", "--model", "smollm2", "--train", KAGGLE_TRAIN, "--no-test", "--folds", "2",
                   "--max-length", "256", "--out", out)
    assert proc.returncode == 0, proc.stderr
    train = pd.read_parquet(out / "train.parquet")
    assert len(train) == 100 and train["side_a_ids"].map(len).le(256).all()
    for ids in train["side_b_ids"]:
        text = smollm2_tokenizer.decode(list(ids))
        assert text.startswith("<|im_start|>system") and text.endswith("<|im_end|>\n")
        assert "<|im_start|>assistant" in text and "How good is this response?" not in text
    assert json.loads((out / "meta.json").read_text())["pack"]["chat_template"] is True
    # the token budget is recorded once: the preset's max_length, read typed
    from kit.store.cache import read_cache
    cache = read_cache(out)
    assert cache.max_length == 256 and cache.pack_options["chat_template"] is True
    assert "max_length" not in cache.record["pack"]
    assert "max_length" not in json.loads((out / "manifest.json").read_text())["settings"]
    plain = tmp_path / "plain"
    proc = run_kit("tokenize", "--model", "smollm2", "--train", KAGGLE_TRAIN, "--no-test", "--folds", "2",
                   "--max-rows", "10", "--pack", '{"chat_template": false}', "--out", plain)
    assert proc.returncode == 0, proc.stderr
    for ids in pd.read_parquet(plain / "train.parquet")["side_b_ids"]:
        text = smollm2_tokenizer.decode(list(ids))
        assert "<|im_start|>" not in text and "How good is this response?" in text
    assert read_cache(plain).pack_options["chat_template"] is False
    proc = run_kit("tokenize", "--model", "minilm", "--train", KAGGLE_TRAIN, "--no-test", "--folds", "2",
                   "--pack", '{"chat_template": true}', "--out", tmp_path / "bert")
    assert proc.returncode == 2 and "no chat template" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bert" / "train.parquet").exists()


def test_notebook_twins_are_in_sync():
    import jupytext
    for py in sorted((ROOT / "notebooks").glob("*.py")):
        ipynb = py.with_suffix(".ipynb")
        assert ipynb.exists(), f"{py.name} has no .ipynb twin"
        a, b = jupytext.read(py), nbformat.read(ipynb, as_version=4)
        assert [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells], py.name


@pytest.mark.parametrize("model", ["minilm", "smollm2"])
def test_tokenize_notebook_executes_headless(tmp_path, model):
    import papermill
    out = tmp_path / "cache"
    papermill.execute_notebook(str(ROOT / "notebooks" / "01_tokenize.ipynb"), str(tmp_path / "nb.ipynb"),
                               parameters={"MODEL": model, "OUT": str(out)}, cwd=str(tmp_path),
                               progress_bar=False)
    assert pd.read_parquet(out / "test.parquet")["id"].tolist() == ["136060", "211333", "1233961"]
    assert len(pd.read_parquet(out / "train.parquet")) == 1099


def test_the_cut_rate_counts_the_rows_the_token_budget_shortened(tmp_path):
    """kit cv's 'rows cut': none of PandaLM's short rows is cut at a generous budget, every row at a
    budget below the packing's framing plus one word; the lexical member packs no tokens."""
    from kit.store.cache import cut_rate
    rates = {}
    for budget in (40, 512):
        tokenize_stage("minilm", [PANDALM], "", max_length=budget, max_rows=40, n_folds=2, out=tmp_path / str(budget))
        rates[budget] = cut_rate(tmp_path / str(budget))
    assert rates[40] > 0.9 and rates[512] < 0.2
    tokenize_stage("lexical", [PANDALM], "", max_rows=40, n_folds=2, out=tmp_path / "lexical")
    assert cut_rate(tmp_path / "lexical") is None


def test_packing_options_a_member_cannot_use_are_said_not_dropped(tmp_path, caplog):
    """The lexical member packs no tokens: --pack (kit cv's head-and-tail cut) is named as not applying."""
    with caplog.at_level("INFO", logger="kit"):
        tokenize_stage("lexical", [PANDALM], "", max_rows=40, n_folds=2, out=tmp_path / "lex", pack={"cut": "middle"})
    assert "the lexical member packs no tokens; --pack {'cut': 'middle'} does not apply" in caplog.text


def test_a_budget_below_the_framing_is_one_line_naming_the_smallest_that_fits(tmp_path):
    """From Python as from the CLI: a SettingsError that says how many tokens the framing needs, nothing written."""
    from kit.core.errors import SettingsError
    with pytest.raises(SettingsError, match=r"max_length 4 is too small .* at least (\d+) tokens are needed; "
                                            r"pass --max-length \1 or more"):
        tokenize_stage("minilm", [PANDALM], "", max_length=4, max_rows=20, n_folds=2, out=tmp_path / "tiny")
    assert not (tmp_path / "tiny").exists()
    done = run_kit("tokenize", "--model", "minilm", "--train", PANDALM, "--test", "", "--max-length", "4",
                   "--max-rows", "20", "--out", tmp_path / "cli")
    assert done.returncode != 0 and "Traceback" not in done.stderr and "pass --max-length" in done.stderr
