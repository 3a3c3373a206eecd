"""The ``kit`` logger: every stage reports through it, never through ``print``.

:func:`show_progress` (called by the CLI, the notebooks' bootstrap and the main job) sends
the kit's INFO messages to standard output as plain lines. The handler looks up
``sys.stdout`` at each message, so redirected or captured output (pytest, papermill) sees them.
"""
from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("kit")


class _CurrentStdout(logging.StreamHandler):
    """A StreamHandler bound to whatever ``sys.stdout`` is when a record is emitted."""

    def __init__(self):
        super().__init__(sys.stdout)

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)


# libraries' messages that concern their developers, not a kit user: written to DEVELOPER_LOG instead
# of the console (bitsandbytes: an optional faster CPU kernel package is not installed; 4-bit works
# without it)
DEVELOPER_LOGGERS = ("bitsandbytes.backends.cpu.ops",)
DEVELOPER_LOG = Path(tempfile.gettempdir()) / "kit-developer.log"


def quiet_library_noise() -> None:
    """Keep the console and executed notebooks to what a user can act on: the loggers in
    :data:`DEVELOPER_LOGGERS` go to :data:`DEVELOPER_LOG`, and tqdm's "IProgress not found"
    warning (a notebook without ipywidgets: tqdm falls back to text lines, which is what the kit
    wants) is not shown. Idempotent."""
    import warnings

    for name in DEVELOPER_LOGGERS:
        library = logging.getLogger(name)
        if not any(isinstance(h, logging.FileHandler) for h in library.handlers):
            library.addHandler(logging.FileHandler(DEVELOPER_LOG, delay=True))
        library.propagate = False
    warnings.filterwarnings("ignore", message="IProgress not found")


def show_progress(level: int = logging.INFO) -> logging.Logger:
    """Print the kit's messages (``level`` and above) on standard output, and keep libraries'
    developer messages off it (:func:`quiet_library_noise`); idempotent."""
    quiet_library_noise()
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def get_logger(name: str) -> logging.Logger:
    """A child of the ``kit`` logger (``kit.<module>``)."""
    return logger.getChild(name.removeprefix("kit."))


quiet_library_noise()  # before any library that logs at import (bitsandbytes, via peft) is imported
