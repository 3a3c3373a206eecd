"""Atomic, no-clobber output writing.

Every stage writes through :func:`atomic_write`: the content goes to a temporary file
in the target folder and is renamed into place, so a reader never sees a half-written
file; an existing target is an :class:`OutputExists` error unless ``overwrite=True``.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import pandas as pd

from ..core.errors import DataError, KitError, OutputExists
from ..core.log import get_logger
from ..core.provenance import provenance

log = get_logger(__name__)


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
        with writing(path):
            write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are for others to read too
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_failed(path, err: BaseException) -> KitError:
    """A failed write below the kit (the OS, torch's zip writer, safetensors) as one error naming
    ``path`` and the likely cause."""
    cause = " ".join(str(err).split())
    return KitError(f"writing {path} failed ({type(err).__name__}: {cause}): is the disk full or the folder "
                    f"read-only? Free space or write elsewhere (--out), then rerun the same command (a killed or "
                    f"failed training run resumes from its last complete checkpoint)")


# how torch's checkpoint writer reports a failed write (a full disk, mostly)
_WRITER_FAILURES = ("enforce fail", "inline_container", "PytorchStreamWriter", "No space left")


@contextmanager
def writing(path) -> Iterator[None]:
    """Whatever fails while ``path`` is written (no space, a read-only folder, a library's own
    writer) is re-raised as :func:`write_failed` naming ``path``; the kit's own errors pass."""
    try:
        yield
    except KitError:
        raise
    except OSError as err:
        raise write_failed(path, err) from err
    except RuntimeError as err:  # torch's zip writer; anything else (out of GPU memory, a bug) is not a write
        if not any(mark in str(err) for mark in _WRITER_FAILURES):
            raise
        raise write_failed(path, err) from err
    except Exception as err:  # noqa: BLE001 - safetensors' SafetensorError derives from Exception only
        if type(err).__module__.startswith("safetensors"):
            raise write_failed(path, err) from err
        raise


def new_run_id() -> str:
    """A fresh id for one train-stage run: its predictions carry it (``*.manifest.json``), so
    predictions made by an earlier run of the same folder are recognised as stale."""
    return uuid.uuid4().hex


def manifest_path(predictions) -> Path:
    """``predictions/test.csv`` -> ``predictions/test.manifest.json``."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.stem + ".manifest.json")


def publish(source, target, who: str = "kit", refine: bool = False) -> Path:
    """Copy ``source`` to ``target`` atomically; a file already at ``target`` is first moved
    aside to ``<stem>-<its mtime>.<suffix>`` (said on the console) — never overwritten, unless ``refine``:
    the file there is this run's own earlier version (``kit submit`` rewrites its submission as members
    finish), replaced in one rename."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if refine:
        return atomic_write(target, lambda p: shutil.copyfile(source, p), overwrite=True)
    if target.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(target.stat().st_mtime))
        aside = target.with_name(f"{target.stem}-{stamp}{target.suffix}")
        n = 1
        while aside.exists():
            aside, n = target.with_name(f"{target.stem}-{stamp}-{n}{target.suffix}"), n + 1
        os.replace(target, aside)
        log.info(f"[{who}] the previous {target.name} was moved to {aside}")
    atomic_write(target, lambda p: shutil.copyfile(source, p))
    return target


# what pandas reads as missing by default; applied to every column but ``id``
_MISSING = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
            "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


# the largest CSV the kit reads without being told otherwise: the competition's train.csv is ~180 MB
MAX_CSV_BYTES = 2 * 1024 ** 3


def read_csv_keeping_ids(path, max_bytes: int = MAX_CSV_BYTES, **kwargs) -> pd.DataFrame:
    """Read a CSV whose ``id`` column is text exactly as written: ``001`` stays ``001``, ``NA``
    stays ``NA``; the other columns parse as pandas would. A file over ``max_bytes`` is a DataError
    naming it, before it is read."""
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise DataError(f"{path}: {size} bytes, more than the {max_bytes} this table may have: pass the file meant "
                        f"here")
    columns = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype={"id": str}, keep_default_na=False,
                       na_values={c: _MISSING for c in columns if c != "id"}, **kwargs)


