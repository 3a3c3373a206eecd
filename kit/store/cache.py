"""The tokenized cache (``<work>/tokenized/<preset>/``): its reader and its checks.

Written by the tokenize stage (:mod:`kit.stages.tokenize`), stage-atomically:
``train.parquet`` / ``test.parquet`` (id, the member type's cache columns, label, fold,
targets), ``skipped_rows.csv``, ``meta.json``, ``retention.png`` and, last, ``manifest.json``.
Every reader goes through :func:`check_cache`: a table is read only when the manifest is
complete and the table's bytes are the ones the stage fingerprinted.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
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
    """The cache's ``meta.json`` as written (preset, packing, sources, fold settings, counts); read it
    typed with :func:`read_cache`."""
    path = Path(tokenized) / "meta.json"
    try:
        meta = read_json(path, rerun_advice(path.parent, "rerun the tokenize stage"))
    except FileNotFoundError:
        raise StaleOutput(f"no tokenized cache at {path.parent} (no meta.json): run `python -m kit tokenize` "
                          f"first (notebook 01_tokenize)") from None
    if not isinstance(meta, dict):
        raise StaleOutput(f"{path} is not a tokenize stage's meta.json: rerun the tokenize stage")
    return meta


# the settings that decide which rows sit in which fold: a model's held-out fold is only held out
# on a cache that agrees with the one it was trained on in all of them
FOLD_KEYS = ("train_sources", "n_folds", "seed", "max_rows", "extra_sources", "dedup_similarity")


@dataclass(frozen=True)
class TokenizedCache:
    """A tokenized cache's record (its ``meta.json``), typed and read once (:func:`read_cache`).

    The token budget is stated once, as ``preset.max_length`` (per side for a pairwise member);
    ``pack_options`` are the packing options beyond it (``kit tokenize --pack``)."""

    path: Path
    preset: Preset | None  # None: a cache of an older kit that recorded no preset
    pack_options: dict | None
    train_sources: list[str]
    extra_sources: list[str]
    test_source: str | None
    extra_rows: dict
    record: dict  # meta.json as written: a trained model's config.json keeps it as its tokenization

    @property
    def max_length(self) -> int | None:
        return self.preset.max_length if self.preset else None

    @property
    def member(self) -> str:
        """The member type the cache was packed for (older caches without a preset: joint)."""
        return self.preset.member if self.preset else "joint"

    def fold_settings(self) -> dict:
        """The settings that place rows in folds (:data:`FOLD_KEYS`), as recorded."""
        return {k: self.record[k] for k in FOLD_KEYS if k in self.record}


def pack_options(pack: dict | None) -> dict | None:
    """A recorded packing without its token budget (older kits recorded it there too)."""
    return {k: v for k, v in pack.items() if k != "max_length"} if pack else None


def read_cache(tokenized: str | Path) -> TokenizedCache:
    """The typed record of a tokenized cache (its ``meta.json``; older kits' records included)."""
    meta = cache_meta(tokenized)
    return TokenizedCache(Path(tokenized), Preset.from_dict(meta["preset"]) if meta.get("preset") else None,
                          pack_options(meta.get("pack")), list(meta.get("train_sources") or []),
                          list(meta.get("extra_sources") or []), meta.get("test_source") or None,
                          dict(meta.get("extra_rows") or {}), meta)


def load_cache(tokenized: str | Path, split: str = "train") -> tuple[pd.DataFrame, TokenizedCache, dict]:
    """(table, record, manifest) of a checked cache split (``train`` or ``test``); ids as text."""
    tokenized = Path(tokenized)
    path = tokenized / CACHE_FILES[split]
    if not path.exists():
        raise StaleOutput(f"no tokenized {split} table at {path}: run `python -m kit tokenize` first "
                          f"(notebook 01_tokenize)")
    manifest = check_cache(tokenized, split)
    return read_parquet_keeping_ids(path), read_cache(tokenized), manifest


def cut_rate(tokenized: str | Path) -> float | None:
    """The share of a cache's training rows of which the packing cut some text (a turn, the prompt or
    a response shortened or dropped) to fit the token budget; None for a member type that packs no
    tokens (lexical) or a cache without training rows."""
    table, _, _ = load_cache(tokenized, "train")
    parts = [c.removesuffix("_kept") for c in table.columns if c.endswith("_kept") and c != "turns_kept"]
    if not parts or not len(table):
        return None
    cut = np.zeros(len(table), bool)
    for part in parts:
        cut |= table[f"{part}_kept"].to_numpy() < table[f"{part}_total"].to_numpy()
    return float(cut.mean())


@contextmanager
def staged_cache(out_dir: Path) -> Iterator[Path]:
    """The staging folder a cache is written into (:func:`kit.store.io.staged_folder`): it replaces ``out_dir``
    in one swap once :func:`write_cache` has filled it; a kill or a failure before that (a bad row, a full
    disk) leaves the previous cache as it was."""
    with staged_folder(out_dir, list(CACHE_OUTPUTS)) as stage:
        yield stage


def write_cache(stage: Path, train: pd.DataFrame | None, test: pd.DataFrame | None, skipped: pd.DataFrame,
                removed: pd.DataFrame | None, meta: dict, *, settings: dict, inputs: dict) -> None:
    """Fill a cache's staging folder (:func:`staged_cache`): the tables, the reports, the manifest last
    (``settings``, ``inputs`` by content, the tables' and the fold assignment's fingerprints). A
    ``test.parquet`` already in ``stage`` was streamed there (the tokenize stage's test table): then ``test``
    holds only its rows' ids and counts, for the retention plot."""
    if train is not None:
        write_parquet(train, stage / "train.parquet")
    if test is not None and not (stage / "test.parquet").exists():
        write_parquet(test, stage / "test.parquet")
    write_csv(skipped, stage / "skipped_rows.csv")
    if removed is not None:
        write_csv(removed, stage / "dedup_removed.csv")
    write_json(meta, stage / "meta.json")
    shown = pd.concat([d for d in (train, test) if d is not None], ignore_index=True)
    if len(shown) and meta["preset"]["max_length"] and "n_tokens" in shown:
        plot_retention(shown, meta["preset"]["max_length"], stage / "retention.png",
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
    cache = read_cache(tokenized)
    manifest = read_manifest(tokenized / MANIFEST, f"tokenized cache {tokenized}", "rerun the tokenize stage")
    if split == "train":
        named = {f"train:{p}": p for p in cache.train_sources} | {f"extra:{p}": p for p in cache.extra_sources}
    else:
        named = {"test": cache.test_source} if cache.test_source else {}
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
