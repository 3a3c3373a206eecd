"""`kit pseudo-label`: a trained teacher (lexical folds + their saved blend) scores real
unlabelled rows (HH-RLHF records, labels ignored); the output is a soft-labelled training table
that a training run takes beside PandaLM."""
import gzip
import json

import numpy as np
import pandas as pd

from kit.stages.blend import blend_stage
from kit.cli import main
from kit.data.ingest import load_conversations
from kit.store.io import manifest_path
from kit.core.schema import EXTRA_FOLD
from kit.stages.tokenize import tokenize_stage
from kit.stages.train import train_stage
from conftest import PANDALM, ROOT, lexical_folds

HH = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def _teacher(tmp_path):
    dirs = lexical_folds(tmp_path, models=tmp_path / "teacher" / "lexical", max_rows=300)
    blend_stage({"lexical": dirs}, weights="fit", out=tmp_path / "s.csv", report_dir=tmp_path / "teacher" / "report",
                sample_submission=None)
    return tmp_path / "teacher"


def test_pseudo_labels_are_a_soft_training_table_that_trains_beside_pandalm(tmp_path, capsys):
    teacher = _teacher(tmp_path)
    pool = tmp_path / "pool.jsonl"
    lines = gzip.open(HH, "rt", encoding="utf-8").read().splitlines()[:80]
    pool.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pseudo.csv"
    assert main(["pseudo-label", "--input", str(pool), "--model-roots", str(teacher), "--out", str(out),
                 "--work", str(tmp_path / "work"), "--sharpening", "0.5", "--min-confidence", "0.5"]) == 0
    table = pd.read_csv(out, dtype={"id": str})
    manifest = json.loads(manifest_path(out).read_text())
    rows = manifest["rows"]
    assert rows["input"] == 80 and rows["written"] == len(table)
    assert rows["written"] + rows["below_confidence"] + rows["unusable"] == 80
    assert manifest["teacher"]["blend"]["weights_mode"] and manifest["settings"]["temperature"] == 0.5
    probs = table[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1) and (probs.max(axis=1) >= 0.5).all()
    dropped = pd.read_csv(out.with_name("pseudo.dropped.csv"))
    assert len(dropped) == rows["below_confidence"] + rows["unusable"]

    conv = load_conversations(out)  # validates as a training table: every row kept, soft-labelled
    assert len(conv.frame) == len(table) and conv.skipped.empty
    tok = tokenize_stage("lexical", [PANDALM], "", n_folds=2, max_rows=300, out=tmp_path / "student-tok",
                         extra=[out])
    assert int((tok.train["fold"] == EXTRA_FOLD).sum()) == len(table)
    student = train_stage("lexical", 0, tokenized=tok.out_dir, out=tmp_path / "student")
    assert student.metrics["soft_labels"] is True

    again = main(["pseudo-label", "--input", str(pool), "--model-roots", str(teacher), "--out", str(out)])
    assert again == 2 and "already exists" in capsys.readouterr().err


def test_pseudo_label_notebook_executes_headless(tmp_path, monkeypatch):
    import papermill

    teacher = _teacher(tmp_path)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(gzip.open(HH, "rt", encoding="utf-8").read().splitlines()[:20]) + "\n")
    monkeypatch.setenv("KIT_WORK", str(tmp_path / "work"))
    papermill.execute_notebook(str(ROOT / "notebooks" / "06_pseudo_label.ipynb"), str(tmp_path / "executed.ipynb"),
                               parameters={"INPUT": str(pool), "MODEL_ROOTS": [str(teacher)],
                                           "OUT": str(tmp_path / "nb.csv")}, cwd=str(tmp_path), progress_bar=False)
    assert len(pd.read_csv(tmp_path / "nb.csv")) == 20
    # the student through the stage notebooks: its pseudo-labels as EXTRA, trained with soft labels
    for name, params in (("01_tokenize", {"MODEL": "lexical", "TRAIN": [str(PANDALM)], "TEST": "",
                                          "EXTRA": [str(tmp_path / "nb.csv")], "N_FOLDS": 2, "MAX_ROWS": 200,
                                          "OUT": str(tmp_path / "student-tok")}),
                         ("02_train", {"MODEL": "lexical", "FOLD": 0, "TOKENIZED": str(tmp_path / "student-tok"),
                                       "OUT": str(tmp_path / "student")})):
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                                   parameters=params, cwd=str(tmp_path), progress_bar=False)
    assert json.loads((tmp_path / "student" / "metrics.json").read_text())["soft_labels"] is True
