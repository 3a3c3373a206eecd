"""Atomic, no-clobber output writing.

Every stage writes through :func:`atomic_write`: the content goes to a temporary file
in the target folder and is renamed into place, so a reader never sees a half-written
file; an existing target is an :class:`OutputExists` error unless ``overwrite=True``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd


class OutputExists(FileExistsError):
    pass


def check_free(paths, overwrite: bool) -> None:
    """Raise OutputExists naming every path that exists (unless overwrite)."""
    taken = [str(p) for p in paths if Path(p).exists()]
    if taken and not overwrite:
        raise OutputExists(f"output already exists: {', '.join(taken)} "
                           f"(pass --overwrite on the CLI, OVERWRITE = True in a notebook or overwrite=True in Python to "
                           f"replace, or choose another --out / OUT)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename tmp_path to ``path`` (same folder)."""
    path = Path(path)
    check_free([path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are for others to read too
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def new_run_id() -> str:
    """A fresh id for one train-stage run: its predictions carry it (``*.manifest.json``), so
    predictions made by an earlier run of the same folder are recognised as stale."""
    import uuid

    return uuid.uuid4().hex


def manifest_path(predictions) -> Path:
    """``predictions/test.csv`` -> ``predictions/test.manifest.json``."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.stem + ".manifest.json")


def publish(source, target, who: str = "kit") -> Path:
    """Copy ``source`` to ``target`` atomically; a file already at ``target`` is first moved
    aside to ``<stem>-<its mtime>.<suffix>`` (said on the console) — never overwritten."""
    import time

    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(target.stat().st_mtime))
        aside = target.with_name(f"{target.stem}-{stamp}{target.suffix}")
        n = 1
        while aside.exists():
            aside, n = target.with_name(f"{target.stem}-{stamp}-{n}{target.suffix}"), n + 1
        os.replace(target, aside)
        print(f"[{who}] the previous {target.name} was moved to {aside}", flush=True)
    atomic_write(target, lambda p: shutil.copyfile(source, p))
    return target


# what pandas reads as missing by default; applied to every column but ``id``
_MISSING = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
            "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


def read_csv_keeping_ids(path, **kwargs) -> pd.DataFrame:
    """Read a CSV whose ``id`` column is text exactly as written: ``001`` stays ``001``, ``NA``
    stays ``NA``; the other columns parse as pandas would."""
    columns = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype={"id": str}, keep_default_na=False,
                       na_values={c: _MISSING for c in columns if c != "id"}, **kwargs)


def ids_as_text(ids: pd.Series) -> pd.Series:
    """Ids as the kit carries them: text. Numbers (a parquet file's int ids) become their
    decimal text, so ``7`` and ``"7"`` are the same id everywhere."""
    return ids.map(lambda v: v if isinstance(v, str) or v is None or (isinstance(v, float) and v != v)
                   else str(v))


def read_parquet_keeping_ids(path, columns=None) -> pd.DataFrame:
    """A kit-written parquet table with its ``id`` column as text (caches written before ids
    were kept as text hold numbers)."""
    frame = pd.read_parquet(path, columns=columns)
    if "id" in frame.columns:
        frame["id"] = ids_as_text(frame["id"])
    return frame


@contextmanager
def staged_folder(out_dir, owned: Sequence[str]) -> Iterator[Path]:
    """Stage-atomic output: yields an empty staging folder beside ``out_dir`` to write a stage's
    files into; on success it replaces ``out_dir`` in one rename, so a reader sees the previous
    complete output or the new one, never a mix — a stage killed or failing midway leaves
    ``out_dir`` as it was. ``owned`` names the stage's own files: the earlier ones are dropped
    (a file the new run does not write must not outlive it); anything else in ``out_dir`` is
    carried over. Callers check for existing outputs (:func:`check_free`) first."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
        if out_dir.exists():
            for entry in out_dir.iterdir():
                if entry.name not in owned:
                    os.replace(entry, staging / entry.name)
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
            os.replace(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda p: df.to_parquet(p, index=False), overwrite)


def write_csv(df: pd.DataFrame, path, overwrite: bool = False, **kwargs) -> Path:
    return atomic_write(path, lambda p: df.to_csv(p, index=False, **kwargs), overwrite)


def write_json(obj, path, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"),
                        overwrite)


def write_text(text: str, path, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda p: p.write_text(text), overwrite)
