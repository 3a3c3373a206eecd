"""``kit pseudo-label``: an unlabelled table scored by trained models, written back as training
rows with soft labels (the teacher's probabilities), for pseudo-labelling and distillation.

The scoring is :func:`kit.submit.submit`'s, unchanged: every trained model under the roots,
each member tokenized as it was for training, swap TTA where the head uses it, the members
blended as the saved ``blend.json`` says (or the paper's / equal / given weights). Then:

* optional **sharpening**: ``p ** (1 / T)`` renormalised (``temperature`` T < 1 sharpens);
* optional **confidence filter**: rows whose most likely outcome has probability below
  ``min_confidence`` are left out (counted in the manifest, ids in ``<out>.dropped.csv``);
* the rows go out in the competition's columns, ``winner_model_a/b/tie`` holding the
  probabilities — a table ``--train`` / ``--extra`` read as soft-labelled rows;
* ``<out>.manifest.json`` records the teacher (model folders, the blend applied), the
  settings, the input's fingerprint and the counts.

Input: any table :func:`kit.data.read_table` reads (competition columns, or chosen/rejected
data whose labels are ignored); records that cannot be made into a row are reported and left
out (``<out>.dropped.csv``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .data import TEXT_COLUMNS, read_table
from .io import check_free, manifest_path, read_csv_keeping_ids, write_csv, write_json
from .preference_data import READER_PROBLEM

LABEL_COLUMNS = ["winner_model_a", "winner_model_b", "winner_tie"]


@dataclass
class PseudoLabelResult:
    table: pd.DataFrame
    out: Path
    manifest: dict


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    if temperature <= 0:
        raise ValueError(f"temperature {temperature}: pass a positive number (1 keeps the teacher's probabilities)")
    p = np.power(np.clip(probs, 1e-12, 1.0), 1.0 / temperature)
    return p / p.sum(axis=1, keepdims=True)


def pseudo_label(input_table: str | Path, model_roots: Sequence[str | Path], out: str | Path, *,
                 weights="auto", blend_json: str | Path | None = None, temperature: float = 1.0,
                 min_confidence: float = 0.0, work: str | Path | None = None,
                 devices: Sequence[str] | None = None, overwrite: bool = False) -> PseudoLabelResult:
    """See the module docstring."""
    from .env import work_dir
    from .manifest import input_record, stage_manifest
    from .submit import submit

    input_table, out = Path(input_table), Path(out)
    dropped_path = out.with_name(out.stem + ".dropped.csv")
    check_free([out, manifest_path(out), dropped_path], overwrite)
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence {min_confidence}: pass a probability in [0, 1]")
    sharpen(np.ones((1, 3)) / 3, temperature)  # a bad temperature fails before any work
    frame = read_table(input_table)
    missing = [c for c in ("id", *TEXT_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{input_table}: missing column(s) {missing}: pass a table in the competition's columns or "
                         f"chosen/rejected data")
    unusable = frame[READER_PROBLEM].notna() if READER_PROBLEM in frame.columns else pd.Series(False, frame.index)
    dropped = frame.loc[unusable, ["id"]].assign(reason=frame.loc[unusable, READER_PROBLEM] if unusable.any() else [])
    pool = frame.loc[~unusable, ["id", *TEXT_COLUMNS]].reset_index(drop=True)

    run = Path(work or work_dir()) / "pseudo_label" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run.mkdir(parents=True, exist_ok=False)
    write_csv(pool, run / "pool.csv")
    teacher = submit(model_roots, run / "pool.csv", weights=weights, blend_json=blend_json,
                     out=run / "teacher.csv", work=run, devices=devices, sample_submission=None)
    scored = read_csv_keeping_ids(teacher.submission)
    probs = sharpen(scored[LABEL_COLUMNS].to_numpy(dtype=np.float64), temperature)
    confident = probs.max(axis=1) >= min_confidence
    table = pool.assign(**{c: probs[:, j] for j, c in enumerate(LABEL_COLUMNS)})
    dropped = pd.concat([dropped, table.loc[~confident, ["id"]].assign(
        reason=[f"confidence {p:.3f} < {min_confidence}" for p in probs[~confident].max(axis=1)])], ignore_index=True)
    table = table[confident].reset_index(drop=True)

    write_csv(table, out, overwrite, float_format="%.8g")
    write_csv(dropped, dropped_path, overwrite)
    manifest = stage_manifest(
        "pseudo-label", settings={"temperature": temperature, "min_confidence": min_confidence, "weights": weights},
        inputs={"table": input_record(input_table)}, outputs={"table": out},
        teacher={"models": {n: [str(d) for d in ds] for n, ds in teacher.members.items()}, "blend": teacher.weights},
        rows={"input": len(frame), "unusable": int(unusable.sum()), "below_confidence": int((~confident).sum()),
              "written": len(table)},
        mean_confidence=float(probs[confident].max(axis=1).mean()) if confident.any() else None)
    write_json(manifest, manifest_path(out), True)
    print(f"[kit pseudo-label] {len(table)} of {len(frame)} rows -> {out} (unusable {int(unusable.sum())}, below "
          f"confidence {int((~confident).sum())}; teacher: {', '.join(teacher.members)})", flush=True)
    return PseudoLabelResult(table, out, manifest)
