"""Reading the kit's small JSON files safely: size-capped, any shape, one line when they are bad.

Every JSON file the kit reads (manifests, config.json, metrics.json, meta.json, blend.json, judge
records) goes through :func:`read_json`: a file over :data:`MAX_JSON_BYTES` is refused before it is
read, and unreadable bytes, malformed JSON and nesting too deep for the parser (a 200,000-deep
``[[[...]]]`` would otherwise abort the whole run with a ``RecursionError``) are one error naming the
file — never a traceback.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import KitError, SettingsError, StaleOutput

__all__ = ["MAX_JSON_BYTES", "check_outside", "check_safetensors", "read_json", "safe_name", "under"]

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


def safe_name(name: str) -> str:
    """``name`` as one folder name that stays where it is put: a path (absolute, relative, with
    ``..``) becomes its last component (resolved, so ``/a/b/..`` is ``a``), any character but letters,
    digits and ``_ . @ + -`` becomes ``_``; never empty, ``.`` or ``..``. A preset's own name and
    ``PRESET@TAG`` come back unchanged."""
    text = str(name)
    if "/" in text or "\\" in text or text in (".", ".."):
        text = Path(text).resolve().name or "root"
    text = re.sub(r"[^A-Za-z0-9_.@+-]", "_", text)
    return text if text.strip(".") else f"_{text}"


def under(root: str | Path, *parts: str) -> Path:
    """``root / part / ...`` with each part made a :func:`safe_name`; guaranteed inside ``root``
    (also when ``root`` or a folder under it is reached through a link): a path that would leave it
    is a SettingsError, never written."""
    root = Path(root)
    path = root.joinpath(*(safe_name(p) for p in parts))
    if not path.resolve().is_relative_to(root.resolve()):
        raise SettingsError(f"{path} leads outside {root} (a link?): the kit writes only under its output folder")
    return path


def check_outside(out: str | Path, inputs, flag: str = "--out") -> None:
    """A SettingsError when the output ``out`` is, or lies inside, one of ``inputs`` ({what: path} or
    (what, path) pairs; a None path skipped): the kit never writes under what it reads (a backbone folder, a
    cache, a table, an attached dataset), so an input stays byte for byte as it was."""
    where = Path(out).resolve()
    for what, path in (inputs.items() if isinstance(inputs, dict) else inputs):
        if path is None or not Path(path).exists():
            continue
        folder = Path(path).resolve()
        if where == folder or where.is_relative_to(folder):
            raise SettingsError(f"{flag} {out} is inside {what} {path}: the kit never writes under an input; "
                                f"choose an output folder outside it")


def check_safetensors(path: str | Path, fix: str, error: type[KitError] = StaleOutput) -> None:
    """Nothing when ``path`` is a whole ``.safetensors`` file: an 8-byte header length, a JSON header
    that fits the file, and tensor data that ends exactly at the file's end; else ``error`` naming the
    file and what is wrong (truncated, not a safetensors file) and ``fix``. Reads the header only, so a
    broken download is named in milliseconds rather than blamed on the disk when the weights load."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or 8 + length > size:
            raise error(f"{path} is not a whole .safetensors file ({size} bytes; " +
                        (f"its header says {length} header bytes" if length >= 0 else "no header") +
                        f"): truncated or damaged, {fix}")
        try:
            header = json.loads(f.read(length))
        except (ValueError, RecursionError):
            raise error(f"{path} is not a whole .safetensors file (its header is not JSON): damaged, {fix}") from None
    ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)] \
        if isinstance(header, dict) else None
    if ends is None or not all(isinstance(e, int) for e in ends):
        raise error(f"{path} is not a whole .safetensors file (its header lists no tensors): damaged, {fix}")
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        raise error(f"{path} is {'truncated' if size < expected else 'longer than its header says'} ({size} bytes, "
                    f"{expected} expected): a broken download or copy, {fix}")
