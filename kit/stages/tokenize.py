"""Stage 1 — tokenize: read train/test tables, pack them for one model preset, cache.

Output folder (default ``<work>/tokenized/<preset>``):

* ``train.parquet`` / ``test.parquet``: id, the head's token-id columns (joint head:
  input_ids and input_ids_swap, the same row packed with A and B exchanged, for swap
  augmentation and swap TTA; pairwise head: side_a_ids and side_b_ids, each side packed
  on its own), label, fold, n_tokens and the retention columns of :mod:`kit.ops.packing`.
  The columns are the member type's (:meth:`kit.members.MemberType.encoder`): the ``lexical``
  member keeps the parsed text turns (prompt, response_a, response_b) — same ids, labels, folds;
* ``skipped_rows.csv``: train rows not used and test rows repaired (row, id, column,
  problem, source);
* ``meta.json``: preset (with its head), packing configuration, sources and counts;
* ``retention.png``: packed lengths and kept share per field;
* ``manifest.json`` (written last, :mod:`kit.store.manifest`): the sources' and the parquet files'
  content fingerprints and the fold assignment's. The whole folder is staged and renamed into
  place, so a killed or failing run leaves the previous complete cache or none; every reader
  goes through :func:`kit.store.cache.check_cache`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.env import default_inputs, work_dir
from ..core.files import check_outside, under
from ..core.errors import DataError
from ..core.log import get_logger
from ..core.schema import EXTRA_FOLD, FIELDS, TARGET_COLUMNS, is_soft
from ..core.settings import TokenizeSettings
from ..core.signature import settings_function
from ..data.dedup import dedup_extra
from ..data.ingest import assign_folds, iter_conversations, load_tables
from ..members import get_member_type, resolve_member_preset
from ..ops.backbones import check_max_length
from ..store.cache import CACHE_OUTPUTS, pack_options, staged_cache, write_cache
from ..store.io import check_free, output_lock, recover_staged, write_parquet_parts
from ..store.manifest import input_record

log = get_logger(__name__)


@dataclass
class TokenizeResult:
    """What the tokenize stage wrote: the cache folder, its train table, its test rows' ids and packing counts
    (streamed to ``test.parquet``, never held whole; None when not asked for) and the rows skipped (train) or
    repaired (test), with the reason."""

    out_dir: Path
    train: pd.DataFrame | None
    test: pd.DataFrame | None
    skipped: pd.DataFrame

    def retention_summary(self) -> pd.DataFrame:
        """Mean kept share per field and truncation counts, per split."""
        rows = []
        for split, df in (("train", self.train), ("test", self.test)):
            if df is None or not len(df):
                continue
            if "n_tokens" not in df:  # the lexical member keeps text, not tokens
                rows.append({"split": split, "rows": len(df)})
                continue
            row = {"split": split, "rows": len(df), "mean_tokens": df["n_tokens"].mean()}
            for f in FIELDS:
                share = df[f"{f}_kept"] / df[f"{f}_total"].where(df[f"{f}_total"] > 0)
                row[f"{f}_kept_share"] = share.fillna(1.0).mean()
            row["rows_cut"] = int((df[[f"{f}_kept" for f in FIELDS]].to_numpy()
                                   < df[[f"{f}_total" for f in FIELDS]].to_numpy()).any(axis=1).sum())
            row["rows_turns_dropped"] = int((df["turns_kept"] < df["turns_total"]).sum())
            rows.append(row)
        return pd.DataFrame(rows)


def stream_test(path: Path, encode, desc: str, target: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The test table parsed, packed and written to ``target`` chunk by chunk (:func:`kit.data.ingest.
    iter_conversations`), each chunk let go once written: the table's text is never held whole. Returns
    its rows' ids and packing counts (every numeric column), the repairs made (notes) and the prompts (for
    deduplicating extra rows against them)."""
    notes, prompts = [], []

    def packed():
        for part in iter_conversations(path, labelled=False):
            notes.append(part.notes.assign(source=str(path)))
            prompts.append(part.frame[["id", "prompt"]].copy())  # a copy: a view would keep the chunk's text alive
            table = encode(part.frame, desc)
            table.insert(3, "label", -1)
            table.insert(4, "fold", -1)
            yield table

    counts = write_parquet_parts(packed(), target, keep=lambda t: t[[c for c in t.columns if c == "id" or (
        pd.api.types.is_numeric_dtype(t[c]) and not pd.api.types.is_bool_dtype(t[c]))]].copy())
    return counts, pd.concat(notes, ignore_index=True), pd.concat(prompts, ignore_index=True)


