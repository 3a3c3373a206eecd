"""scripts/blend_runs.py: members taken from finished kit cv runs under new names, blended and scored as
kit cv scores a blend (golden against kit cv's own figures), and runs with other folds refused."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kit.workflows.cv import cv_stage
from conftest import PANDALM

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "blend_runs.py"


def _blend_runs(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_blend_runs_scores_members_of_finished_runs_as_kit_cv_does(tmp_path):
    common = dict(max_rows=120, max_length=None, max_train_rows={"lexical": 25})
    cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv", bag_seeds="lexical=42,7", bag_rows=True, **common)
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    models, tokenized = tmp_path / "cv" / "models" / "lexical", tmp_path / "cv" / "tokenized" / "lexical"
    # the bag as one member (both patterns under one name) is kit cv's bagged member, row for row
    judge = PANDALM.parent / "judges" / "pandalm-7b.csv"  # real verdicts on these rows
    run = _blend_runs("--tokenized", tokenized, "--member", f"bag={models}/fold?", f"bag={models}/fold?-seed7-skip25",
                      "--judge-csv", f"pandalm-7b={judge}", "--out", tmp_path / "one")
    assert run.returncode == 0, run.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "blend_runs.json").read_text())
    assert one["rows"] == saved["rows"] and len(one["members"]["bag"]) == 4
    assert one["results"]["bag"] == pytest.approx(saved["results"]["lexical"])
    assert one["results"]["blend"] == pytest.approx(saved["results"]["blend"])
    # the external judge scored on its verdicts beside the blend (no log loss), the difference with its interval
    assert one["results"]["judge: pandalm-7b"]["log_loss"] is None and one["results"]["judge: pandalm-7b"]["accuracy"]
    assert any(c["a"] == "blend" and c["b"] == "judge: pandalm-7b" and c["metric"] == "accuracy"
               for c in one["comparisons"])
    # the two blocks' models as two members: each is kit cv's "seed alone", and the weights are fitted
    run = _blend_runs("--tokenized", tokenized, "--member", f"first={models}/fold?",
                      "--member", f"second={models}/fold?-seed7-skip25", "--temperature", "--out", tmp_path / "two")
    assert run.returncode == 0, run.stderr[-2000:]
    two = json.loads((tmp_path / "two" / "blend_runs.json").read_text())
    for name, seed in (("first", 42), ("second", 7)):
        assert two["results"][name]["log_loss"] == pytest.approx(
            saved["results"][f"blend, lexical seed {seed} alone"]["log_loss"])
    assert sum(two["weights"].values()) == pytest.approx(1) and set(two["weights"]) == {"first", "second"}
    assert two["temperature"] > 0 and len(two["per_fold"]) >= 2  # parts: kit.ensemble.combine.cross_fit_parts
    assert any(c["a"] == "first" and c["b"] == "second" and c["low"] <= c["difference"] <= c["high"]
               for c in two["comparisons"])
    assert (tmp_path / "two" / "blend_runs.png").stat().st_size > 0 and "first" in run.stdout
    # a run with other folds is refused: a row one member trained on would be scored as held out
    cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "other", seed=7, max_rows=120, max_length=None)
    refused = _blend_runs("--tokenized", tokenized, "--member", f"first={models}/fold?",
                          "--member", f"other={tmp_path / 'other' / 'models' / 'lexical'}/fold?", "--out", tmp_path / "x")
    assert refused.returncode != 0 and "in another fold than first" in refused.stderr
    nothing = _blend_runs("--tokenized", tokenized, "--member", f"none={models}/nope?", "--out", tmp_path / "x")
    assert nothing.returncode != 0 and "no trained model folder" in nothing.stderr
    missing = _blend_runs("--tokenized", tokenized, "--member", f"first={models}/fold?", "--judge-csv",
                          f"j={tmp_path / 'no_such.csv'}", "--out", tmp_path / "x")
    assert missing.returncode != 0 and "no_such.csv" in missing.stderr
    assert "Traceback" not in refused.stderr + nothing.stderr + missing.stderr and not (tmp_path / "x").exists()
