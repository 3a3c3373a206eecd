"""The Kaggle flow end to end in a simulated Kaggle layout: notebooks executed headless with
Kaggle detection on, /kaggle pointed at a temporary folder (KIT_KAGGLE_ROOT), no wheels, the
kit imported from its "dataset", tiny random-init Gemma-2 and Llama (no pad token) at the GPU
presets' paths, loaded 4-bit on CPU.

Session 1 trains (01 tokenize -> 02 train per member -> 03 infer -> 04 blend) and its
/kaggle/working becomes a dataset. Session 2 — the submission — sees only /kaggle/input, kept
read-only (permission bits, and a snapshot of every file compared afterwards, since root ignores
permission bits), and runs the one submission notebook, twice."""
import hashlib
import shutil
import subprocess
import stat
import warnings
from pathlib import Path

import pandas as pd
import pytest

from kit.ensemble.submission import validate_submission
from kit.ops.tiny import make_tiny_backbone
from conftest import KAGGLE_TEST, KAGGLE_TRAIN, ROOT, SAMPLE_SUB

GEMMA = "gemma-2/transformers/gemma-2-9b-it/2"
LLAMA = "llama-3/transformers/8b-chat-hf/1"


def _run(notebook: str, out_dir: Path, cwd: Path, **parameters) -> None:
    import papermill
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "-".join(str(v) for k, v in parameters.items() if k in ("MODEL", "FOLD"))
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"),
                               str(out_dir / f"{notebook}{'-' + tag if tag else ''}.ipynb"),
                               parameters=parameters, cwd=str(cwd), progress_bar=False)


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _read_only(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _attach_repository(dataset: Path) -> None:
    """The kit dataset as the README says to make it: the whole repository (every tracked file, as
    they are in this working tree) — its own results/ (with a blend.json) included."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dataset / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dataset / name)
    assert (dataset / "results" / "main_job" / "blend.json").is_file() and (dataset / "README.md").is_file()


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    root = tmp_path / "kaggle"
    inp, working = root / "input", root / "working"
    comp = inp / "lmsys-chatbot-arena"
    comp.mkdir(parents=True)
    working.mkdir()
    shutil.copy(KAGGLE_TRAIN, comp / "train.csv")
    shutil.copy(KAGGLE_TEST, comp / "test.csv")
    shutil.copy(SAMPLE_SUB, comp / "sample_submission.csv")
    make_tiny_backbone("gemma2", inp / GEMMA)
    make_tiny_backbone("llama", inp / LLAMA, pad_token=False)
    _attach_repository(inp / "lora-litee-kit")
    monkeypatch.setenv("KIT_KAGGLE_ROOT", str(root))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.delenv("KIT_WORK", raising=False)
    monkeypatch.delenv("KIT_ENV", raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    return root


def test_one_submission_notebook_on_read_only_inputs(kaggle, tmp_path):
    inp, working = kaggle / "input", kaggle / "working"
    common = {"KIT_DIR": str(inp / "lora-litee-kit"), "WHEELS": str(inp / "no-wheels-attached")}
    cwd = tmp_path / "kernel-cwd"  # not the repository: the kit must come from its dataset
    cwd.mkdir()
    executed = tmp_path / "executed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # session 1: train both members (one fold each: 40 rows, 2 folds), score, blend
        for model in ("gemma2-9b", "llama3-8b"):
            _run("01_tokenize", executed, cwd, MODEL=model, MAX_LENGTH=96, MAX_ROWS=40, N_FOLDS=2, **common)
            _run("02_train", executed, cwd, MODEL=model, FOLD=0, MAX_STEPS=2, BATCH_SIZE=4, GRAD_ACCUM=1,
                 MAX_TRAIN_ROWS=8, EVALS_PER_RUN=1, **common)
        _run("03_infer_two_t4", executed, cwd, SPLITS=["test", "oof"], **common)
        _run("04_blend", executed, cwd, WEIGHTS="paper", **common)
        assert (working / "report" / "blend.json").exists()

        # its output becomes an attached, read-only dataset; session 2 starts with an empty working dir
        shutil.copytree(working, inp / "lora-litee-models")
        shutil.rmtree(working)
        working.mkdir()
        _read_only(inp)
        before = _snapshot(inp)
        _run("05_submit", executed, cwd, **common)
        # a rerun in the same session needs no OVERWRITE; this one scores each model in its own process
        _run("05_submit", executed, cwd, ISOLATE=True, **common)
    assert _snapshot(inp) == before  # nothing written under /kaggle/input

    sub = pd.read_csv(working / "submission.csv")
    validate_submission(sub, pd.read_csv(KAGGLE_TEST)["id"].tolist(), SAMPLE_SUB)
    assert len(list(working.glob("submission-*.csv"))) == 1  # the first run's, moved aside
    runs = sorted((working / "submit").iterdir())
    assert len(runs) == 2
    record = pd.read_json(runs[-1] / "submit.json", typ="series")
    assert set(record["models"]) == {"gemma2-9b", "llama3-8b"}
    assert record["blend"]["weights_mode"] == "paper" and record["blend"]["weights"] == pytest.approx([0.7, 0.3])
    for name in ("gemma2-9b", "llama3-8b"):
        assert (runs[-1] / "tokenized" / name / "test.parquet").exists()
        assert len(list((runs[-1] / "predictions" / name).glob("*.csv"))) == 1


def test_submit_names_what_is_missing(tmp_path):
    from kit.core.errors import SubmitError
    from kit.workflows.submit import submit
    with pytest.raises(SubmitError, match="no trained models .* attach the training session's output"):
        submit([tmp_path], KAGGLE_TEST, work=tmp_path / "w")
    with pytest.raises(SubmitError, match="MODEL_ROOTS in the notebook, --model-roots on the CLI"):
        submit([tmp_path / "nowhere"], KAGGLE_TEST, work=tmp_path / "w")
