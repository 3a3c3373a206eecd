"""Stage manifests: what each stage output was made from, by content.

Every stage output ends with a ``manifest.json`` (a predictions file with its
``<name>.manifest.json``) written *last*, inside the stage's staging folder:

    {"stage": "tokenize", "kit_version": ..., "time": ..., "settings": {...},
     "inputs":  {name: {"path": ..., "sha256": ...}},   # what the stage read, by content
     "outputs": {name: sha256},                          # what it wrote, by content
     "complete": true}                                   # last key

Guarantees the readers rely on:

* an output without a complete manifest is unfinished — never read (:func:`read_manifest`);
* an output whose bytes differ from its manifest's fingerprint was changed after its stage
  wrote it — never read (:func:`check_output`);
* a stage's recorded input fingerprint that differs from the input's current one means the
  input was remade since (e.g. re-tokenized): the reader says which stage to rerun.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pandas as pd

from ..core.provenance import provenance
from ..core.errors import StaleOutput

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
    record = provenance(started)
    return {"stage": stage, "kit_version": record["kit_version"], "provenance": record,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": settings or {}, "inputs": inputs or {}, "outputs": fingerprints, **extra, "complete": True}


def read_manifest(path, what: str, rerun: str) -> dict:
    """The complete manifest at ``path``, else a StaleOutput naming ``what`` and the rerun."""
    path = Path(path)
    if not path.is_file():
        raise StaleOutput(f"{what}: no {path.name} at {path.parent} (an unfinished stage, or made by an older kit): "
                          f"{rerun}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StaleOutput(f"{what}: {path} is unreadable ({e}): {rerun}") from None
    if manifest.get("complete") is not True:
        raise StaleOutput(f"{what}: {path} does not say complete: {rerun}")
    return manifest


def input_record(path) -> dict:
    """How a manifest names an input it read: its path and content fingerprint."""
    return {"path": str(path), "sha256": sha256_of(path)}


def check_output(manifest: dict, name: str, path, what: str, rerun: str) -> str:
    """``path``'s fingerprint, if it is what the manifest recorded under ``name``; else StaleOutput."""
    recorded = manifest.get("outputs", {}).get(name)
    path = Path(path)
    if not path.exists():
        raise StaleOutput(f"{what}: {path} is missing although its stage wrote it: {rerun}")
    now = sha256_of(path)
    if recorded != now:
        raise StaleOutput(f"{what}: {path} changed after its stage wrote it (fingerprint {str(recorded)[:12]} "
                          f"then, {now[:12]} now): {rerun}")
    return now
