"""Inference for several trained outputs: each model in its own process where GPUs are used.

:func:`infer_isolated` runs :func:`kit.stages.infer.infer_stage` in a fresh (spawned) interpreter, so
all of a model's GPU memory is returned when it exits and the next model loads into empty devices;
:func:`infer_many` scores several models and splits (notebook 03's driver, given one InferSettings for every
model; not in ``kit.__all__``: from Python, call :func:`kit.stages.infer.infer_stage` per model), keeping
predictions a model's current run already made from the same table.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..core.errors import DeadlineReached, KitError
from ..core.log import get_logger, logger, show_progress
from ..core.settings import InferSettings
from ..core.signature import settings_function
from ..store.io import read_csv_keeping_ids
from ..store.models import read_model_config
from ..store.predictions import flip_rate_of, is_current
from .infer import infer_stage

log = get_logger(__name__)
DEADLINE_EXIT = 3  # the child's exit status when it stopped at its deadline (a failure exits 2)


@settings_function(InferSettings)
def infer_isolated(
        trained: str | None = None,
        split: str = "test",
        tokenized: str | None = None,
        out: str | None = None,
        devices: list[str] | None = None,
        cpu_workers: int = 1,
        tta: bool = True,
        max_tokens: int | None = None,
        budget_hours: float | None = 9.0,
        overwrite: bool = False,
        model_dir: str | None = None,
        quantization: str | None = None,
        reuse_train_scores: bool = True,
        ids: list[str] | None = None,
        deadline: float | None = None,
) -> Path:
    """:func:`infer_stage` in a fresh (spawned) Python process: all its GPU memory is returned when
    it exits, so the next model loads into empty devices. The child runs the same function with the
    same parameters; its progress and its one-line error go to this process's console.

    Returns:
        Path: the predictions file written.

    Raises:
        KitError: the child failed (its error line is printed above).
    """
    settings = InferSettings(**locals())
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no CUDA state is inherited
    child = context.Process(target=_infer_in_child, args=(settings.to_dict(), logger.getEffectiveLevel()), daemon=False)
    child.start()
    # a deadline is kept from here too: a child still loading or scoring when it passes is stopped
    child.join(None if deadline is None else max(0.0, deadline - time.time()))
    if child.is_alive():
        child.terminate()
        child.join()
        raise DeadlineReached(f"kit infer for {trained} ({split}) was still running at the deadline: stopped")
    if child.exitcode == DEADLINE_EXIT:
        raise DeadlineReached(f"kit infer for {trained} ({split}) stopped at the deadline (see above)")
    if child.exitcode:
        raise KitError(f"kit infer for {trained} ({split}) failed in its own process (exit status "
                       f"{child.exitcode}; its error is printed above)")
    return Path(out) if out else Path(trained) / "predictions" / f"{split}.csv"


def _infer_in_child(settings: dict, level: int) -> None:
    """The spawned child of :func:`infer_isolated`: the stage, its errors as one line and an exit status.
    Spawning hands the child its parent's ``sys.path``; the PYTHONPATH of now goes first, as for any
    fresh interpreter (a plug-in member type installed there is found through its entry point)."""
    sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    show_progress(level)
    try:
        infer_stage(**settings)
    except DeadlineReached as err:
        sys.stderr.write(f"stopped: {' '.join(str(err).split())}\n")
        sys.stderr.flush()
        sys.exit(DEADLINE_EXIT)
    except (ValueError, OSError, RuntimeError) as err:  # KitError is a ValueError
        sys.stderr.write(f"error: {' '.join(str(err).split())}\n")
        sys.stderr.flush()
        sys.exit(2)


def infer_many(model_dirs: Sequence[str | Path], splits: Sequence[str] = ("test",), isolate: bool | None = None,
               settings: InferSettings | None = None) -> pd.DataFrame:
    """Stage 3 for several trained outputs and splits; one summary row per predictions file.

    ``isolate=None`` runs each model in its own process when GPUs are in use (a second
    model in the same process often runs out of GPU memory), in-process on CPU. ``settings``
    (:class:`kit.core.settings.InferSettings`; its ``trained`` and ``split`` are ignored) applies
    to every model. Predictions that this model's current run already made from the same table are
    kept (a rerun after training another fold scores only what is new); ``overwrite=True`` scores
    everything again.

    Returns:
        DataFrame: model, fold, split, rows, flip_rate, kept, seconds, path — one row per file.
    """
    kwargs = {k: v for k, v in (settings or InferSettings()).to_dict().items() if k not in ("trained", "split")}
    if isolate is None:
        isolate = torch.cuda.is_available()
    if not model_dirs:
        raise KitError("no trained models to score: train one first (notebook 02_train, `python -m kit train`), or "
                       "pass TRAINED (--trained)")
    rows = []
    for model_dir in map(Path, model_dirs):
        cfg = read_model_config(model_dir)
        for split in splits:
            if split == "oof" and cfg["fold"] is None:
                log.info(f"[kit infer] {model_dir}: trained on every row (FOLD = None), so it held no rows out: no "
                         f"'oof' predictions (its test rows are scored with SPLITS = ['test'])")
                continue
            started = time.time()
            out = model_dir / "predictions" / f"{split}.csv"
            table = Path(kwargs.get("tokenized") or cfg["tokenized"]) / f"{'test' if split == 'test' else 'train'}.parquet"
            if not kwargs.get("overwrite") and not kwargs.get("out") and is_current(out, model_dir, table):
                # a rerun after another fold was trained: this model's scores are already there
                log.info(f"[kit infer] {out}: already made by this model from this table, kept")
                path, kept = out, True
            elif isolate:
                path, kept = infer_isolated(str(model_dir), split, **kwargs), False
            else:
                path, kept = infer_stage(str(model_dir), split, **kwargs).path, False
            preds = read_csv_keeping_ids(path)
            rows.append({"model": cfg["preset"]["name"], "fold": cfg["fold"], "split": split,
                         "rows": len(preds), "flip_rate": flip_rate_of(preds),
                         "kept": kept, "seconds": time.time() - started, "path": str(path)})
    if not rows:
        log.info(f"[kit infer] nothing scored: no model here has the split(s) {list(splits)}")
    return pd.DataFrame(rows, columns=["model", "fold", "split", "rows", "flip_rate", "kept", "seconds", "path"])
