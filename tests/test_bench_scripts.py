"""The benchmark scripts run end to end at toy scale and write what their committed results hold: the
projection against the measured time, tokenize's peak memory against its table, fold averaging against the
folds' mean prediction, and the CPU calibration of the arithmetic projection."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT


def _run(script, *args):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_projection_benchmark_compares_the_projection_with_the_measured_time(tmp_path):
    _run("bench_projection.py", "--members", "lexical", "--timed-rows", "10", "--rows", "40", "--out",
         tmp_path / "p.md")
    (row,) = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert row["member"] == "lexical" and row["timed_rows"] == 10 and row["rows"] == 40
    assert row["measured_s"] > 0 and row["ratio"] == pytest.approx(row["projected_s"] / row["measured_s"], abs=0.1)
    assert "bench_projection.py --members lexical" in (tmp_path / "p.md").read_text()


def test_the_memory_benchmark_reads_each_runs_own_peak(tmp_path):
    _run("bench_tokenize_memory.py", "--rows", "3", "--cell-mb", "0.05", "--out", tmp_path / "m.md")
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert [(r["text"], r["rows"]) for r in rows] == [("as written", 3), ("ASCII", 3)]
    assert all(r["peak_rss_mb"] >= r["import_baseline_mb"] > 50 for r in rows)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from kit.ops.tiny import make_tiny_backbone
    return make_tiny_backbone("llama", tmp_path_factory.mktemp("bench") / "llama", pad_token=False)


def test_the_fold_average_benchmark_compares_one_averaged_model_with_the_folds(tmp_path, tiny_llama):
    _run("bench_fold_average.py", "--model", "llama3-8b", "--model-dir", tiny_llama, "--rows", "80", "--folds", "2",
         "--rows-per-fold", "16", "--max-steps", "2", "--max-length", "64", "--out", tmp_path / "f.md")
    rows = {r["method"]: r for r in json.loads((tmp_path / "f.json").read_text())["rows"]}
    assert set(rows) == {"fold 0 alone", "fold 1 alone", "mean of 2 models' probabilities", "averaged model"}
    assert rows["averaged model"]["scorings"] == 1 and rows["mean of 2 models' probabilities"]["scorings"] == 2
    assert (tmp_path / "f.png").stat().st_size > 0 and "paired bootstrap" in (tmp_path / "f.md").read_text()


def test_the_compute_calibration_measures_a_share_of_the_cpu_peak(tmp_path, tiny_llama):
    _run("bench_compute.py", "--members", "llama3-8b", "--model-dir", tiny_llama, "--rows", "8", "--steps", "2",
         "--out", tmp_path / "c.md")
    rows = {r["member"]: r for r in json.loads((tmp_path / "c.json").read_text())["rows"]}
    assert 0 < rows["llama3-8b"]["train_share_of_peak"] < 1 and 0 < rows["llama3-8b"]["score_share_of_peak"] < 1
    assert rows["min"]["train_share_of_peak"] == rows["llama3-8b"]["train_share_of_peak"]


def test_the_step_benchmark_splits_a_real_training_step(tmp_path):
    _run("bench_step.py", "--model", "gemma3-270m", "--max-length", "32", "--batch", "2", "--steps", "3",
         "--out", tmp_path / "s.md")
    rows = {r["what"]: r["value"] for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    step = rows["step (step)"]
    assert step > 0 and rows["step (forward)"] + rows["step (backward)"] + rows["step (optimizer)"] == pytest.approx(
        step, rel=0.05, abs=0.005)
    shares = [v for k, v in rows.items() if k.startswith("profiled self time: ")]
    assert len(shares) == 6 and sum(shares) == pytest.approx(100, abs=0.5) and rows[
        "profiled self time: backbone matmul"] > 0 and rows["profiled self time: LoRA matmul"] > 0
    # FLOPs counted at the passes the step really took: a share of the peak (three passes overstate a LoRA step)
    (measured,) = [v for k, v in rows.items() if k.endswith("FLOPs at the measured passes")]
    assert 0 < measured < 1 and rows["share of the fp32 peak at 1 thread"] > 0
    assert 1.5 < rows["forward-pass equivalents per step, measured ((forward + backward) / forward)"] < 3.5
    assert 0 <= rows["padding, rows sorted by their wider side"] < 100 and 0 <= rows["padding, as batched"] < 100
    assert (tmp_path / "s.png").stat().st_size > 0 and "bench_step.py --model gemma3-270m" in (
        tmp_path / "s.md").read_text()


def test_the_weight_average_benchmark_compares_one_runs_averages_the_bag_and_the_soup(tmp_path, tiny_llama):
    _run("bench_weight_average.py", "--model", "llama3-8b", "--model-dir", tiny_llama, "--rows", "80",
         "--seeds", "42,7", "--max-steps", "4", "--max-length", "64", "--work", tmp_path / "work",
         "--out", tmp_path / "w.md")
    rows = {r["method"]: r for r in json.loads((tmp_path / "w.json").read_text())["rows"]}
    assert {f"seed {s}, {w} weights" for s in (42, 7) for w in ("final", "swa", "ema")} < set(rows)
    assert rows["soup of 2 seeds' swa weights"]["scorings"] == 1
    assert rows["bag of 2 seeds' probabilities, final weights"]["trainings"] == 2
    # the three weights of one run are three models: their held-out scores differ
    import pandas as pd
    oof = pd.read_csv(tmp_path / "work" / "models" / "seed42" / "oof.csv")
    assert (oof["p_a"] != oof["p_a_final"]).any() and (oof["p_a_ema"] != oof["p_a_final"]).any()
    text = (tmp_path / "w.md").read_text()
    assert "paired bootstrap" in text and (tmp_path / "w.png").stat().st_size > 0
    # a constant learning rate, compared seed by seed with the first run's (cosine) final weights
    _run("bench_weight_average.py", "--model", "llama3-8b", "--model-dir", tiny_llama, "--rows", "80",
         "--seeds", "42,7", "--max-steps", "4", "--max-length", "64", "--work", tmp_path / "constant",
         "--lr-schedule", "constant", "--baseline-work", tmp_path / "work", "--out", tmp_path / "c.md")
    again = {r["method"]: r for r in json.loads((tmp_path / "c.json").read_text())["rows"]}
    assert again["baseline seed 7, final weights"]["log_loss"] == rows["seed 7, final weights"]["log_loss"]
    assert again["baseline bag of 2 seeds, final weights"]["trainings"] == 2
    assert again["seed 7, swa weights"]["log_loss"] != rows["seed 7, swa weights"]["log_loss"]  # another schedule
    assert json.loads((tmp_path / "constant" / "models" / "seed7" / "config.json").read_text())["train"][
        "lr_schedule"] == "constant"
    assert "| seed 7, swa weights − baseline seed 7, final weights |" in (tmp_path / "c.md").read_text()


def test_the_scoring_benchmark_times_each_budget_with_the_lora_unmerged_and_folded(tmp_path, tiny_llama):
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage
    from conftest import PANDALM
    tok = tmp_path / "tok"
    tokenize_stage("llama3-8b", [PANDALM], "", model_dir=str(tiny_llama), member="pairwise", max_length=64, max_rows=40, n_folds=2,
                   out=str(tok))
    trained = train_stage("llama3-8b", 0, tokenized=str(tok), out=str(tmp_path / "model"), max_steps=1,
                          max_train_rows=8, max_eval_rows=8, evals_per_run=1, load_in_4bit=False).out_dir
    _run("bench_scoring.py", "--trained", trained, "--rows", "6", "--out", tmp_path / "s.md")
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["rows"] == 6 and record["preset"] == "llama3-8b"
    assert [(r["lora"], r["max_tokens"]) for r in record["results"]] == [
        (lora, b) for lora in ("unmerged", "folded in") for b in (8192, 2048, 1024)]
    # the budget changes how rows are batched, and folding the LoRA in changes rounding only
    assert all(r["max_abs_logit_diff"] < 1e-4 for r in record["results"])


def test_the_refactor_comparison_finds_a_commit_and_this_checkout_equal(tmp_path):
    """The lexical member through the kit at HEAD (extracted with git archive) and through this checkout."""
    _run("compare_refactor.py", "--base", "HEAD", "--members", "lexical", "--out", tmp_path / "r")
    record = json.loads((tmp_path / "r" / "compare.json").read_text())
    assert record["all_met"] and [(r["member"], r["split"]) for r in record["rows"]] == [("lexical", "oof"),
                                                                                       ("lexical", "test")]
    assert all(r["bit_identical"] and r["rows"] > 0 for r in record["rows"])
