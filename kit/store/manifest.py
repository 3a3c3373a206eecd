"""Stage manifests: what each stage output was made from, by content.

Every stage output ends with a ``manifest.json`` (a predictions file with its
``<name>.manifest.json``) written *last*, inside the stage's staging folder:

    {"stage": "tokenize", "kit_version": ..., "time": ..., "settings": {...},
     "inputs":  {name: {"path": ..., "sha256": ...}},   # what the stage read, by content
     "outputs": {name: sha256},                          # what it wrote, by content
     "files": {name: {relative path: [bytes, sha256]}},  # the same, file by file ("" for a file)
     "complete": true}                                   # last key

Guarantees the readers rely on:

* an output without a complete manifest is unfinished — never read (:func:`read_manifest`);
* an output whose bytes differ from its manifest's fingerprint was changed after its stage
  wrote it — never read (:func:`check_output`, which names the file missing, added or changed,
  compares sizes before hashing, so a planted giant file is refused without reading it, and
  refuses symbolic links: the kit writes none into its outputs, and a link could lead the
  checks outside the folder they vouch for);
* every output a manifest fingerprints is compared when its folder is read
  (:func:`check_outputs`), not only the one a reader needs first;
* a folder whose stage cannot be rerun in place (an attached, read-only dataset) is reported as
  damaged, with no advice to write under it (:func:`rerun_advice`);
* a stage's recorded input fingerprint that differs from the input's current one means the
  input was remade since (e.g. re-tokenized): the reader says which stage to rerun.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pandas as pd

from ..core.errors import StaleOutput
from ..core.files import read_json
from ..core.provenance import provenance

MANIFEST = "manifest.json"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_sha256(path) -> str:
    """One fingerprint over every file under ``path`` (relative names and bytes), in name order."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def sha256_of(path) -> str:
    path = Path(path)
    return folder_sha256(path) if path.is_dir() else file_sha256(path)


def file_records(path) -> dict[str, list]:
    """``{relative path: [bytes, sha256]}`` of a file (key ``""``) or of every file under a folder."""
    path = Path(path)
    if not path.is_dir():
        return {"": [path.stat().st_size, file_sha256(path)]}
    return {f.relative_to(path).as_posix(): [f.stat().st_size, file_sha256(f)]
            for f in sorted(p for p in path.rglob("*") if p.is_file())}


def links_under(path) -> list[Path]:
    """Every symbolic link at or under ``path`` (links to folders are not followed)."""
    path = Path(path)
    if path.is_symlink():
        return [path]
    if not path.is_dir():
        return []
    return [Path(root) / name for root, dirs, files in os.walk(path) for name in dirs + files
            if (Path(root) / name).is_symlink()]


def rerun_advice(folder, rerun: str) -> str:
    """``rerun`` where the stage can write ``folder`` again; for an attached, read-only dataset
    (Kaggle's /kaggle/input) the advice to re-create it where it was made instead."""
    folder = Path(folder)
    probe = folder if folder.exists() else folder.parent
    # root may write anywhere (os.access says yes): a folder with no write permission bits counts as read-only too
    attached = str(folder.resolve()).startswith("/kaggle/input") or (probe.exists() and (
        not os.access(probe, os.W_OK) or not probe.stat().st_mode & 0o222))
    return ("this attached dataset is damaged: re-create it in the session that trained it (and attach the new "
            "version)") if attached else rerun


def folds_fingerprint(frame: pd.DataFrame) -> str:
    """Which row (id) sits in which fold with which label: what decides that a model's
    'held-out' rows really were held out."""
    cols = [c for c in ("id", "fold", "label") if c in frame.columns]
    values = pd.util.hash_pandas_object(frame[cols].astype(str), index=False).to_numpy()
    return hashlib.sha256(values.tobytes()).hexdigest()


