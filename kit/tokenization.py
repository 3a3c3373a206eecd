"""Stage 1 — tokenize: read train/test tables, pack them for one model preset, cache.

Output folder (default ``<work>/tokenized/<preset>``):

* ``train.parquet`` / ``test.parquet``: id, the head's token-id columns (joint head:
  input_ids and input_ids_swap, the same row packed with A and B exchanged, for swap
  augmentation and swap TTA; pairwise head: side_a_ids and side_b_ids, each side packed
  on its own), label, fold, n_tokens and the retention columns of :mod:`kit.packing`.
  The ``lexical`` member keeps the parsed text turns instead (prompt, response_a,
  response_b) — same ids, labels and folds;
* ``skipped_rows.csv``: train rows not used and test rows repaired (row, id, column,
  problem, source);
* ``meta.json``: preset (with its head), packing configuration, sources and counts;
* ``retention.png``: packed lengths and kept share per field;
* ``manifest.json`` (written last, :mod:`kit.manifest`): the sources' and the parquet files'
  content fingerprints and the fold assignment's. The whole folder is staged and renamed into
  place, so a killed or failing run leaves the previous complete cache or none; every reader
  goes through :func:`check_cache`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .data import Conversations, DataError, assign_folds, is_soft, load_conversations
from .env import default_inputs, work_dir
from .io import check_free, recover_staged, staged_folder, write_csv, write_json, write_parquet
from .manifest import MANIFEST, check_output, folds_fingerprint, input_record, read_manifest, stage_manifest
from .packing import FIELDS, PackConfig, Packer
from .plots import plot_retention
from .heads import get_head
from .presets import check_max_length, load_tokenizer, resolve_preset


@dataclass
class TokenizeResult:
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


def load_tables(paths: Sequence[str | Path], labelled: bool) -> Conversations:
    """Parse and concatenate several tables; ids must be unique across all of them."""
    parts = [load_conversations(p, labelled=labelled) for p in paths]
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    dup = frame["id"][frame["id"].duplicated(keep=False)]
    if len(dup):
        raise DataError(f"ids repeated across {[str(p) for p in paths]}: {sorted(set(dup.tolist()), key=str)[:20]}")
    def report(attr):
        return pd.concat([getattr(p, attr).assign(source=str(path)) for p, path in zip(parts, paths)],
                         ignore_index=True)
    return Conversations(frame, report("skipped"), report("notes"))


def encoded_rows(packer: Packer, frame: pd.DataFrame, desc: str = "pack", chunk: int = 256):
    """(id, prompt turn ids, response A turn ids, response B turn ids) per row, in order; one
    (parallel, Rust-side) tokenizer call per chunk of rows, with a progress bar."""
    with tqdm(total=len(frame), desc=desc, unit="row") as bar:
        for start in range(0, len(frame), chunk):
            part = frame.iloc[start:start + chunk]
            texts, spans = [], []
            for turns in zip(part["prompt"], part["response_a"], part["response_b"]):
                spans.append([])
                for field_turns in turns:
                    spans[-1].append((len(texts), len(texts) + len(field_turns)))
                    texts.extend(field_turns)
            ids = packer.encode_many(texts)
            for rid, span in zip(part["id"], spans):
                yield (rid, *(ids[s:e] for s, e in span))
            bar.update(len(part))


def pack_frame(packer: Packer, frame: pd.DataFrame, desc: str = "pack", chunk: int = 256) -> pd.DataFrame:
    """Pack every row in both orders (A,B) and (B,A) (the joint head's cache)."""
    records = []
    for rid, p, a, b in encoded_rows(packer, frame, desc, chunk):
        packed = packer.pack_ids(p, a, b)
        swapped = packer.pack_ids(p, b, a)
        records.append({"id": rid, "input_ids": np.asarray(packed.input_ids, dtype=np.int32),
                        "input_ids_swap": np.asarray(swapped.input_ids, dtype=np.int32), **packed.retention})
    return pd.DataFrame(records)


TARGET_COLUMNS = ("target_a", "target_b", "target_tie")
EXTRA_FOLD = -2  # the fold of extra rows: in every fold's training rows, never held out
CACHE_FILES = {"train": "train.parquet", "test": "test.parquet", "oof": "train.parquet"}


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


def tokenize_stage(model: str = "minilm", train: Sequence[str | Path] | None = None,
                   test: str | Path | None = None, *, max_length: int | None = None,
                   out: str | Path | None = None, n_folds: int = 5, seed: int = 42,
                   max_rows: int | None = None, overwrite: bool = False,
                   pack: dict | None = None, model_dir: str | None = None,
                   head: str | None = None, extra: Sequence[str | Path] = (),
                   dedup_similarity: float = 0.9) -> TokenizeResult:
    """Run stage 1. ``train``/``test`` default to this environment's inputs
    (:func:`kit.env.default_inputs`); pass ``train=[]`` or ``test=""`` to skip one.
    ``head`` (default: the preset's) decides the packing and is recorded in meta.json.
    ``extra``: more labelled tables (any format :func:`kit.data.read_table` reads), added to every
    fold's training rows (fold -1 never holds them: their ``fold`` is ``EXTRA_FOLD``) after
    :func:`kit.dedup.dedup_extra` removed those whose prompt is a train or test prompt
    (``dedup_similarity``); the removed ids go to ``dedup_removed.csv``."""
    defaults = default_inputs()
    train_paths = [Path(p) for p in (defaults["train"] if train is None else train)]
    extra_paths = [Path(p) for p in extra or ()]
    if extra_paths and not train_paths:
        raise DataError("extra training data needs train tables to add it to (--train)")
    test_path = defaults["test"] if test is None else (Path(test) if test else None)
    preset = resolve_preset(model, max_length=max_length, model_dir=model_dir, head=head)
    lexical = preset.kind == "lexical"
    if lexical:  # no backbone: neither a head nor a token budget applies
        preset = replace(preset, head="lexical")
    else:
        head_spec = get_head(preset.head)
        check_max_length(preset)
    out_dir = Path(out) if out else work_dir() / "tokenized" / preset.name
    targets = [out_dir / n for n in ("train.parquet", "test.parquet", "skipped_rows.csv", "meta.json",
                                     "retention.png", "dedup_removed.csv", MANIFEST)]
    recover_staged(out_dir, [t.name for t in targets])  # what a killed earlier run left
    check_free(targets, overwrite)

    pack_config = None if lexical else replace(PackConfig(max_length=preset.max_length), **(pack or {}))
    if lexical:
        def encode(frame, desc):
            return frame[["id", "prompt", "response_a", "response_b"]].reset_index(drop=True)
    else:
        packer = Packer(load_tokenizer(preset), pack_config, side=head_spec.side_packing)

        def encode(frame, desc):
            return head_spec.pack(packer, frame, desc)
    skipped, train_df, test_df, test_conv, removed = [], None, None, None, None
    if test_path:
        test_conv = load_tables([test_path], labelled=False)
        skipped.append(test_conv.notes.assign(split="test"))
    if train_paths:
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
            folds = assign_folds(frame, n_folds, seed) if n_folds > 1 else np.zeros(len(frame), dtype=np.int64)
        except ValueError as e:  # too few prompts for the folds asked
            raise DataError(f"{', '.join(map(str, train_paths))}: {e} (folds are grouped by prompt): pass fewer "
                            f"--folds (notebook N_FOLDS), or a table with more prompts") from None
        if extra_paths or len(soft_rows):  # training-only rows: deduplicated against every held-out prompt
            from .dedup import dedup_extra

            more = load_tables(extra_paths, labelled=True) if extra_paths else None
            if more is not None:
                skipped.append(more.skipped.assign(split="extra"))
                clash = sorted(set(more.frame["id"]) & set(frame["id"]) | set(more.frame["id"]) & set(soft_rows["id"]),
                               key=str)
                if clash:
                    raise DataError(f"{', '.join(map(str, extra_paths))}: id(s) {clash[:10]} also in the train tables: "
                                    f"give the extra rows their own ids")
            pool = pd.concat([soft_rows, *([more.frame] if more is not None else [])], ignore_index=True)
            kept, removed = dedup_extra(pool, {"train": frame, "test": test_conv.frame if test_conv else None},
                                        dedup_similarity)
            print(f"[kit] training-only rows (soft-labelled: {len(soft_rows)}, extra: {len(pool) - len(soft_rows)}): "
                  f"{len(removed)} removed as duplicates of train or test prompts (similarity >= {dedup_similarity}; "
                  f"see {out_dir / 'dedup_removed.csv'}), {len(kept)} added to every fold's training rows", flush=True)
            frame = pd.concat([frame, kept], ignore_index=True)
            folds = np.concatenate([folds, np.full(len(kept), EXTRA_FOLD, dtype=np.int64)])
        n_skipped = sum(int(s_["row"].nunique()) for s_ in skipped if len(s_) and s_["split"].iloc[0] != "test")
        if n_skipped:
            print(f"[kit] skipped {n_skipped} unusable train row(s); see {out_dir / 'skipped_rows.csv'}", flush=True)
        train_df = encode(frame, f"pack train ({preset.name}, {preset.head})")
        train_df.insert(3, "label", frame["label"].to_numpy())
        train_df.insert(4, "fold", folds)
        target = np.asarray(frame["target"].tolist(), dtype=np.float64)
        for j, column in enumerate(TARGET_COLUMNS):  # the training target: one-hot, or the soft label
            train_df.insert(5 + j, column, target[:, j])
    if test_conv is not None:
        test_df = encode(test_conv.frame, f"pack test ({preset.name}, {preset.head})")
        test_df.insert(3, "label", -1)
        test_df.insert(4, "fold", -1)

    skipped_df = (pd.concat(skipped, ignore_index=True) if skipped
                  else pd.DataFrame(columns=["row", "id", "column", "problem", "source", "split"]))
    # stage-atomic: every file is written into a staging folder that replaces out_dir at the end
    with staged_folder(out_dir, [t.name for t in targets]) as stage:
        if train_df is not None:
            write_parquet(train_df, stage / "train.parquet")
        if test_df is not None:
            write_parquet(test_df, stage / "test.parquet")
        write_csv(skipped_df, stage / "skipped_rows.csv")
        if removed is not None:
            write_csv(removed, stage / "dedup_removed.csv")
        write_json({"preset": preset.to_dict(), "pack": pack_config.to_dict() if pack_config else None,
                    "train_sources": [str(p) for p in train_paths], "test_source": str(test_path or ""),
                    "extra_sources": [str(p) for p in extra_paths],
                    "dedup_similarity": dedup_similarity if extra_paths else None,
                    "extra_rows": {"kept": int((train_df["fold"] == EXTRA_FOLD).sum()) if train_df is not None else 0,
                                   "soft_labelled": int(train_df[list(TARGET_COLUMNS)].apply(
                                       lambda r: is_soft(r.tolist()), axis=1).sum()) if train_df is not None else 0,
                                   **{f"removed_{rule}": int((removed["rule"] == rule).sum()) if removed is not None
                                      else 0 for rule in ("exact", "near")}},
                    "n_folds": n_folds, "seed": seed, "max_rows": max_rows,
                    "rows": {"train": 0 if train_df is None else len(train_df),
                             "test": 0 if test_df is None else len(test_df),
                             "train_skipped": len(skipped_df.query("split != 'test'")[["source", "row"]]
                                                  .drop_duplicates()) if len(skipped_df) else 0}},
                   stage / "meta.json")
        shown = pd.concat([d for d in (train_df, test_df) if d is not None], ignore_index=True)
        if len(shown) and not lexical:
            plot_retention(shown, pack_config.max_length, stage / "retention.png",
                           title=f"{preset.name}: {len(shown)} rows packed")
        written = {n: stage / n for n in CACHE_FILES.values() if (stage / n).exists()}
        write_json(stage_manifest(
            "tokenize", settings={"preset": preset.name, "head": preset.head, "max_length": preset.max_length,
                                  "n_folds": n_folds, "seed": seed, "max_rows": max_rows},
            inputs={**{f"train:{p}": input_record(p) for p in train_paths},
                    **{f"extra:{p}": input_record(p) for p in extra_paths},
                    **({"test": input_record(test_path)} if test_path else {})},
            outputs=written, folds=folds_fingerprint(train_df) if train_df is not None else None),
            stage / MANIFEST)  # last: the cache is complete
    return TokenizeResult(out_dir, train_df, test_df, skipped_df)
