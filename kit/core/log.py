"""The ``kit`` logger: every stage reports through it, never through ``print``.

:func:`show_progress` (called by the CLI, the notebooks' bootstrap and the main job) sends
the kit's INFO messages to standard output as plain lines. The handler looks up
``sys.stdout`` at each message, so redirected or captured output (pytest, papermill) sees them.
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("kit")


class _CurrentStdout(logging.StreamHandler):
    """A StreamHandler bound to whatever ``sys.stdout`` is when a record is emitted."""

    def __init__(self):
        super().__init__(sys.stdout)

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)


def show_progress(level: int = logging.INFO) -> logging.Logger:
    """Print the kit's messages (``level`` and above) on standard output; idempotent."""
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