def stage_manifest(stage: str, *, settings: dict | None = None, inputs: dict | None = None,
                   outputs: dict | None = None, started: float | None = None, **extra) -> dict:
    """A manifest dict; ``outputs`` maps a name to the path written (fingerprinted here); the
    provenance (:func:`kit.core.provenance.provenance`: version, commit, command, devices, and the
    wall seconds since ``started``) is recorded with it."""
    fingerprints = {name: sha256_of(path) for name, path in (outputs or {}).items()}
    files = {name: file_records(path) for name, path in (outputs or {}).items()}
    record = provenance(started)
    return {"stage": stage, "kit_version": record["kit_version"], "provenance": record,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": settings or {}, "inputs": inputs or {}, "outputs": fingerprints, "files": files, **extra,
            "complete": True}


def read_manifest(path, what: str, rerun: str) -> dict:
    """The complete manifest at ``path``, else a StaleOutput naming ``what`` and the rerun."""
    path = Path(path)
    if not path.is_file():
        raise StaleOutput(f"{what}: no {path.name} at {path.parent} (an unfinished stage, or made by an older kit): "
                          f"{rerun}")
    try:
        manifest = read_json(path, rerun)
    except StaleOutput as e:
        raise StaleOutput(f"{what}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        raise StaleOutput(f"{what}: {path} does not say complete: {rerun}")
    return manifest


def input_record(path) -> dict:
    """How a manifest names an input it read: its path and content fingerprint."""
    return {"path": str(path), "sha256": sha256_of(path)}


def check_output(manifest: dict, name: str, path, what: str, rerun: str) -> str:
    """``path``'s fingerprint, if it is what the manifest recorded under ``name``; else a
    StaleOutput naming the file that is missing, was added, changed, or is a link. Sizes are
    compared before anything is hashed (manifests with per-file records)."""
    path = Path(path)
    rerun = rerun_advice(path.parent, rerun)
    if not path.exists() and not path.is_symlink():
        raise StaleOutput(f"{what}: {path} is missing although its stage wrote it: {rerun}")
    links = links_under(path)
    if links:
        raise StaleOutput(f"{what}: {links[0]} is a symbolic link; the kit writes none into its outputs and reads "
                          f"none (a link can lead outside the folder its manifest vouches for): {rerun}")
    recorded = manifest.get("outputs", {}).get(name)
    files = (manifest.get("files") or {}).get(name)
    if isinstance(files, dict) and recorded is not None:
        _compare_files(files, path, what, rerun)  # every file as written: the whole is as recorded
        return recorded
    now = sha256_of(path)
    if recorded != now:
        raise StaleOutput(f"{what}: {path} changed after its stage wrote it (fingerprint {str(recorded)[:12]} "
                          f"then, {now[:12]} now): {rerun}")
    return now


def _compare_files(files: dict, path: Path, what: str, rerun: str) -> None:
    """The file-by-file comparison: missing, added, then size, then content, each naming the file."""
    def full(rel: str) -> Path:
        return path / rel if rel else path

    now = {rel: f for rel, f in ((f.relative_to(path).as_posix(), f) for f in path.rglob("*") if f.is_file())} \
        if path.is_dir() else {"": path}
    for rel in sorted(set(files) - set(now)):
        raise StaleOutput(f"{what}: {full(rel)} is missing although its stage wrote it: {rerun}")
    for rel in sorted(set(now) - set(files)):
        raise StaleOutput(f"{what}: {full(rel)} was added after its stage wrote {path.name}: {rerun}")
    for rel, (size, digest) in sorted(files.items()):
        if now[rel].stat().st_size != size:
            raise StaleOutput(f"{what}: {full(rel)} changed after its stage wrote it ({size} bytes then, "
                              f"{now[rel].stat().st_size} now): {rerun}")
        if file_sha256(now[rel]) != digest:
            raise StaleOutput(f"{what}: {full(rel)} changed after its stage wrote it (fingerprint {digest[:12]} "
                              f"then, {file_sha256(now[rel])[:12]} now): {rerun}")


def check_outputs(manifest: dict, folder, what: str, rerun: str, skip: tuple[str, ...] = ()) -> None:
    """Every output the manifest fingerprints under ``folder`` (but ``skip``) compared by
    :func:`check_output`: a file edited after its stage — a config.json, a metrics.json — is caught
    whichever file a reader needs first."""
    for name in manifest.get("outputs", {}):
        if name not in skip:
            check_output(manifest, name, Path(folder) / name, what, rerun)
