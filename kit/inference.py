"""Stage 3 — infer: trained (model, fold) outputs -> three-way probabilities.

Batching (:func:`predict_logits`): rows sorted by length, dynamic padding under a
tokens-per-batch budget; one row of logits per input, in the input order; a batch never
holds more than ``max_tokens`` padded tokens (a single longer row goes alone); results do
not depend on the batching (up to float round-off).

Devices (:func:`predict_sharded`): rows dealt across devices — by default every visible
GPU (cuda:0 and cuda:1 on Kaggle's two T4s) — one model replica per device, each in its
own thread; with no GPU, N CPU workers sharing one replica.

Swap TTA (:func:`swap_average`), a runtime projection against a budget
(:class:`RuntimeProjection`), and :func:`infer_stage` that writes one predictions file
per model and split; :func:`infer_isolated` runs it in a fresh process.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .io import read_csv_keeping_ids, read_parquet_keeping_ids


def length_sorted_batches(lengths: Sequence[int], max_tokens: int, max_batch: int = 256) -> list[np.ndarray]:
    """Index batches, longest rows first (a too-large batch fails at once, not after hours),
    each with ``len(batch) * longest <= max_tokens`` (or a single row)."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = lengths[order[start]]
        size = max(1, min(max_batch, max_tokens // max(1, longest)))
        batches.append(order[start:start + size])
        start += size
    return batches


def pad_batch(rows: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding to the batch's longest row: (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(np.asarray(r, dtype=np.int64))
        mask[i, :len(r)] = 1
    return ids, mask


@torch.inference_mode()
def predict_logits(model, input_ids: Sequence[np.ndarray], pad_id: int, *, device=None,
                   max_tokens: int = 8192, max_batch: int = 256, progress: bool = True,
                   desc: str = "predict", projection=None) -> np.ndarray:
    """Logits (n, num_labels) as float64, in the order of ``input_ids``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = length_sorted_batches([len(r) for r in input_ids], max_tokens, max_batch)
    out = np.zeros((len(input_ids), model.config.num_labels), dtype=np.float64)
    autocast = device.type == "cuda"
    dtype = torch.bfloat16 if autocast and torch.cuda.is_bf16_supported() else torch.float16
    with tqdm(total=len(input_ids), desc=desc, unit="row", disable=not progress) as bar:
        for idx in batches:
            ids, mask = pad_batch([input_ids[i] for i in idx], pad_id)
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out[idx] = logits.float().cpu().numpy()
            bar.update(len(idx))
            if projection is not None:
                projection.update(int(mask.sum()))
    return out


# -- stage 3 ------------------------------------------------------------------------------
PROB_COLUMNS = ["p_a", "p_b", "p_tie"]
# padded tokens per batch: GPUs want big batches; on CPU small ones run faster
# (SmolLM2, 2 cores: 2.56 pairs/s at 2048 tokens, 2.42 at 4096, 1.88 at 8192)
DEFAULT_MAX_TOKENS = {"cuda": 16384, "cpu": 2048}


class RuntimeProjection:
    """Projects a whole run's wall time from the padded tokens done so far.

    Rows go longest first, so the first batches are the slowest per row: projecting by
    tokens (not rows) keeps the estimate honest, and it errs on the long side (attention
    costs more per token in long rows).
    Thread-safe: every device's worker reports into the same projection.
    """

    def __init__(self, total_tokens: int, budget_hours: float | None, warmup_share: float = 0.02,
                 label: str = ""):
        self.total, self.budget, self.warmup, self.label = total_tokens, budget_hours, warmup_share, label
        self.done, self.start, self.projected_s = 0, time.time(), None
        self._lock = threading.Lock()

    def update(self, tokens: int) -> None:
        with self._lock:
            self.done += tokens
            if self.projected_s is None and self.done >= max(1, self.warmup * self.total):
                elapsed = time.time() - self.start
                self.projected_s = elapsed * self.total / self.done
                msg = (f"[kit infer] {self.label}projected run time {self.projected_s / 3600:.2f} h "
                       f"({self.done}/{self.total} tokens in {elapsed:.1f} s)")
                print(msg, flush=True)
                if self.budget is not None and self.projected_s > self.budget * 3600:
                    warnings.warn(f"{self.label}projected run time {self.projected_s / 3600:.2f} h exceeds "
                                  f"the budget of {self.budget} h: lower max_length or max_tokens, "
                                  f"drop swap TTA, or add devices", RuntimeWarning, stacklevel=2)


def visible_devices() -> list[str]:
    """Every visible GPU (cuda:0, cuda:1 on Kaggle's two T4s), else ['cpu']."""
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def shard_rows(lengths: Sequence[int], n_shards: int) -> list[np.ndarray]:
    """Split row indices into n shards of near-equal work: rows sorted by length and dealt
    round-robin, so every shard gets long and short rows alike."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [np.sort(order[k::n_shards]) for k in range(n_shards)]


def check_devices(devices: Sequence[str]) -> None:
    """A ValueError naming the device when one is not there (CUDA absent, index too high)."""
    for dev in devices:
        if dev == "cpu":
            continue
        if not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ValueError(f"device {dev!r}: use cpu or cuda[:N] (--devices, notebook DEVICES)")
        count = torch.cuda.device_count()
        index = int(dev.split(":")[1]) if ":" in dev else 0
        if index >= count:
            raise ValueError(f"device {dev!r} is not available ({count} CUDA device(s) visible): pass "
                             f"--devices cpu (notebook DEVICES = ['cpu']) or leave it unset for every visible "
                             f"device")


def predict_sharded(replicas: Sequence, devices: Sequence[str], frame: pd.DataFrame, score, pad_id: int,
                    *, lengths: Sequence[int], max_tokens: int, projection: RuntimeProjection | None = None,
                    desc: str = "predict", swap: bool = False) -> np.ndarray:
    """Logits for all rows of `frame`: shard k is scored by ``score(replicas[k], rows, pad_id, ...)``
    (a head's :attr:`kit.heads.Head.score`) on devices[k], in its own thread."""
    shards = shard_rows(lengths, len(replicas))
    out = np.zeros((len(frame), 3), dtype=np.float64)
    errors = []

    def work(k):
        try:
            idx = shards[k]
            out[idx] = score(replicas[k], frame.iloc[idx], pad_id, swap=swap, device=devices[k],
                             max_tokens=max_tokens, progress=k == 0, projection=projection,
                             desc=f"{desc} [{devices[k]}]")
        except BaseException as err:  # surfaced in the caller's thread
            errors.append(err)

    if len(replicas) == 1:
        work(0)
    else:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(replicas))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return out


def swap_average(p_direct: np.ndarray, p_swapped: np.ndarray) -> tuple[np.ndarray, float]:
    """Swap TTA: the (B, A) pass's A/B columns exchanged, averaged with the (A, B) pass.
    Also returns the flip rate: share of rows whose most likely class differs between passes."""
    back = p_swapped[:, [1, 0, 2]]
    flip = float((p_direct.argmax(1) != back.argmax(1)).mean()) if len(p_direct) else 0.0
    return (p_direct + back) / 2, flip


@dataclass
class InferResult:
    path: Path
    predictions: pd.DataFrame
    flip_rate: float | None
    projected_hours: float | None
    seconds: float


def _load_replicas(model_dir: Path, preset, devices: Sequence[str], load):
    replicas, tokenizer = [], None
    cpu_model = None
    for dev in devices:
        if dev == "cpu":  # CPU workers share one replica (read-only forward passes)
            if cpu_model is None:
                cpu_model, tokenizer = load(model_dir, preset)
            replicas.append(cpu_model)
        else:
            model, tokenizer = load(model_dir, preset, device_map={"": dev})
            if not preset.load_in_4bit:
                model.to(dev)
            replicas.append(model)
    return replicas, tokenizer


def infer_stage(model_dir: str | Path, split: str = "test", *, tokenized: str | Path | None = None,
                out: str | Path | None = None, devices: Sequence[str] | None = None, cpu_workers: int = 1,
                tta: bool = True, max_tokens: int | None = None, budget_hours: float | None = 9.0,
                overwrite: bool = False, base_model_dir: str | None = None,
                reuse_train_scores: bool = True) -> InferResult:
    """Stage 3 for one trained (model, fold) output.

    split="test": every row of the tokenized test table; split="oof": the rows of the
    fold the model held out. Writes ``<model_dir>/predictions/<split>.csv`` (id, p_a, p_b,
    p_tie [, label]; with TTA also the direct and swapped passes' columns).

    For split="oof" with a single pass (a swap-equivariant head or TTA off), the train
    stage already scored exactly these rows with exactly these weights (``oof.csv``, written
    with the adapter): those scores are taken instead of scoring again, when the ids match
    the held-out fold one for one and nothing (tokenized table, base model) is overridden.
    ``reuse_train_scores=False`` always scores.
    """
    from dataclasses import replace

    from .io import check_free, manifest_path, write_csv, write_json
    from .presets import Preset

    from .manifest import input_record, stage_manifest
    from .tokenization import check_cache
    from .training import check_trained

    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{model_dir} is not a train-stage output (no config.json)")
    model_manifest = check_trained(model_dir)
    cfg = json.loads(cfg_path.read_text())
    preset = Preset.from_dict(cfg["preset"])  # exactly what the model was trained with
    if base_model_dir:
        preset = replace(preset, model_dir=base_model_dir)
    tokenized = Path(tokenized or cfg["tokenized"])
    if split == "test":
        table = tokenized / "test.parquet"
    elif split == "oof":
        table = tokenized / "train.parquet"
        if cfg["fold"] is None:
            raise ValueError(f"{model_dir} was trained on every row: it has no out-of-fold split")
    else:
        raise ValueError(f"split must be 'test' or 'oof', got {split!r}")
    if not table.exists():
        raise FileNotFoundError(f"no tokenized {split} data at {table}; run `python -m kit tokenize` first")
    out = Path(out) if out else model_dir / "predictions" / f"{split}.csv"
    check_free([out], overwrite)
    cache_manifest = check_cache(tokenized, split)
    # the head check comes before the fold check: a cache of the other head is wrong whatever its folds
    meta_path = tokenized / "meta.json"
    if meta_path.exists() and preset.kind != "lexical":
        meta = json.loads(meta_path.read_text())
        packed_head = meta.get("preset", {}).get("head", "joint")
        if packed_head != preset.head:
            raise ValueError(f"{tokenized} was tokenized for the {packed_head!r} head, but {model_dir} was trained "
                             f"with the {preset.head!r} head: re-run the tokenize stage with --head {preset.head} "
                             f"(notebook HEAD = {preset.head!r})")
        packed_len = meta["pack"]["max_length"]
        if packed_len != preset.max_length:
            warnings.warn(f"{tokenized} was packed at max_length={packed_len}, the model was trained at "
                          f"{preset.max_length}", RuntimeWarning, stacklevel=2)
    frame = read_parquet_keeping_ids(table)
    if split == "oof":
        _check_same_folds(model_dir, cfg, tokenized, model_manifest, cache_manifest)
        frame = frame[frame["fold"] == cfg["fold"]]

    started = time.time()
    projection = None
    reused = _train_stage_scores(model_dir, frame, cfg, preset, split, tta, tokenized,
                                 reuse_train_scores and not base_model_dir)
    if reused is not None:
        probs, tta = {"direct": reused}, False
        print(f"[kit infer] {model_dir / 'oof.csv'}: the train stage's scores of these held-out rows, reused",
              flush=True)
    elif preset.kind == "lexical":  # a scikit-learn member: no devices, no batches
        from .lexical import LexicalModel
        probs = {"direct": LexicalModel.load(model_dir / "adapter").predict_proba(frame)}
        tta = False
    else:
        from .heads import get_head
        head = get_head(preset.head)
        missing = [c for c in head.id_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{table} lacks {missing}: it was not tokenized for the {head.name!r} head the model "
                             f"was trained with; re-run the tokenize stage with --head {head.name} "
                             f"(notebook HEAD = {head.name!r})")
        tta = tta and head.uses_tta  # a swap-equivariant head gains nothing from a swapped pass
        devices = list(devices) if devices else visible_devices()
        check_devices(devices)
        if devices == ["cpu"] and cpu_workers > 1:
            devices = ["cpu"] * cpu_workers
        max_tokens = max_tokens or DEFAULT_MAX_TOKENS["cuda" if devices[0].startswith("cuda") else "cpu"]
        replicas, tokenizer = _load_replicas(model_dir, preset, devices, head.load)
        # the work per row: the direct pass's sequence (joint), or both sides (pairwise)
        scored = head.id_columns[:1] if head.uses_tta else head.id_columns
        lengths = sum(frame[c].map(len).to_numpy() for c in scored)
        passes = ["direct"] + (["swap"] if tta else [])
        projection = RuntimeProjection(int(sum(lengths)) * len(passes), budget_hours,
                                       label=f"{preset.name} {split}: ")
        from .evaluation import softmax
        probs = {}
        for name in passes:
            logits = predict_sharded(replicas, devices, frame.reset_index(drop=True), head.score,
                                     tokenizer.pad_token_id, lengths=lengths, max_tokens=max_tokens,
                                     projection=projection, desc=f"{preset.name} {split} {name}",
                                     swap=name == "swap")
            probs[name] = softmax(logits)
    seconds = time.time() - started
    passes = list(probs)

    result = pd.DataFrame({"id": frame["id"].to_numpy()})
    flip = None
    if tta:
        final, flip = swap_average(probs["direct"], probs["swap"])
        for tag, arr in (("direct", probs["direct"]), ("swap", probs["swap"][:, [1, 0, 2]])):
            for j, c in enumerate(PROB_COLUMNS):
                result[f"{c}_{tag}"] = arr[:, j]
    else:
        final = probs["direct"]
    for j, c in enumerate(PROB_COLUMNS):
        result[c] = final[:, j]
    if split == "oof":
        result["label"] = frame["label"].to_numpy()
    result = result[["id", *PROB_COLUMNS, *[c for c in result.columns if c not in ("id", *PROB_COLUMNS)]]]
    write_csv(result, out, overwrite)
    # which training run, adapter and table made these predictions (the blend refuses predictions
    # of an earlier run, or changed since); written after the predictions: a kill in between
    # leaves an old or no manifest, whose fingerprint does not match
    test_source = cache_manifest.get("inputs", {}).get("test", {}).get("sha256") if split == "test" else None
    write_json(stage_manifest(
        "infer", settings={"split": split, "tta": bool(tta), "rows": len(result)},
        inputs={"model": {"path": str(model_dir), "run_id": cfg.get("run_id"),
                          "adapter": model_manifest["outputs"]["adapter"]},
                "table": {**input_record(table), "test_source": test_source}},
        outputs={"predictions": out}, run_id=cfg.get("run_id"), model_dir=str(model_dir), split=split,
        tokenized=str(tokenized)), manifest_path(out), True)
    print(f"[kit infer] {len(result)} rows, {seconds:.1f} s ({len(result) * len(passes) / max(seconds, 1e-9):.2f} "
          f"passes/s){f', flip rate {flip:.3f}' if flip is not None else ''} -> {out}", flush=True)
    projected = None if projection is None or projection.projected_s is None else projection.projected_s / 3600
    return InferResult(out, result, flip, projected, seconds)


FOLD_KEYS = ("train_sources", "n_folds", "seed", "max_rows", "extra_sources", "dedup_similarity")


def _check_same_folds(model_dir: Path, cfg: dict, tokenized: Path, model_manifest: dict,
                      cache_manifest: dict) -> None:
    """Out-of-fold rows are only held out if the cache puts the same rows (ids, labels) in the
    same folds as the cache the model was trained on: the fold fingerprints must agree; the
    settings that differ are named."""
    trained = cfg.get("tokenization") or {}
    now = json.loads((tokenized / "meta.json").read_text())
    differ = [k for k in FOLD_KEYS if k in trained and now.get(k) != trained.get(k)]
    then_folds = model_manifest.get("inputs", {}).get("cache", {}).get("folds")
    if differ or then_folds != cache_manifest.get("folds"):
        named = (", ".join(f"{k}: {trained.get(k)!r} then, {now.get(k)!r} now" for k in differ)
                 or "same settings, other rows or labels: a remade or edited source table")
        raise ValueError(f"{tokenized} splits its rows differently from when {model_dir} was trained ({named}): its "
                         f"'held-out' fold would hold training rows. Retrain on this cache, or pass --tokenized with "
                         f"the cache the model was trained on")


def _train_stage_scores(model_dir: Path, frame: pd.DataFrame, cfg: dict, preset, split: str, tta: bool,
                        tokenized: Path, allowed: bool) -> np.ndarray | None:
    """The train stage's probabilities of ``frame``'s rows, if they are exactly what scoring
    would give (see :func:`infer_stage`); None otherwise."""
    if not allowed or split != "oof" or Path(cfg["tokenized"]).resolve() != tokenized.resolve():
        return None
    if preset.kind != "lexical":
        from .heads import get_head
        if tta and get_head(preset.head).uses_tta:
            return None  # the train stage scored the direct pass only
    path = model_dir / "oof.csv"
    if not path.exists():
        return None
    scored = read_csv_keeping_ids(path)
    if scored["id"].tolist() != frame["id"].tolist():  # both text (read_parquet_keeping_ids)
        return None  # e.g. the train stage scored a capped share of the fold
    return scored[PROB_COLUMNS].to_numpy(dtype=np.float64)


def infer_isolated(model_dir: str | Path, split: str = "test", *, tokenized=None, out=None,
                   devices: Sequence[str] | None = None, cpu_workers: int = 1, tta: bool = True,
                   max_tokens: int | None = None, budget_hours: float | None = 9.0,
                   overwrite: bool = False, rescore_oof: bool = False, base_model_dir: str | None = None) -> Path:
    """:func:`infer_stage` in a fresh Python process: all its GPU memory is returned when
    it exits, so the next model loads into empty devices."""
    args = [sys.executable, "-m", "kit", "infer", "--model-dir", str(model_dir), "--split", split,
            "--cpu-workers", str(cpu_workers)]
    for flag, value in (("--tokenized", tokenized), ("--out", out), ("--max-tokens", max_tokens),
                        ("--budget-hours", budget_hours), ("--base-model-dir", base_model_dir),
                        ("--devices", ",".join(devices) if devices else None)):
        if value is not None:
            args += [flag, str(value)]
    args += ([] if tta else ["--no-tta"]) + (["--overwrite"] if overwrite else []) \
        + (["--rescore-oof"] if rescore_oof else [])
    subprocess.run(args, check=True, env=kit_importable_env())
    return Path(out) if out else Path(model_dir) / "predictions" / f"{split}.csv"


def kit_importable_env() -> dict:
    """This process's environment with the folder that holds ``kit`` first on PYTHONPATH: a
    notebook that found the kit through its own ``sys.path`` (an attached dataset, a clone
    beside it) starts children that find it too."""
    import os

    here = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def trained_outputs(root: str | Path | None = None, models: Sequence[str] | None = None) -> list[Path]:
    """Every finished train-stage output under <work>/models: a folder with adapter/, config.json
    and metrics.json (the train stage writes it last). A folder without metrics.json is a run
    that did not finish: it is named on the console and left out."""
    from .env import work_dir

    root = Path(root) if root else work_dir() / "models"
    found = sorted(p.parent.parent for p in root.glob("*/*/adapter/adapter_config.json")
                   if not p.parent.parent.name.startswith("."))  # staging folders of a run in progress
    found = [p for p in found if (p / "config.json").exists() and (models is None or p.parent.name in models)]
    return [p for p in found if finished_training(p)]


def finished_training(folder: Path) -> bool:
    """True when the train stage finished in ``folder`` (a complete manifest.json, written last);
    otherwise says so on the console."""
    from .manifest import MANIFEST, StaleOutput, read_manifest

    try:
        read_manifest(Path(folder) / MANIFEST, str(folder), "")
        return True
    except StaleOutput:
        print(f"[kit] {folder}: no complete manifest.json, a training run that did not finish (or made by an older "
              f"kit): skipped (rerun the train stage there)", flush=True)
        return False


def flip_rate_of(predictions: pd.DataFrame) -> float | None:
    """Flip rate from a predictions table written with TTA (None without the swap pass)."""
    if "p_a_swap" not in predictions:
        return None
    direct = predictions[[f"{c}_direct" for c in PROB_COLUMNS]].to_numpy()
    swapped = predictions[[f"{c}_swap" for c in PROB_COLUMNS]].to_numpy()
    return float((direct.argmax(1) != swapped.argmax(1)).mean())


def infer_many(model_dirs: Sequence[str | Path], splits: Sequence[str] = ("test",), *,
               isolate: bool | None = None, **kwargs) -> pd.DataFrame:
    """Stage 3 for several trained outputs and splits; one summary row per predictions file.

    ``isolate=None`` runs each model in its own process when GPUs are in use (a second
    model in the same process often runs out of GPU memory), in-process on CPU.
    """
    if isolate is None:
        isolate = torch.cuda.is_available()
    rows = []
    for model_dir in model_dirs:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        for split in splits:
            if split == "oof" and cfg["fold"] is None:
                continue
            started = time.time()
            if isolate:
                path = infer_isolated(model_dir, split, **kwargs)
            else:
                path = infer_stage(model_dir, split, **kwargs).path
            preds = read_csv_keeping_ids(path)
            rows.append({"model": cfg["preset"]["name"], "fold": cfg["fold"], "split": split,
                         "rows": len(preds), "flip_rate": flip_rate_of(preds),
                         "seconds": time.time() - started, "path": str(path)})
    return pd.DataFrame(rows)
