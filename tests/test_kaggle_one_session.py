"""Flow (i) of the README's Kaggle guide, in a simulated Kaggle (tests/kaggle_sim.py): a small
member trained and submitted in one session — the one notebook 07_one_session runs the four stage
notebooks (tokenize, train fold 0, infer, blend with weights fitted on the held-out rows) and
writes /kaggle/working/submission.csv, with every input read-only — on the user's own training and
test tables and with the Llama backbone attached at a path of the user's, not the preset's."""
import json
import shutil
import warnings

import pandas as pd

from conftest import KAGGLE_TEST, PANDALM, SAMPLE_SUB
from kaggle_sim import LLAMA, SMALL_TRAIN, WIDGET, common_parameters, kaggle, outputs_of, read_only, run_notebook, snapshot  # noqa: F401
from kit.ensemble.submission import validate_submission


def test_one_session_trains_and_submits(kaggle, tmp_path):
    inp, working, cwd = kaggle / "input", kaggle / "working", kaggle.parent / "kernel-cwd"
    mine = inp / "my-data"  # the user's own tables and backbone, attached where the presets do not look
    mine.mkdir()
    pd.read_csv(PANDALM, dtype=str, keep_default_na=False).head(60).to_csv(mine / "train.csv", index=False)
    shutil.copy(KAGGLE_TEST, mine / "test.csv")
    shutil.move(inp / LLAMA, mine / "llama")
    read_only(inp)
    before = snapshot(inp)
    recipe = {k.lower(): v for k, v in SMALL_TRAIN.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notebook = run_notebook("07_one_session", tmp_path / "executed", cwd, MODELS=["llama3-8b", "lexical"],
                                N_FOLDS=2, MAX_LENGTH=96, RECIPES={"llama3-8b": recipe}, TRAIN=[str(mine / "train.csv")],
                                TEST=str(mine / "test.csv"), MODEL_DIR={"llama3-8b": str(mine / "llama")},
                                **common_parameters(kaggle))
    assert snapshot(inp) == before  # nothing written under /kaggle/input

    sub = pd.read_csv(working / "submission.csv")
    validate_submission(sub, pd.read_csv(KAGGLE_TEST)["id"].tolist(), SAMPLE_SUB)
    (run,) = (working / "runs").iterdir()
    blend = json.loads((run / "report" / "blend.json").read_text())
    assert blend["members"] == ["llama3-8b", "lexical"] and blend["weights_mode"] == "fit"
    trained = sorted(p.parent.relative_to(run / "models").as_posix() for p in (run / "models").rglob("config.json"))
    assert trained == ["lexical/fold0", "llama3-8b/fold0"]  # TRAIN_FOLDS = [0]: one fold per member
    # the user's table is what trained, at MAX_LENGTH 96 for both members; the backbone folder given, 4-bit kept
    for member in ("llama3-8b", "lexical"):
        meta = json.loads((run / "tokenized" / member / "meta.json").read_text())
        assert meta["train_sources"] == [str(mine / "train.csv")] and meta["test_source"] == str(mine / "test.csv")
        assert meta["rows"]["train"] == 60
    config = json.loads((run / "models" / "llama3-8b" / "fold0" / "config.json").read_text())["preset"]
    assert config["model_dir"] == str(mine / "llama") and config["load_in_4bit"] and config["max_length"] == 96
    assert config["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    executed = sorted(p.name for p in (run / "notebooks").glob("*.ipynb"))
    assert executed == ["01_tokenize-lexical.ipynb", "01_tokenize-llama3-8b.ipynb", "02_train-lexical-fold0.ipynb",
                        "02_train-llama3-8b-fold0.ipynb", "03_infer_two_t4-oof-lexical.ipynb",
                        "03_infer_two_t4-oof-llama3-8b.ipynb", "03_infer_two_t4-test-lexical.ipynb",
                        "03_infer_two_t4-test-llama3-8b.ipynb", "04_blend.ipynb"]
    # each member scored in its own kernel, cheapest first against the session's deadline (BUDGET_HOURS)
    session = json.loads((run / "session.json").read_text())
    assert session["scored"] == ["lexical", "llama3-8b"] and session["left_out"] == [] and session["deadline"]
    text, _ = outputs_of(run / "notebooks" / "03_infer_two_t4-test-llama3-8b.ipynb")
    assert "projected by arithmetic" in text and "h on 2x Tesla T4" in text
    text, kinds = outputs_of(run / "notebooks" / "02_train-llama3-8b-fold0.ipynb")
    assert "train: 100%" in text and "<progress" not in text and WIDGET not in kinds
    # the training time, projected by arithmetic before the model loaded, for this machine and Kaggle's 2x T4
    assert "projected by arithmetic" in text and "h on 2x Tesla T4" in text
    text, _ = outputs_of(notebook)
    assert str(working / "submission.csv") in text
    assert "[kit train] llama3-8b" in text and "h on 2x Tesla T4" in text  # 07 shows each training's projection
