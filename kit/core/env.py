"""Where the kit runs (Kaggle, Colab, local) and the default paths that follow from it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from .log import get_logger, show_progress

DISTRIBUTION = "lora-litee-kit"


def _is_checkout(folder: Path) -> bool:
    return (folder / "kit" / "__init__.py").is_file() and (folder / "notebooks").is_dir()


def find_repo_root() -> Path:
    """The repository whose data, notebooks and ``artifacts/`` the defaults point into.

    ``KIT_REPO`` when set; else the folder holding this ``kit/`` when it is a checkout (a clone,
    an attached Kaggle dataset, an editable install); else, for a plain ``pip install <clone>``
    (Colab: a running kernel does not read the ``.pth`` file an editable install writes, but it
    does see a package copied into site-packages), the clone pip installed from, as pip recorded
    it (PEP 610 ``direct_url.json``); else this ``kit/``'s parent folder."""
    if os.environ.get("KIT_REPO"):
        return Path(os.environ["KIT_REPO"]).resolve()
    here = Path(__file__).resolve().parents[2]
    if _is_checkout(here):
        return here
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        record = json.loads(distribution(DISTRIBUTION).read_text("direct_url.json") or "{}")
    except (PackageNotFoundError, ValueError):
        record = {}
    url = urlparse(record.get("url", ""))
    if url.scheme == "file" and _is_checkout(Path(unquote(url.path))):
        return Path(unquote(url.path))
    return here


REPO_ROOT = find_repo_root()  # the repository (or the attached dataset) holding kit/, notebooks/, data/
log = get_logger(__name__)
COMPETITION = "lmsys-chatbot-arena"


def kaggle_path(path: str | Path) -> Path:
    """A Kaggle path, ``/kaggle/...``, as this machine sees it: under ``KIT_KAGGLE_ROOT`` when
    that is set (a simulated Kaggle layout: the tests run the Kaggle flow in a temporary
    folder), unchanged otherwise. Other paths are returned as they are."""
    path = Path(path)
    root = os.environ.get("KIT_KAGGLE_ROOT")
    if root and path.parts[:2] == ("/", "kaggle"):
        return Path(root).joinpath(*path.parts[2:])
    return path


def kaggle_input() -> Path:
    return kaggle_path("/kaggle/input")


def kaggle_working() -> Path:
    return kaggle_path("/kaggle/working")


def environment() -> str:
    """'kaggle', 'colab' or 'local' (KIT_ENV overrides the detection)."""
    forced = os.environ.get("KIT_ENV")
    if forced:
        return forced
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or kaggle_input().is_dir():
        return "kaggle"
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    return "local"


def work_dir() -> Path:
    """Where stages write: /kaggle/working on Kaggle, else ./artifacts (KIT_WORK overrides)."""
    if os.environ.get("KIT_WORK"):
        return Path(os.environ["KIT_WORK"])
    if environment() == "kaggle":
        return kaggle_working()
    return REPO_ROOT / "artifacts"


def cache_dir() -> Path:
    """Converted backbones (e.g. SmolLM2's GGUF as safetensors); KIT_CACHE overrides."""
    if os.environ.get("KIT_CACHE"):
        return Path(os.environ["KIT_CACHE"])
    return Path.home() / ".cache" / "lora-litee"


def default_inputs() -> dict[str, list[Path] | Path]:
    """Default train tables, test table and sample submission for this environment.

    Kaggle: the competition's files under /kaggle/input/<competition>/. Elsewhere the
    shipped data: the 100 real competition rows plus the 999 PandaLM pairs for
    training, and the official 3-row test.csv.
    """
    if environment() == "kaggle":
        base = kaggle_input() / COMPETITION
        return {"train": [base / "train.csv"], "test": base / "test.csv",
                "sample_submission": base / "sample_submission.csv"}
    data = REPO_ROOT / "data"
    return {"train": [data / "kaggle" / "train_sample.csv", data / "pandalm" / "pandalm_kaggle.csv"],
            "test": data / "kaggle" / "test.csv",
            "sample_submission": data / "kaggle" / "sample_submission.csv"}


def default_judges() -> dict[str, str]:
    """External judges' verdicts shipped beside the default training rows (``{name: csv}``):
    gpt-3.5-turbo's and PandaLM-7B's on the PandaLM rows (data/PROVENANCE.md). None on Kaggle,
    whose rows no shipped judge has seen."""
    if environment() == "kaggle":
        return {}
    folder = REPO_ROOT / "data" / "pandalm" / "judges"
    return {p.stem: str(p) for p in sorted(folder.glob("*.csv"))}


def install_offline(wheel_dir: str | Path, requirements: str | Path | None = None) -> bool:
    """On Kaggle/Colab with internet off: pip-install requirements-kaggle.txt from an
    attached folder of wheels. Returns False (and does nothing) when the folder is absent,
    e.g. locally where scripts/setup.sh already installed everything."""
    wheel_dir = Path(wheel_dir)
    if environment() == "local" or not wheel_dir.is_dir():
        return False
    requirements = Path(requirements or REPO_ROOT / "requirements-kaggle.txt")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(wheel_dir), "-r", str(requirements)], check=True)
    return True


def bootstrap(wheel_dir: str | Path) -> str:
    """A notebook's first step: offline install where needed, then say where we run."""
    show_progress()
    install_offline(wheel_dir)
    where = environment()
    log.info(f"environment: {where} | work dir: {work_dir()}")
    return where
