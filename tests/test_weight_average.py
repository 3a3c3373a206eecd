"""Weight averaging within one run (kit.ops.weight_average) on real MiniLM training: the averages never touch
the training, the saved model is the chosen average, the held-out fold is scored with all three weights, and a
killed run resumes to the same averages."""
import json

import numpy as np
import pandas as pd
import pytest

from kit.core.errors import PresetError, SettingsError
from kit.stages.infer import infer_stage
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from conftest import PANDALM, kill_when_checkpointed, run_kit

TOY = dict(max_steps=8, batch_size=4, grad_accum=1, learning_rate=2e-3, warmup_ratio=0.0, evals_per_run=1,
           max_train_rows=32, max_eval_rows=12, logging_steps=1, swap_augment=False)
P = ["p_a", "p_b", "p_tie"]


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    out = tmp_path_factory.mktemp("wa") / "tok"
    tokenize_stage("minilm", [PANDALM], "", max_length=64, max_rows=120, n_folds=3, out=out)
    return out


def _train(tokenized, out, **kw):
    return train_stage("minilm", 0, tokenized=str(tokenized), out=str(out), **TOY, **kw)


def test_one_run_gives_final_swa_and_ema_weights_and_saves_the_chosen_one(tokenized, tmp_path):
    plain = _train(tokenized, tmp_path / "plain")
    swa = _train(tokenized, tmp_path / "swa", weight_average="swa", average_start=0.5)
    ema = _train(tokenized, tmp_path / "ema", weight_average="ema", average_start=0.5, ema_decay=0.8)
    # the shadows never touch the training: the run without them ends on the same final weights
    np.testing.assert_allclose(swa.oof[[f"{c}_final" for c in P]].to_numpy(), plain.oof[P].to_numpy(), atol=1e-6)
    assert abs(swa.metrics["train_loss"] - plain.metrics["train_loss"]) < 1e-6
    assert "p_a_swa" not in swa.oof and "p_a_final" not in plain.oof
    # the mean of the weights after updates 4..8 is another model than the last weights
    assert np.abs(swa.oof[P].to_numpy() - plain.oof[P].to_numpy()).max() > 1e-4
    record = swa.metrics["weight_average"]
    assert record["saved"] == "swa" and record["from_step"] == 4 and record["updates_averaged"] == 5
    assert record["final"]["log_loss"] == pytest.approx(plain.metrics["log_loss"], abs=1e-6)
    # the ema run saves its ema weights; its swa column is the swa run's saved model (the same trajectory)
    assert ema.metrics["weight_average"]["saved"] == "ema" and "p_a_ema" not in ema.oof
    np.testing.assert_allclose(ema.oof[[f"{c}_swa" for c in P]].to_numpy(), swa.oof[P].to_numpy(), atol=1e-6)
    # the saved model is the averaged one: scoring it afresh gives the train stage's scores
    again = infer_stage(str(swa.out_dir), "oof", reuse_train_scores=False, tta=False)
    np.testing.assert_allclose(again.predictions.set_index("id").loc[swa.oof["id"], P].to_numpy(),
                               swa.oof[P].to_numpy(), atol=1e-5)
    assert json.loads((swa.out_dir / "config.json").read_text())["train"]["weight_average"] == "swa"


def test_a_killed_averaging_run_resumes_to_the_same_averages(tokenized, tmp_path):
    args = ["train", "--model", "minilm", "--fold", "0", "--tokenized", tokenized, "--max-steps", "8",
            "--eval-steps", "4", "--batch-size", "4", "--max-train-rows", "32", "--max-eval-rows", "12",
            "--weight-average", "swa", "--average-start", "0.25", "--seed", "7"]
    ref = run_kit(*args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    kill_when_checkpointed(args, out, "checkpoint-4")  # two updates averaged when it dies
    resumed = run_kit(*args, "--out", out)
    assert resumed.returncode == 0 and "(checkpoint-4)" in resumed.stdout, resumed.stderr[-3000:]
    a, b = (pd.read_csv(d / "oof.csv") for d in (tmp_path / "ref", out))
    np.testing.assert_allclose(a[P + ["p_a_final", "p_a_ema"]].to_numpy(), b[P + ["p_a_final", "p_a_ema"]].to_numpy(),
                               atol=1e-5)
    assert json.loads((out / "metrics.json").read_text())["weight_average"]["updates_averaged"] == 7


def test_an_unknown_average_is_one_line_naming_the_choices(tokenized, tmp_path):
    with pytest.raises(SettingsError, match=r"--weight-average / WEIGHT_AVERAGE / weight_average 'mean': must be "
                                            r"one of none \| swa \| ema"):
        _train(tokenized, tmp_path / "x", weight_average="mean")
    with pytest.raises(SettingsError, match=r"--ema-decay / EMA_DECAY / ema_decay 1.5: must be at least 0 and at most 1"):
        _train(tokenized, tmp_path / "x", weight_average="ema", ema_decay=1.5)
    lexical = tmp_path / "lex"
    tokenize_stage("lexical", [PANDALM], "", max_rows=60, n_folds=2, out=lexical)
    with pytest.raises(PresetError, match="the 'lexical' member type has no training iterates to average"):
        train_stage("lexical", 0, tokenized=str(lexical), out=str(tmp_path / "lx"), weight_average="swa")
    assert not (tmp_path / "lx").exists()
    done = run_kit("train", "--model", "minilm", "--tokenized", tokenized, "--weight-average", "mean")
    assert done.returncode == 2 and "invalid choice: 'mean'" in done.stderr and "Traceback" not in done.stderr


def test_the_learning_rate_follows_the_schedule_asked_for(tokenized, tmp_path):
    """--lr-schedule reaches the Trainer: after a two-update warm-up (the log gives each update's rate), constant
    holds the peak (SWA's usual rate over the averaged span) where cosine decays towards 0; the schedule is part
    of the recorded recipe."""
    rates = {}
    for schedule in ("constant", "cosine"):
        res = train_stage("minilm", 0, tokenized=str(tokenized), out=str(tmp_path / schedule),
                          **{**TOY, "warmup_ratio": 0.25}, lr_schedule=schedule)
        log = pd.read_csv(res.out_dir / "train_log.csv").dropna(subset=["learning_rate"])
        rates[schedule] = log.set_index("step")["learning_rate"]
        assert json.loads((res.out_dir / "config.json").read_text())["train"]["lr_schedule"] == schedule
    peak = TOY["learning_rate"]
    assert list(rates["constant"].loc[3:]) == pytest.approx([peak] * 6) and rates["constant"].loc[2] < peak
    after = rates["cosine"].loc[3:].to_numpy()
    assert after[0] == pytest.approx(peak) and (np.diff(after) < 0).all() and after[-1] < peak / 4
    with pytest.raises(SettingsError, match=r"lr_schedule 'step': must be one of cosine \| linear \| constant"):
        _train(tokenized, tmp_path / "x", lr_schedule="step")
