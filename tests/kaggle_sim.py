"""A simulated Kaggle, for the flow tests: /kaggle pointed at a temporary folder (KIT_KAGGLE_ROOT,
Kaggle detection on), the competition's files, tiny random-init Gemma-2 and Llama (no pad token)
at the GPU presets' paths (they load 4-bit on CPU), the whole repository attached as the kit
dataset, no wheels. Notebooks run headless with papermill from a kernel directory outside the
repository, so the kit must come from its dataset. What a test checks beyond that: inputs kept
read-only (permission bits, and a snapshot compared afterwards, since root ignores permission
bits), and the executed notebooks' outputs (text progress, no widgets)."""
import hashlib
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import KAGGLE_TEST, KAGGLE_TRAIN, ROOT, SAMPLE_SUB
from kit.ops.tiny import make_tiny_backbone

GEMMA = "gemma-2/transformers/gemma-2-9b-it/2"
LLAMA = "llama-3/transformers/8b-chat-hf/1"
# the scale the tests add to the README's parameters, to fit CI: rows, tokens, steps
SMALL_TRAIN = {"MAX_STEPS": 2, "BATCH_SIZE": 4, "GRAD_ACCUM": 1, "MAX_TRAIN_ROWS": 8}
WIDGET = "application/vnd.jupyter.widget-view+json"


def run_notebook(notebook: str, out_dir: Path, cwd: Path, **parameters) -> Path:
    import papermill
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "-".join(str(v) for k, v in parameters.items() if k in ("MODEL", "FOLD"))
    out = out_dir / f"{notebook}{'-' + tag if tag else ''}.ipynb"
    n = len(list(out_dir.glob(out.stem + "*.ipynb")))
    out = out.with_name(f"{out.stem}{f'-run{n + 1}' if n else ''}.ipynb")
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"), str(out), parameters=parameters,
                               cwd=str(cwd), progress_bar=False)
    return out


def outputs_of(executed: Path) -> tuple[str, list[str]]:
    """(every text a notebook printed, every rich output's mime types) of an executed notebook."""
    text, kinds = [], []
    for cell in json.loads(executed.read_text())["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append("".join(out["text"]))
            kinds += list(out.get("data", {}))
            text.append("".join(out.get("data", {}).get("text/html", "")))
            text.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text), kinds


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def read_only(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def save_as_dataset(working: Path, dataset: Path) -> None:
    """A session's /kaggle/working saved as a dataset (attached read-only later); the next session
    starts with an empty working folder."""
    shutil.copytree(working, dataset)
    shutil.rmtree(working)
    working.mkdir()


def attach_repository(dataset: Path) -> None:
    """The kit dataset as the README says to make it: the whole repository (every file git tracks
    or would track, as they are in this working tree) — its own results/ (with a blend.json) included."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout
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
    attach_repository(inp / "lora-litee-kit")
    monkeypatch.setenv("KIT_KAGGLE_ROOT", str(root))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    for name in ("KIT_WORK", "KIT_ENV", "KIT_REPO", "PYTHONPATH"):
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "kernel-cwd"  # not the repository: the kit must come from its dataset
    cwd.mkdir()
    return root


def common_parameters(root: Path) -> dict:
    """KIT_DIR and WHEELS, the two paths every notebook names: here under the simulated /kaggle."""
    return {"KIT_DIR": str(root / "input" / "lora-litee-kit"), "WHEELS": str(root / "input" / "no-wheels-attached")}
