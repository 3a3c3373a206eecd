"""The tokenized cache (``<work>/tokenized/<preset>/``): its reader and its checks.

Written by the tokenize stage (:mod:`kit.stages.tokenize`), stage-atomically:
``train.parquet`` / ``test.parquet`` (id, the member type's cache columns, label, fold,
targets), ``skipped_rows.csv``, ``meta.json``, ``retention.png`` and, last, ``manifest.json``.
Every reader goes through :func:`check_cache`: a table is read only when the manifest is
complete and the table's bytes are the ones the stage fingerprinted.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..core.errors import StaleOutput
from .io import read_parquet_keeping_ids
from .manifest import MANIFEST, check_output, read_manifest

CACHE_FILES = {"train": "train.parquet", "test": "test.parquet", "oof": "train.parquet"}
CACHE_OUTPUTS = ("train.parquet", "test.parquet", "skipped_rows.csv", "meta.json", "retention.png",
                 "dedup_removed.csv", MANIFEST)  # the tokenize stage's own files


def check_cache(tokenized: str | Path, split: str) -> dict:
    """The cache's manifest, once its ``<split>`` table is checked to be the one the tokenize
    stage wrote (complete manifest, same content fingerprint); else a StaleOutput saying how to
    remake it."""
    tokenized = Path(tokenized)
    rerun = (f"rerun the tokenize stage into it (`python -m kit tokenize ... --out {tokenized} --overwrite`, "
             f"notebook 01_tokenize with OVERWRITE = True)")
    manifest = read_manifest(tokenized / MANIFEST, f"tokenized cache {tokenized}", rerun)
    name = CACHE_FILES[split]
    check_output(manifest, name, tokenized / name, f"tokenized cache {tokenized}", rerun)
    return manifest


def cache_meta(tokenized: str | Path) -> dict:
    """The cache's ``meta.json`` (preset, packing, sources, fold settings, counts)."""
    path = Path(tokenized) / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StaleOutput(f"no tokenized cache at {path.parent} (no meta.json): run `python -m kit tokenize` "
                          f"first (notebook 01_tokenize)") from None
    except ValueError as e:
        raise StaleOutput(f"{path} is unreadable ({e}): rerun the tokenize stage") from None


def load_cache(tokenized: str | Path, split: str = "train") -> tuple[pd.DataFrame, dict, dict]:
    """(table, meta, manifest) of a checked cache split (``train`` or ``test``); ids as text."""
    tokenized = Path(tokenized)
    path = tokenized / CACHE_FILES[split]
    if not path.exists():
        raise StaleOutput(f"no tokenized {split} table at {path}: run `python -m kit tokenize` first "
                          f"(notebook 01_tokenize)")
    manifest = check_cache(tokenized, split)
    return read_parquet_keeping_ids(path), cache_meta(tokenized), manifest
