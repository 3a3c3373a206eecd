"""Reading the kit's small JSON files safely: size-capped, any shape, one line when they are bad.

Every JSON file the kit reads (manifests, config.json, metrics.json, meta.json, blend.json, judge
records) goes through :func:`read_json`: a file over :data:`MAX_JSON_BYTES` is refused before it is
read, and unreadable bytes, malformed JSON and nesting too deep for the parser (a 200,000-deep
``[[[...]]]`` would otherwise abort the whole run with a ``RecursionError``) are one error naming the
file — never a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import KitError, StaleOutput

__all__ = ["MAX_JSON_BYTES", "read_json"]

# the kit's own JSON files are kilobytes; the largest (a blend.json with per-fold reports) well under 1 MiB
MAX_JSON_BYTES = 16 * 1024 * 1024


def read_json(path: str | Path, fix: str, error: type[KitError] = StaleOutput, max_bytes: int = MAX_JSON_BYTES,
              kind: str = "readable JSON") -> Any:
    """The JSON value in ``path``; else ``error`` naming the file, what is wrong with it (``{path} is
    not {kind} (...)``) and ``fix`` (what to do). Guarantees: at most ``max_bytes`` are read; no ``RecursionError``,
    ``UnicodeDecodeError`` or ``OSError`` escapes. A missing file is ``FileNotFoundError``
    (callers say what its absence means)."""
    path = Path(path)
    size = path.stat().st_size  # FileNotFoundError: the caller's case
    if size > max_bytes:
        raise error(f"{path}: {size} bytes, more than the {max_bytes} a kit JSON file may have (not written by the "
                    f"kit, or damaged): {fix}")
    try:
        with open(path, "rb") as f:
            return json.loads(f.read(max_bytes + 1))
    except RecursionError:
        raise error(f"{path} is not {kind} (nested too deeply for a file the kit wrote): {fix}") from None
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{path} is not {kind} ({type(e).__name__}: {str(e)[:200]}): {fix}") from None
