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


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from kit.presets import load_tokenizer, resolve_preset
    return load_tokenizer(resolve_preset("minilm"))


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from kit.presets import load_tokenizer, resolve_preset
    return load_tokenizer(resolve_preset("smollm2"))


@pytest.fixture(params=["minilm", "smollm2"])
def tokenizer(request):
    return request.getfixturevalue(f"{request.param}_tokenizer")


def run_kit(*args, cwd=ROOT, env=None, timeout=1800):
    """Run `python -m kit ...` in a fresh process; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "kit", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