@settings_function(TokenizeSettings)
def tokenize_stage(
        model: str = "minilm",
        train: list[str] | None = None,
        test: str | None = None,
        max_length: int | None = None,
        out: str | None = None,
        n_folds: int = 5,
        seed: int = 42,
        max_rows: int | None = None,
        overwrite: bool = False,
        pack: dict | None = None,
        keep: str | None = None,
        model_dir: str | None = None,
        member: str | None = None,
        extra: Sequence[str] = (),
        dedup_similarity: float = 0.9,
        no_train: bool = False,
        no_test: bool = False,
) -> TokenizeResult:
    """Run stage 1 for one preset (its member type decides the cache's columns).

    Every parameter is a field of :class:`kit.core.settings.TokenizeSettings`: its type and default are in the signature, its
    meaning under Args (generated from the field's help).

    Returns:
        :class:`TokenizeResult`: the cache folder, its train and test tables and the skipped rows.

    Example:
        >>> result = tokenize_stage("lexical", ["data/pandalm/pandalm_kaggle.csv"], "", n_folds=5)  # doctest: +SKIP
        >>> result.retention_summary()                                                              # doctest: +SKIP
    """
    s = TokenizeSettings(**locals())
    train, test, n_folds, seed, max_rows = s.train, s.test, s.n_folds, s.seed, s.max_rows
    extra, dedup_similarity, overwrite = s.extra, s.dedup_similarity, s.overwrite
    defaults = default_inputs()
    train_paths = [Path(p) for p in (defaults["train"] if train is None else train)]
    extra_paths = [Path(p) for p in extra or ()]
    if extra_paths and not train_paths:
        raise DataError("extra training data needs train tables to add it to (--train)")
    test_path = Path(defaults["test"]) if test is None else (Path(test) if test else None)
    preset = resolve_member_preset(s.model, dict(max_length=s.max_length, model_dir=s.model_dir, member=s.member))
    member = get_member_type(preset.member)
    if member.uses_backbone:
        check_max_length(preset)
    out_dir = Path(s.out) if s.out else under(work_dir(), "tokenized", preset.name)
    check_outside(out_dir, [("the backbone folder", preset.model_dir),
                            *(("the table", p) for p in [*train_paths, *extra_paths, test_path] if p)])
    with output_lock(out_dir):  # one writer per cache
        targets = [out_dir / n for n in CACHE_OUTPUTS]
        recover_staged(out_dir, list(CACHE_OUTPUTS))  # what a killed earlier run left
        check_free(targets, overwrite)

        encoder = member.encoder(preset, s.pack)
        if s.pack and encoder.pack_config is None:  # said, not silently dropped
            log.info(f"[kit tokenize] {preset.name}: the {preset.member} member packs no tokens; --pack {s.pack} does not apply")
        with staged_cache(out_dir) as stage:  # swapped in whole at the end; a failure leaves the old cache
            return _fill_cache(stage, out_dir, s, preset, encoder, train_paths, extra_paths, test_path)


def _fill_cache(stage: Path, out_dir: Path, s: TokenizeSettings, preset, encoder, train_paths: list[Path],
                extra_paths: list[Path], test_path: Path | None) -> TokenizeResult:
    """The tokenize stage's work, written into the cache's staging folder ``stage``."""
    skipped, train_df, test_df, test_prompts, removed = [], None, None, None, None
    if test_path:  # first, so a bad test table fails before any training row is packed
        test_df, notes, test_prompts = stream_test(test_path, encoder.encode,
                                                   f"pack test ({preset.name}, {preset.member})", stage / "test.parquet")
        skipped.append(notes.assign(split="test"))
    if train_paths:
        frame, folds, removed = _training_rows(s, train_paths, extra_paths, test_prompts, skipped, out_dir)
        train_df = encoder.encode(frame, f"pack train ({preset.name}, {preset.member})")
        train_df.insert(3, "label", frame["label"].to_numpy())
        train_df.insert(4, "fold", folds)
        target = np.asarray(frame["target"].tolist(), dtype=np.float64)
        for j, column in enumerate(TARGET_COLUMNS):  # the training target: one-hot, or the soft label
            train_df.insert(5 + j, column, target[:, j])
    skipped_df = (pd.concat(skipped, ignore_index=True) if skipped
                  else pd.DataFrame(columns=["row", "id", "column", "problem", "source", "split"]))
    meta = _cache_meta(s, preset, encoder.pack_config, train_paths, extra_paths, test_path, train_df, test_df,
                       skipped_df, removed)
    write_cache(stage, train_df, test_df, skipped_df, removed, meta,
                settings={"preset": preset.name, "member": preset.member, "n_folds": s.n_folds, "seed": s.seed,
                          "max_rows": s.max_rows},
                inputs={**{f"train:{p}": input_record(p) for p in train_paths},
                        **{f"extra:{p}": input_record(p) for p in extra_paths},
                        **({"test": input_record(test_path)} if test_path else {})})
    return TokenizeResult(out_dir, train_df, test_df, skipped_df)


