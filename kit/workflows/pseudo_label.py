"""``kit pseudo-label``: an unlabelled table scored by trained models, written back as training
rows with soft labels (the teacher's probabilities), for pseudo-labelling and distillation.

The scoring is :func:`kit.workflows.submit.submit`'s, unchanged: every trained model under the roots,
each member tokenized as it was for training, swap TTA where the head uses it, the members
blended as the saved ``blend.json`` says (or the paper's / equal / given weights). Then:

* optional **sharpening**: ``p ** (1 / T)`` renormalised (``temperature`` T < 1 sharpens);
* optional **confidence filter**: rows whose most likely outcome has probability below
  ``min_confidence`` are left out (counted in the manifest, ids in ``<out>.dropped.csv``);
* the rows go out in the competition's columns, ``winner_model_a/b/tie`` holding the
  probabilities — a table ``--train`` / ``--extra`` read as soft-labelled rows;
* ``<out>.manifest.json`` records the teacher (model folders, the blend applied), the
  settings, the input's fingerprint and the counts.

Input: any table :func:`kit.data.ingest.read_table` reads (competition columns, or chosen/rejected
data whose labels are ignored); records that cannot be made into a row are reported and left
out (``<out>.dropped.csv``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.env import work_dir
from ..core.errors import KitError
from ..core.log import get_logger
from ..core.schema import LABEL_COLUMNS, TEXT_COLUMNS
from ..core.signature import settings_function
from .settings import PseudoLabelSettings
from ..data.ingest import read_table
from ..data.preference import READER_PROBLEM
from ..store.io import check_free, manifest_path, read_csv_keeping_ids, write_csv, write_json
from ..store.manifest import input_record, stage_manifest
from .submit import submit

log = get_logger(__name__)


@dataclass
class PseudoLabelResult:
    """The soft-labelled table written, its path and its manifest (teacher, settings, counts)."""

    table: pd.DataFrame
    out: Path
    manifest: dict


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``probs ** (1 / temperature)`` renormalised per row: < 1 sharpens, > 1 softens, 1 keeps them."""
    if temperature <= 0:
        raise KitError(f"temperature {temperature}: pass a positive number (1 keeps the teacher's probabilities)")
    p = np.power(np.clip(probs, 1e-12, 1.0), 1.0 / temperature)
    return p / p.sum(axis=1, keepdims=True)


@settings_function(PseudoLabelSettings)
def pseudo_label(
        input_table: str,
        model_roots: list[str],
        out: str,
        weights: str = "auto",
        blend_json: str | None = None,
        sharpening: float = 1.0,
        min_confidence: float = 0.0,
        work: str | None = None,
        devices: list[str] | None = None,
        overwrite: bool = False,
) -> PseudoLabelResult:
    """Score an unlabelled table with trained models and write it back as soft-labelled rows.

    Every parameter is a field of :class:`kit.workflows.settings.PseudoLabelSettings`: its type and default are in the signature, its
    meaning under Args (generated from the field's help).

    Returns:
        :class:`PseudoLabelResult`: the written table, its path and its manifest.

    Example:
        >>> pseudo_label("pool.csv", ["artifacts/models"], "pseudo.csv", min_confidence=0.6)  # doctest: +SKIP
    """
    s = PseudoLabelSettings(**locals())
    input_table, out, temperature, min_confidence = s.input_table, s.out, s.sharpening, s.min_confidence
    model_roots, weights, blend_json, work, devices, overwrite = (s.model_roots, s.weights, s.blend_json, s.work,
                                                                  s.devices, s.overwrite)
    input_table, out = Path(input_table), Path(out)
    dropped_path = out.with_name(out.stem + ".dropped.csv")
    check_free([out, manifest_path(out), dropped_path], overwrite)
    if not 0 <= min_confidence <= 1:
        raise KitError(f"min_confidence {min_confidence}: pass a probability in [0, 1]")
    sharpen(np.ones((1, 3)) / 3, temperature)  # a bad temperature fails before any work
    frame = read_table(input_table)
    missing = [c for c in ("id", *TEXT_COLUMNS) if c not in frame.columns]
    if missing:
        raise KitError(f"{input_table}: missing column(s) {missing}: pass a table in the competition's columns or "
                         f"chosen/rejected data")
    unusable = frame[READER_PROBLEM].notna() if READER_PROBLEM in frame.columns else pd.Series(False, frame.index)
    dropped = frame.loc[unusable, ["id"]].assign(reason=frame.loc[unusable, READER_PROBLEM] if unusable.any() else [])
    pool = frame.loc[~unusable, ["id", *TEXT_COLUMNS]].reset_index(drop=True)

    run = Path(work or work_dir()) / "pseudo_label" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run.mkdir(parents=True, exist_ok=False)
    write_csv(pool, run / "pool.csv")
    try:
        teacher = submit(model_roots, run / "pool.csv", weights=weights, blend_json=blend_json,
                         out=run / "teacher.csv", work=run, devices=devices, sample_submission=None)
    except KitError as e:  # name the user's table, not the kit's internal copy of its usable rows
        raise KitError(str(e).replace(str(run / "pool.csv"), f"{input_table} (its usable rows)")) from None
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
    log.info(f"[kit pseudo-label] {len(table)} of {len(frame)} rows -> {out} (unusable {int(unusable.sum())}, below "
             f"confidence {int((~confident).sum())}; teacher: {', '.join(teacher.members)})")
    return PseudoLabelResult(table, out, manifest)
