import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
KAGGLE_TRAIN = DATA / "kaggle" / "train_sample.csv"
KAGGLE_TEST = DATA / "kaggle" / "test.csv"
SAMPLE_SUB = DATA / "kaggle" / "sample_submission.csv"
PANDALM = DATA / "pandalm" / "pandalm_kaggle.csv"

# never reach for a model hub: everything runs from the embedded packages
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# under pytest-xdist (pyproject: two workers) each worker and every process it starts (kit
# subprocesses, notebook kernels, DDP ranks) gets one core: two workers x two torch threads on two
# cores would oversubscribe them
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


@pytest.fixture(scope="session", autouse=True)
def kit_messages_on_stdout():
    """The kit's messages on standard output, as the CLI and the notebooks show them."""
    from kit.core.log import show_progress
    show_progress()


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from kit.ops.backbones import load_tokenizer
    from kit.core.presets import resolve_preset
    return load_tokenizer(resolve_preset("minilm"))


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from kit.ops.backbones import load_tokenizer
    from kit.core.presets import resolve_preset
    return load_tokenizer(resolve_preset("smollm2"))


@pytest.fixture(params=["minilm", "smollm2"])
def tokenizer(request):
    return request.getfixturevalue(f"{request.param}_tokenizer")


def cli_error_line(capsys, *args) -> str:
    """Run the CLI in-process on ``args``; its one error line (exit status 2, no traceback)."""
    from kit.cli import main
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def run_kit(*args, cwd=ROOT, env=None, timeout=1800):
    """Run `python -m kit ...` in a fresh process; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "kit", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def lexical_folds(root, train=(PANDALM,), test=KAGGLE_TEST, n_folds: int = 2, models=None, **tokenize_kwargs):
    """The lexical member trained on every fold of a cache under ``root`` (``root/tok``), each
    fold's out-of-fold and test rows predicted: the fold folders (``models`` or root/models/lexical)."""
    from kit.stages.infer import infer_stage
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage

    root = Path(root)
    tokenize_stage("lexical", list(train), test, n_folds=n_folds, out=root / "tok", **tokenize_kwargs)
    dirs = []
    for k in range(n_folds):
        d = train_stage("lexical", k, tokenized=root / "tok", out=Path(models or root / "models" / "lexical") / f"fold{k}")
        infer_stage(d.out_dir, "oof")
        if test:
            infer_stage(d.out_dir, "test")
        dirs.append(d.out_dir)
    return dirs


def kill_when_checkpointed(args, out, checkpoint: str, timeout: float = 300, expect_no_metrics: bool = True) -> None:
    """Start `python -m kit ARGS --out OUT`, SIGKILL it once OUT/checkpoints/CHECKPOINT is
    complete, and check it left no finished output behind (``expect_no_metrics``; a retrain over a
    finished model leaves the old one in place)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "kit", *map(str, args), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    ckpt = Path(out) / "checkpoints" / checkpoint / "kit_files.json"  # the kit writes it last: the checkpoint is whole
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if expect_no_metrics:
        assert not (Path(out) / "metrics.json").exists()


@pytest.fixture(scope="session")
def trained_minilm(tmp_path_factory):
    """A real (few-step) MiniLM LoRA run (joint head) on real rows, with a tokenized test table whose
    rows include malformed ones: (model_dir, tokenized_dir, test_csv)."""
    import pandas as pd
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage

    base = tmp_path_factory.mktemp("trained")
    test = pd.read_csv(KAGGLE_TRAIN).drop(columns=["winner_model_a", "winner_model_b", "winner_tie",
                                                   "model_a", "model_b"]).head(20)
    test.loc[2, "prompt"] = '["unterminated'          # bad JSON
    test.loc[4, "response_a"] = "[]"                    # empty list
    test.loc[6, "response_b"] = '[null, "x"]'           # null turn + count mismatch
    test.loc[8, "prompt"] = '["lone \\ud800 surrogate"]'
    test_csv = base / "test.csv"
    test.to_csv(test_csv, index=False)
    tok = base / "tok"
    tokenize_stage("minilm", [PANDALM], test_csv, max_length=128, max_rows=120, n_folds=3, out=tok,
                   member="joint")
    res = train_stage("minilm", 0, tokenized=tok, out=base / "model",
                      max_steps=3, batch_size=8, max_train_rows=24, logging_steps=1)
    return res.out_dir, tok, test_csv
