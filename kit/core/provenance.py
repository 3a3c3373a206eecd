"""Which code, run how and where, made an output: recorded in every manifest and results file.

:func:`provenance` gives the kit's version (read from the repository's ``pyproject.toml``, or the
installed distribution's metadata), the git commit and whether the tree had uncommitted changes
(None outside a git checkout: an attached dataset, a wheel), the command line, the Python
version, the devices, and the wall time since a given start — by default since the outermost
kit call in progress began (:func:`timed_call`, which every stage and workflow function enters), so
a manifest written by a stage records how long that call had run.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import platform
import subprocess
import sys
import time

from .env import DISTRIBUTION, REPO_ROOT

__all__ = ["git_state", "kit_version", "provenance", "timed_call"]

# when the outermost kit call in progress (a stage, a workflow) began; None outside any
_CALL_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar("kit_call_started", default=None)


@contextlib.contextmanager
def timed_call():
    """Mark the start of a kit call (nested calls keep the outer start): :func:`provenance`
    reports the wall seconds since then."""
    token = _CALL_STARTED.set(time.time()) if _CALL_STARTED.get() is None else None
    if token is not None:
        git_state()  # the commit the call starts from (cached): a commit made while it runs is not its code
    try:
        yield
    finally:
        if token is not None:
            _CALL_STARTED.reset(token)


@functools.lru_cache(maxsize=1)
def kit_version() -> str:
    """The version in the repository's ``pyproject.toml``; the installed distribution's otherwise."""
    project = REPO_ROOT / "pyproject.toml"
    if project.is_file():
        import tomllib
        try:
            return tomllib.loads(project.read_text())["project"]["version"]
        except (tomllib.TOMLDecodeError, KeyError, UnicodeDecodeError):
            pass
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """{"commit": sha or None, "dirty": True/False or None} of the repository holding the kit."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=20)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode or not (REPO_ROOT / ".git").exists():
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if not status.returncode else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _devices() -> list[str]:
    torch = sys.modules.get("torch")  # only when the run already uses it: no import for a record
    if torch is not None and torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [f"cpu ({platform.machine()}, {os.cpu_count()} cores)"]


def _command() -> str:
    """The command line without the machine's paths: ``python -m kit ...`` for the kit's own entry
    point, the script's name otherwise."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    if program == "__main__.py" and os.path.basename(os.path.dirname(sys.argv[0])) == "kit":
        program = "python -m kit"
    return " ".join([program, *sys.argv[1:]])


def provenance(started: float | None = None) -> dict:
    """The record: version, commit, dirty, command, python, devices and the wall seconds since
    ``started`` (a ``time.time()``; default: the start of the kit call in progress, if any)."""
    started = started if started is not None else _CALL_STARTED.get()
    record = {"kit_version": kit_version(), **git_state(), "command": _command(),
              "python": platform.python_version(), "devices": _devices()}
    if started is not None:
        record["wall_seconds"] = round(time.time() - started, 2)
    return record