def _training_rows(s: TokenizeSettings, train_paths: list[Path], extra_paths: list[Path], test_prompts,
                   skipped: list, out_dir: Path) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame | None]:
    """(the training rows, their folds, the training-only rows removed as duplicates or None): the usable rows
    of the training tables (``max_rows`` of them) in prompt-grouped folds, then the soft-labelled and extra rows
    (fold -2), deduplicated against every held-out and test prompt. Each table's unusable rows go into
    ``skipped``."""
    n_folds, max_rows, removed = s.n_folds, s.max_rows, None
    conv = load_tables(train_paths, labelled=True)
    if not len(conv.frame):
        worst = conv.skipped.groupby(["column", "problem"]).size().sort_values(ascending=False)
        (column, problem), count = next(iter(worst.items()))
        raise DataError(f"{', '.join(map(str, train_paths))}: none of the {conv.skipped['row'].nunique()} "
                        f"rows is usable (most common: {column}: {problem}, {count} rows): fix the table, "
                        f"or check that it is in the competition's format")
    if max_rows is not None and max_rows < 1:
        raise DataError(f"max_rows={max_rows}: pass a positive number of rows (or none for all)")
    frame = conv.frame.head(max_rows) if max_rows else conv.frame
    skipped.append(conv.skipped.assign(split="train"))
    # soft-labelled rows (a teacher's probabilities) are training-only, like extra rows: no
    # human label to score them against; they are deduplicated with the extra rows below
    soft_rows = frame[frame["target"].map(is_soft)]
    frame = frame[~frame["target"].map(is_soft)].reset_index(drop=True)
    if not len(frame) and n_folds > 1:
        raise DataError(f"{', '.join(map(str, train_paths))}: every usable row has a soft label, so no row can be "
                        f"held out: pass --folds 1 (notebook N_FOLDS = 1) and train with --fold full, or add "
                        f"hard-labelled rows")
    try:
        folds = assign_folds(frame, n_folds, s.seed) if n_folds > 1 else np.zeros(len(frame), dtype=np.int64)
    except ValueError as e:  # too few prompts for the folds asked
        raise DataError(f"{', '.join(map(str, train_paths))}: {e} (folds are grouped by prompt): pass fewer "
                        f"--folds (notebook N_FOLDS), or a table with more prompts") from None
    if extra_paths or len(soft_rows):  # training-only rows: deduplicated against every held-out prompt
        more = load_tables(extra_paths, labelled=True) if extra_paths else None
        if more is not None:
            skipped.append(more.skipped.assign(split="extra"))
            clash = sorted(set(more.frame["id"]) & set(frame["id"]) | set(more.frame["id"]) & set(soft_rows["id"]),
                           key=str)
            if clash:
                raise DataError(f"{', '.join(map(str, extra_paths))}: id(s) {clash[:10]} also in the train tables: "
                                f"give the extra rows their own ids")
        pool = pd.concat([soft_rows, *([more.frame] if more is not None else [])], ignore_index=True)
        kept, removed = dedup_extra(pool, {"train": frame, "test": test_prompts}, s.dedup_similarity)
        log.info(f"[kit] training-only rows (soft-labelled: {len(soft_rows)}, extra: {len(pool) - len(soft_rows)}): "
                 f"{len(removed)} removed as duplicates of train or test prompts (similarity >= {s.dedup_similarity}; "
                 f"see {out_dir / 'dedup_removed.csv'}), {len(kept)} added to every fold's training rows")
        frame = pd.concat([frame, kept], ignore_index=True)
        folds = np.concatenate([folds, np.full(len(kept), EXTRA_FOLD, dtype=np.int64)])
    n_skipped = sum(int(s_["row"].nunique()) for s_ in skipped if len(s_) and s_["split"].iloc[0] != "test")
    if n_skipped:
        log.info(f"[kit] skipped {n_skipped} unusable train row(s); see {out_dir / 'skipped_rows.csv'}")
    return frame, folds, removed


def _cache_meta(s: TokenizeSettings, preset, pack_config, train_paths: list[Path], extra_paths: list[Path],
                test_path: Path | None, train_df, test_df, skipped_df: pd.DataFrame, removed) -> dict:
    """The cache's meta.json: the preset it was packed for (whose max_length is the token budget, recorded once:
    not again in the packing or the manifest), the packing, the sources, the fold settings and the row counts."""
    return {"preset": preset.to_dict(), "pack": pack_options(pack_config.to_dict()) if pack_config else None,
            "train_sources": [str(p) for p in train_paths], "test_source": str(test_path or ""),
            "extra_sources": [str(p) for p in extra_paths],
            "dedup_similarity": s.dedup_similarity if extra_paths else None,
            "extra_rows": {"kept": int((train_df["fold"] == EXTRA_FOLD).sum()) if train_df is not None else 0,
                           "soft_labelled": int(train_df[list(TARGET_COLUMNS)].apply(
                               lambda r: is_soft(r.tolist()), axis=1).sum()) if train_df is not None else 0,
                           **{f"removed_{rule}": int((removed["rule"] == rule).sum()) if removed is not None
                              else 0 for rule in ("exact", "near")}},
            "n_folds": s.n_folds, "seed": s.seed, "max_rows": s.max_rows,
            "rows": {"train": 0 if train_df is None else len(train_df),
                     "test": 0 if test_df is None else len(test_df),
                     "train_skipped": len(skipped_df.query("split != 'test'")[["source", "row"]]
                                          .drop_duplicates()) if len(skipped_df) else 0}}
