"""Flow (i) of the README's Kaggle guide, in a simulated Kaggle (tests/kaggle_sim.py): a small
member trained and submitted in one session — the one notebook 07_one_session runs the four stage
notebooks (tokenize, train fold 0, infer, blend with weights fitted on the held-out rows) and
writes /kaggle/working/submission.csv, with every input read-only."""
import json
import warnings

import pandas as pd

from conftest import KAGGLE_TEST, SAMPLE_SUB
from kaggle_sim import SMALL_TRAIN, WIDGET, common_parameters, kaggle, outputs_of, read_only, run_notebook, snapshot  # noqa: F401
from kit.ensemble.submission import validate_submission


def test_one_session_trains_and_submits(kaggle, tmp_path):
    inp, working, cwd = kaggle / "input", kaggle / "working", kaggle.parent / "kernel-cwd"
    read_only(inp)
    before = snapshot(inp)
    recipe = {k.lower(): v for k, v in SMALL_TRAIN.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notebook = run_notebook("07_one_session", tmp_path / "executed", cwd, MODELS=["llama3-8b", "lexical"],
                                N_FOLDS=2, MAX_ROWS=60, MAX_LENGTH={"llama3-8b": 96}, RECIPES={"llama3-8b": recipe},
                                **common_parameters(kaggle))
    assert snapshot(inp) == before  # nothing written under /kaggle/input

    sub = pd.read_csv(working / "submission.csv")
    validate_submission(sub, pd.read_csv(KAGGLE_TEST)["id"].tolist(), SAMPLE_SUB)
    (run,) = (working / "runs").iterdir()
    blend = json.loads((run / "report" / "blend.json").read_text())
    assert blend["members"] == ["llama3-8b", "lexical"] and blend["weights_mode"] == "fit"
    trained = sorted(p.parent.relative_to(run / "models").as_posix() for p in (run / "models").rglob("config.json"))
    assert trained == ["lexical/fold0", "llama3-8b/fold0"]  # TRAIN_FOLDS = [0]: one fold per member
    executed = sorted(p.name for p in (run / "notebooks").glob("*.ipynb"))
    assert executed == ["01_tokenize-lexical.ipynb", "01_tokenize-llama3-8b.ipynb", "02_train-lexical-fold0.ipynb",
                        "02_train-llama3-8b-fold0.ipynb", "03_infer_two_t4.ipynb", "04_blend.ipynb"]
    text, kinds = outputs_of(run / "notebooks" / "02_train-llama3-8b-fold0.ipynb")
    assert "train: 100%" in text and "<progress" not in text and WIDGET not in kinds
    text, _ = outputs_of(notebook)
    assert str(working / "submission.csv") in text
