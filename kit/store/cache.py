"""The tokenized cache (``<work>/tokenized/<preset>/``): its reader and its checks.

Written by the tokenize stage (:mod:`kit.stages.tokenize`), stage-atomically:
``train.parquet`` / ``test.parquet`` (id, the member type's cache columns, label, fold,
targets), ``skipped_rows.csv``, ``meta.json``, ``retention.png`` and, last, ``manifest.json``.
Every reader goes through :func:`check_cache`: a table is read only when the manifest is
complete and the table's bytes are the ones the stage fingerprinted.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.errors import StaleOutput
from ..core.presets import Preset
from ..core.log import get_logger
from .figures import plot_retention
from .io import read_parquet_keeping_ids, staged_folder, write_csv, write_json, write_parquet
from .manifest import (MANIFEST, check_output, file_sha256, folds_fingerprint, read_manifest,
                       rerun_advice, stage_manifest)
from ..core.files import read_json

log = get_logger(__name__)

CACHE_FILES = {"train": "train.parquet", "test": "test.parquet", "oof": "train.parquet"}
CACHE_OUTPUTS = ("train.parquet", "test.parquet", "skipped_rows.csv", "meta.json", "retention.png",
                 "dedup_removed.csv", MANIFEST)  # the tokenize stage's own files


def check_cache(tokenized: str | Path, split: str) -> dict:
    """The cache's manifest, once its ``<split>`` table and ``meta.json`` (read with it) are checked to
    be the ones the tokenize stage wrote (complete manifest, same content fingerprints); else a
    StaleOutput saying how to remake it. (The other table is checked when it is read.)"""
    tokenized = Path(tokenized)
    rerun = rerun_advice(tokenized, f"rerun the tokenize stage into it (`python -m kit tokenize ... --out {tokenized} "
                                    f"--overwrite`, notebook 01_tokenize with OVERWRITE = True)")
    manifest = read_manifest(tokenized / MANIFEST, f"tokenized cache {tokenized}", rerun)
    name = CACHE_FILES[split]
    check_output(manifest, name, tokenized / name, f"tokenized cache {tokenized}", rerun)
    if "meta.json" in manifest.get("outputs", {}):  # read with every table (caches of older kits did not record it)
        check_output(manifest, "meta.json", tokenized / "meta.json", f"tokenized cache {tokenized}", rerun)
    return manifest


def cache_meta(tokenized: str | Path) -> dict:
    """The cache's ``meta.json`` (preset, packing, sources, fold settings, counts)."""
    path = Path(tokenized) / "meta.json"
    try:
        meta = read_json(path, rerun_advice(path.parent, "rerun the tokenize stage"))
    except FileNotFoundError:
        raise StaleOutput(f"no tokenized cache at {path.parent} (no meta.json): run `python -m kit tokenize` "
                          f"first (notebook 01_tokenize)") from None
    if not isinstance(meta, dict):
        raise StaleOutput(f"{path} is not a tokenize stage's meta.json: rerun the tokenize stage")
    return meta


def packed_preset(meta: dict) -> Preset | None:
    """The preset a cache was packed for (its ``meta.json``'s record, older kits' included), typed;
    None for a cache that records none."""
    return Preset.from_dict(meta["preset"]) if meta.get("preset") else None


def load_cache(tokenized: str | Path, split: str = "train") -> tuple[pd.DataFrame, dict, dict]:
    """(table, meta, manifest) of a checked cache split (``train`` or ``test``); ids as text."""
    tokenized = Path(tokenized)
    path = tokenized / CACHE_FILES[split]
    if not path.exists():
        raise StaleOutput(f"no tokenized {split} table at {path}: run `python -m kit tokenize` first "
                          f"(notebook 01_tokenize)")
    manifest = check_cache(tokenized, split)
    return read_parquet_keeping_ids(path), cache_meta(tokenized), manifest


def write_cache(out_dir: Path, train: pd.DataFrame | None, test: pd.DataFrame | None, skipped: pd.DataFrame,
                removed: pd.DataFrame | None, meta: dict, *, settings: dict, inputs: dict) -> None:
    """Write a cache stage-atomically: every file into a staging folder that replaces ``out_dir``
    in one swap, the manifest last (``settings``, ``inputs`` by content, the tables' and the fold
    assignment's fingerprints). A kill or a full disk midway leaves the previous cache as it was."""
    with staged_folder(out_dir, list(CACHE_OUTPUTS)) as stage:
        if train is not None:
            write_parquet(train, stage / "train.parquet")
        if test is not None:
            write_parquet(test, stage / "test.parquet")
        write_csv(skipped, stage / "skipped_rows.csv")
        if removed is not None:
            write_csv(removed, stage / "dedup_removed.csv")
        write_json(meta, stage / "meta.json")
        shown = pd.concat([d for d in (train, test) if d is not None], ignore_index=True)
        if len(shown) and meta.get("pack") and "n_tokens" in shown:
            plot_retention(shown, meta["pack"]["max_length"], stage / "retention.png",
                           title=f"{meta['preset']['name']}: {len(shown)} rows packed")
        written = {n: stage / n for n in (*CACHE_FILES.values(), "meta.json", "skipped_rows.csv", "dedup_removed.csv")
                   if (stage / n).exists()}
        write_json(stage_manifest("tokenize", settings=settings, inputs=inputs, outputs=written,
                                  folds=folds_fingerprint(train) if train is not None else None),
                   stage / MANIFEST)  # last: the cache is complete


def cache_sources(tokenized: str | Path, split: str) -> list[Path] | None:
    """The tables a cache was made from (``split`` train: the train and extra tables; test: the
    test table), each checked to be, byte for byte, what the tokenize stage read (the manifest's
    fingerprints): a changed one is a StaleOutput naming it. None (said on the console) when a
    table is not here (e.g. on Kaggle, where only the models were attached)."""
    tokenized = Path(tokenized)
    meta = cache_meta(tokenized)
    manifest = read_manifest(tokenized / MANIFEST, f"tokenized cache {tokenized}", "rerun the tokenize stage")
    if split == "train":
        named = {f"train:{p}": p for p in meta["train_sources"]} | {f"extra:{p}": p for p in meta.get("extra_sources", [])}
    else:
        named = {"test": meta.get("test_source")} if meta.get("test_source") else {}
    missing = [p for p in named.values() if not Path(p).is_file()]
    if missing or not named:
        log.info(f"[kit] the {split} source table(s) {missing} of {tokenized} are not here: figures that re-read them "
                 f"are left out")
        return None
    for key, path in named.items():
        recorded = manifest.get("inputs", {}).get(key, {}).get("sha256")
        if recorded is not None and file_sha256(path) != recorded:
            raise StaleOutput(f"{path} changed after {tokenized} was made from it (fingerprint {recorded[:12]} then, "
                              f"{file_sha256(path)[:12]} now): re-tokenize it (`python -m kit tokenize ... --out "
                              f"{tokenized} --overwrite`) and rerun the later stages, or restore the table")
    return [Path(p) for p in named.values()]
