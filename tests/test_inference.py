import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st

from kit.stages.infer import RuntimeProjection, infer_stage, swap_average

from kit.ops.devices import shard_rows

from kit.ops.batching import length_sorted_batches

from kit.members.joint import predict_logits
from kit.members.joint import load_trained
from kit.core.presets import resolve_preset
from kit.stages.tokenize import tokenize_stage
from kit.store.io import read_csv_keeping_ids
from conftest import ROOT, run_kit


@given(st.lists(st.integers(1, 600), min_size=1, max_size=300), st.integers(1, 5000))
@settings(max_examples=200, deadline=None)
def test_batches_cover_every_row_once_within_the_token_budget(lengths, max_tokens):
    batches = length_sorted_batches(lengths, max_tokens)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens


@given(st.lists(st.integers(1, 600), min_size=1, max_size=200), st.integers(1, 4))
@settings(max_examples=100, deadline=None)
def test_shards_partition_the_rows(lengths, n):
    shards = shard_rows(lengths, n)
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(lengths)))


@pytest.fixture(scope="module")
def model_and_rows(trained_minilm):
    model_dir, tok, _ = trained_minilm
    model, tokenizer = load_trained(model_dir, resolve_preset("minilm", dict(max_length=128)))
    rows = list(pd.read_parquet(tok / "train.parquet")["input_ids"].head(40))
    return model, tokenizer, rows


def test_sorted_batching_preserves_order_and_values(model_and_rows):
    model, tokenizer, rows = model_and_rows
    batched = predict_logits(model, rows, tokenizer.pad_token_id, max_tokens=600, progress=False)
    with torch.inference_mode():
        single = np.stack([model(input_ids=torch.as_tensor(np.asarray(r, dtype=np.int64))[None]).logits[0].numpy()
                           for r in rows])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(rows))
    shuffled = predict_logits(model, [rows[i] for i in perm], tokenizer.pad_token_id, progress=False)
    np.testing.assert_allclose(shuffled, batched[perm], atol=1e-5)


def test_two_cpu_workers_equal_one(trained_minilm, tmp_path):
    model_dir, tok, _ = trained_minilm
    one = infer_stage(model_dir, "test", out=tmp_path / "one.csv", cpu_workers=1).predictions
    two = infer_stage(model_dir, "test", out=tmp_path / "two.csv", cpu_workers=2, max_tokens=512).predictions
    assert one["id"].tolist() == two["id"].tolist()
    np.testing.assert_allclose(one.drop(columns="id").to_numpy(), two.drop(columns="id").to_numpy(), atol=1e-5)


def test_every_test_id_is_predicted_malformed_rows_included(trained_minilm, tmp_path):
    model_dir, tok, test_csv = trained_minilm
    res = infer_stage(model_dir, "test", out=tmp_path / "t.csv")
    assert res.predictions["id"].tolist() == pd.read_csv(test_csv, dtype={"id": str})["id"].tolist()
    probs = res.predictions[["p_a", "p_b", "p_tie"]].to_numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1)
    assert 0 <= res.flip_rate <= 1
    notes = pd.read_csv(tok / "skipped_rows.csv").query("split == 'test'")
    assert len(notes) >= 3  # the repaired rows are reported, and still predicted


def test_swap_tta_is_equivariant(trained_minilm, tmp_path):
    model_dir, _, test_csv = trained_minilm
    table = pd.read_csv(test_csv)
    swapped = table.assign(response_a=table["response_b"], response_b=table["response_a"])
    swapped.to_csv(tmp_path / "swapped.csv", index=False)
    tokenize_stage("minilm", [], tmp_path / "swapped.csv", max_length=128, out=tmp_path / "tok", member="joint")
    plain = infer_stage(model_dir, "test", out=tmp_path / "p.csv").predictions
    mirror = infer_stage(model_dir, "test", tokenized=tmp_path / "tok", out=tmp_path / "m.csv").predictions
    np.testing.assert_allclose(mirror[["p_b", "p_a", "p_tie"]].to_numpy(), plain[["p_a", "p_b", "p_tie"]].to_numpy(),
                               atol=1e-6)
    p, flip = swap_average(np.array([[0.6, 0.3, 0.1]]), np.array([[0.2, 0.7, 0.1]]))
    np.testing.assert_allclose(p, [[0.65, 0.25, 0.1]])
    assert flip == 0.0  # both passes say A once the swapped pass's columns are exchanged back


def test_oof_split_and_cli_isolated(trained_minilm, tmp_path):
    model_dir, tok, _ = trained_minilm
    out = tmp_path / "oof.csv"
    proc = run_kit("infer", "--trained", model_dir, "--split", "oof", "--out", out, "--isolate", "--no-tta")
    assert proc.returncode == 0, proc.stderr[-2000:]
    oof = read_csv_keeping_ids(out)
    fold0 = pd.read_parquet(tok / "train.parquet").query("fold == 0")
    assert oof["id"].tolist() == fold0["id"].tolist() and oof["label"].tolist() == fold0["label"].tolist()
    assert "p_a_swap" not in oof
    again = run_kit("infer", "--trained", model_dir, "--split", "oof", "--out", out)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_runtime_projection_warns_over_budget():
    proj = RuntimeProjection(total_tokens=1000, budget_hours=1e-9, warmup_share=0.1)
    with pytest.warns(RuntimeWarning, match="exceeds the budget"):
        proj.update(200)
    assert proj.projected_s is not None
    calm = RuntimeProjection(total_tokens=1000, budget_hours=9.0, warmup_share=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calm.update(200)


def test_infer_notebook_executes_headless(trained_minilm, tmp_path):
    import papermill
    model_dir, _, _ = trained_minilm
    papermill.execute_notebook(str(ROOT / "notebooks" / "03_infer_two_t4.ipynb"), str(tmp_path / "nb.ipynb"),
                               parameters={"TRAINED": [str(model_dir)], "OVERWRITE": True},
                               cwd=str(tmp_path), progress_bar=False)
    assert (model_dir / "predictions" / "test.csv").exists() and (model_dir / "predictions" / "oof.csv").exists()


def test_folds_scored_with_and_without_tta_average_to_one_member(trained_minilm, tmp_path):
    """One member whose folds were inferred with and without swap TTA: its test predictions are
    the mean of the blended columns; the direct/swap columns, absent from one file, are left out."""
    from kit.store.predictions import mean_test_predictions

    model_dir, _, _ = trained_minilm
    with_tta = infer_stage(model_dir, "test", out=tmp_path / "tta" / "test.csv").predictions
    without = infer_stage(model_dir, "test", out=tmp_path / "plain" / "test.csv", tta=False).predictions
    assert "p_a_direct" in with_tta and "p_a_direct" not in without
    member = mean_test_predictions([tmp_path / "tta" / "test.csv", tmp_path / "plain" / "test.csv"],
                                   [model_dir, model_dir])
    assert list(member.columns) == ["id", "p_a", "p_b", "p_tie"]
    np.testing.assert_allclose(member[["p_a", "p_b", "p_tie"]].to_numpy(),
                               (with_tta[["p_a", "p_b", "p_tie"]].to_numpy() + without[["p_a", "p_b", "p_tie"]].to_numpy()) / 2,
                               atol=1e-6)