def _id_text(value):
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, float):
        if value != value:  # NaN: a missing id (named by the table's reader)
            return value
        if not value.is_integer():
            raise DataError(f"id {value!r} is a fraction: ids must be text or whole numbers (store the id column as "
                            f"text or integers)")
        return str(int(value))  # a float column of whole numbers (e.g. a parquet export): 136060.0 -> "136060"
    return str(value)


def ids_as_text(ids: pd.Series) -> pd.Series:
    """Ids as the kit carries them: text. Numbers (a parquet file's int ids) become their decimal
    text, so ``7`` and ``"7"`` are the same id everywhere; a float that holds a whole number becomes
    its integer text (``136060.0`` -> ``"136060"``); any other float is a DataError."""
    return ids.map(_id_text)


def read_parquet_keeping_ids(path, columns=None) -> pd.DataFrame:
    """A kit-written parquet table with its ``id`` column as text (caches written before ids
    were kept as text hold numbers)."""
    frame = pd.read_parquet(path, columns=columns)
    if "id" in frame.columns:
        frame["id"] = ids_as_text(frame["id"])
    return frame


def recover_staged(out_dir, owned: Sequence[str]) -> None:
    """Undo what a killed :func:`staged_folder` left beside ``out_dir``: when the kill fell between
    its two final renames, the previous complete output is moved back from ``.<name>.old-*``;
    entries it had carried into ``.<name>.partial-*`` that are not the stage's own (``owned``) go
    back into ``out_dir``; the rest of those hidden folders is deleted. Stages call it before
    looking at their outputs. One writer per output folder at a time (as everywhere in the kit)."""
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        return
    for old in sorted(out_dir.parent.glob(f".{out_dir.name}.old-*")):
        if not out_dir.exists() and (old / out_dir.name).is_dir():
            os.replace(old / out_dir.name, out_dir)
            log.info(f"[kit] {out_dir}: restored the previous complete output (a run was killed while replacing it)")
        shutil.rmtree(old, ignore_errors=True)
    for partial in sorted(out_dir.parent.glob(f".{out_dir.name}.partial-*")):
        for entry in list(partial.iterdir()) if partial.is_dir() else []:
            if entry.name not in owned and out_dir.is_dir() and not (out_dir / entry.name).exists():
                os.replace(entry, out_dir / entry.name)
            elif entry.name not in owned and not out_dir.exists():
                out_dir.mkdir(parents=True)
                os.replace(entry, out_dir / entry.name)
        shutil.rmtree(partial, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    platform or file system cannot (the caller then uses two renames)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def staged_folder(out_dir, owned: Sequence[str]) -> Iterator[Path]:
    """Stage-atomic output: yields an empty staging folder beside ``out_dir`` to write a stage's
    files into; on success it replaces ``out_dir`` in one atomic exchange (two renames where the
    platform has none: a kill between them leaves no output until :func:`recover_staged` restores
    the previous one), so a reader sees the previous complete output or the new one, never a
    mix — a stage killed or failing midway leaves ``out_dir`` as it was. ``owned`` names the
    stage's own files: the earlier ones are dropped (a file the new run does not write must not
    outlive it); anything else in ``out_dir`` is carried over (moved back if the stage fails
    before its swap). Callers check for existing outputs (:func:`check_free`) first."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_staged(out_dir, owned)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    carried, old = [], None
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
        if out_dir.exists():
            for entry in out_dir.iterdir():
                if entry.name not in owned:
                    os.replace(entry, staging / entry.name)
                    carried.append(entry.name)
            if _exchange(staging, out_dir):  # one atomic step: staging now holds the old output
                carried = []
                return
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
        os.replace(staging, out_dir)
        carried = []
    finally:
        if old is not None and not out_dir.exists() and (old / out_dir.name).exists():
            os.replace(old / out_dir.name, out_dir)  # the swap failed: the previous output stays
        for name in carried:  # the stage failed before its swap: what it carried goes back
            if (staging / name).exists() and out_dir.is_dir():
                os.replace(staging / name, out_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda p: df.to_parquet(p, index=False), overwrite)


def write_parquet_parts(parts: Iterable[pd.DataFrame], path, keep: Callable[[pd.DataFrame], pd.DataFrame]
                        ) -> pd.DataFrame:
    """Frames written one after another as the row groups of one parquet file at ``path`` (a staging folder's:
    not atomic on its own), in the first frame's schema, each let go once written; returns ``keep`` of each
    frame, concatenated (what the caller needs of the rows: ids, counts). Nothing is written for no frames."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, kept = None, []
    try:
        for part in parts:
            table = pa.Table.from_pandas(part, preserve_index=False,
                                         schema=writer.schema if writer is not None else None)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            kept.append(keep(part))
            del table, part
    finally:
        if writer is not None:
            writer.close()
    return pd.concat(kept, ignore_index=True) if kept else None


def write_csv(df: pd.DataFrame, path, overwrite: bool = False, **kwargs) -> Path:
    return atomic_write(path, lambda p: df.to_csv(p, index=False, **kwargs), overwrite)


def write_json(obj, path, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"),
                        overwrite)


def write_results(record: dict | list, path, started: float | None = None) -> Path:
    """A benchmark's results JSON, replaced atomically, with the provenance of the code and run that
    made it (:func:`kit.core.provenance.provenance`; the wall seconds since ``started``); a list of
    rows is written as ``{"rows": [...], "provenance": {...}}``."""
    body = dict(record) if isinstance(record, dict) else {"rows": list(record)}
    return write_json({**body, "provenance": provenance(started)}, path, overwrite=True)


def benchmark_command(script: str, argv=None) -> str:
    """``python scripts/<script's name> ARGS``: how a benchmark was run, for its report (``argv`` None: this
    process's own arguments)."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return " ".join(["python", f"scripts/{Path(script).name}", *args])


def write_benchmark(rows: list[dict], out, title: str, text: str, command: str, started: float | None = None) -> str:
    """A benchmark's report: ``out`` (markdown: the title, the command and ``text``, then the rows as a table)
    and its ``.json`` twin (the command and the rows, with :func:`write_results`' provenance); returns the
    markdown."""
    out = Path(out)
    write_results({"command": command, "rows": rows}, out.with_suffix(".json"), started)
    markdown = f"# {title}\n\n`{command}`: {text}\n\n{pd.DataFrame(rows).to_markdown(index=False)}\n"
    write_text(markdown, out, overwrite=True)
    return markdown


def write_text(text: str, path, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda p: p.write_text(text), overwrite)


@contextmanager
def output_lock(target) -> Iterator[Path]:
    """One writer per output: an exclusive lock on ``.<name>.lock`` beside ``target`` (a folder or a
    file) for the duration. A second writer fails at once with a KitError naming the holder's pid.
    The lock is the kernel's (``flock``): a run that was killed leaves no stale lock behind (the
    empty lock file stays, as it must for ``flock`` to exclude every writer)."""
    from filelock import FileLock, Timeout

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    holder = target.parent / f".{target.name}.lock.pid"
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        pid = holder.read_text().strip() if holder.is_file() else "unknown"
        raise KitError(f"another run is writing {target} (pid {pid}): wait for it to finish, or write elsewhere "
                       f"(--out / OUT)") from None
    try:
        holder.write_text(f"{os.getpid()}\n")
        yield target
    finally:
        holder.unlink(missing_ok=True)
        # the lock file stays: removing it before (or after) the release would let a writer that
        # opened the old file and one that creates a new one both hold "the" lock
        lock.release()
