"""07_one_session in a Colab-like layout: no /kaggle at all, the repository cloned under the session's folder (the
kit imported from the clone, as `install_colab.sh` makes it importable), the user's tables and backbone in a
read-only folder of their own (a mounted Drive), Colab detected from its environment variable. The notebook
trains on the user's table with the backbone at the user's path (the preset's 4-bit recipe kept) and publishes
the submission in the clone's submissions/, the inputs byte for byte as they were."""
import json
import shutil
import warnings

import pandas as pd

from conftest import KAGGLE_TEST, PANDALM
from kaggle_sim import SMALL_TRAIN, attach_repository, outputs_of, read_only, run_notebook, snapshot
from kit.ensemble.submission import validate_submission
from kit.ops.tiny import make_tiny_backbone


def test_one_session_on_colab_takes_the_users_tables_and_backbone(tmp_path, monkeypatch):
    content = tmp_path / "content"
    clone, drive = content / "lora-litee", content / "drive" / "MyDrive" / "arena"
    clone.mkdir(parents=True)
    attach_repository(clone)
    drive.mkdir(parents=True)
    pd.read_csv(PANDALM, dtype=str, keep_default_na=False).head(60).to_csv(drive / "train.csv", index=False)
    shutil.copy(KAGGLE_TEST, drive / "test.csv")
    make_tiny_backbone("llama", drive / "llama", pad_token=False)
    read_only(drive)
    before = snapshot(drive)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-simulated")
    monkeypatch.setenv("KIT_KAGGLE_ROOT", str(tmp_path / "no-kaggle"))  # /kaggle is not there
    for name in ("KAGGLE_KERNEL_RUN_TYPE", "KIT_WORK", "KIT_ENV", "KIT_REPO", "PYTHONPATH"):
        monkeypatch.delenv(name, raising=False)
    recipe = {k.lower(): v for k, v in SMALL_TRAIN.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notebook = run_notebook("07_one_session", tmp_path / "executed", content, MODELS=["llama3-8b", "lexical"],
                                N_FOLDS=2, MAX_LENGTH=96, RECIPES={"llama3-8b": recipe}, TRAIN=[str(drive / "train.csv")],
                                TEST=str(drive / "test.csv"), SAMPLE_SUBMISSION=None,
                                MODEL_DIR={"llama3-8b": str(drive / "llama")}, KIT_DIR=str(clone),
                                WHEELS=str(content / "no-wheels"))
    assert snapshot(drive) == before  # nothing written among the user's inputs
    text, _ = outputs_of(notebook)
    assert "environment: colab" in text
    validate_submission(pd.read_csv(clone / "submissions" / "submission.csv"), pd.read_csv(KAGGLE_TEST)["id"].tolist(),
                        None)
    (run,) = (clone / "artifacts" / "runs").iterdir()
    for member in ("llama3-8b", "lexical"):
        meta = json.loads((run / "tokenized" / member / "meta.json").read_text())
        assert meta["train_sources"] == [str(drive / "train.csv")] and meta["rows"]["train"] == 60
    preset = json.loads((run / "models" / "llama3-8b" / "fold0" / "config.json").read_text())["preset"]
    assert preset["model_dir"] == str(drive / "llama") and preset["load_in_4bit"] and preset["max_length"] == 96
    assert "[kit train] llama3-8b" in text and "h on 2x Tesla T4" in text
