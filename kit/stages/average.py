"""Fold (or seed) averaging: K trained models of one member -> one model, scored once.

The 1st-place LMSYS solution averaged its five folds' LoRA weights into one model, so each member is
scored once on the hidden test instead of once per fold. :func:`average_models` does that for any
LoRA member type: the K adapters become one whose every delta is exactly their mean, with the heads'
mean (:func:`kit.ops.lora.average_lora`), written as a train-stage output like any other (its
``config.json`` names its sources under ``origin``). It has no held-out rows of its own (``fold``
None): its quality is measured on rows outside every source's training (``scripts/bench_fold_average.py``).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..core.env import work_dir
from ..core.errors import KitError
from ..core.files import check_outside, read_json, under
from ..core.log import get_logger
from ..core.settings import AverageSettings, TrainSettings
from ..core.signature import settings_function
from ..ops.lora import average_lora
from ..store.io import check_free, output_lock, write_json
from ..store.manifest import MANIFEST, read_manifest
from ..store.models import FINAL_FILES, check_trained, publish_training, read_trained

log = get_logger(__name__)

ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"


@dataclass
class AverageResult:
    """The averaged model's folder and the folders it was averaged from."""

    out_dir: Path
    sources: list[Path]


def check_alike(dirs: list[Path]) -> list:
    """The sources' records, once every one is checked whole (:func:`kit.store.models.check_trained`), a LoRA
    adapter, and trained from the same preset on the same tokenization; else a KitError naming the first that
    differs and how."""
    if len(dirs) < 2:
        raise KitError(f"averaging needs at least two trained models of one member, got {len(dirs)}")
    for d in dirs:
        check_trained(d)
    records = [read_trained(d) for d in dirs]
    first = records[0]
    for rec in records[1:]:
        if rec.preset != first.preset or rec.pack_options != first.pack_options:
            raise KitError(f"{rec.folder} was trained from another preset or tokenization than {first.folder}: "
                           f"only models of one member, trained alike, can be averaged")
    for rec in records:
        if not (rec.folder / "adapter" / ADAPTER_WEIGHTS).is_file():
            raise KitError(f"{rec.folder} holds no LoRA adapter ({ADAPTER_WEIGHTS}): only LoRA members' weights can "
                           f"be averaged; blend this member's fold predictions instead")
        if rec.train.get("residual_on"):
            raise KitError(f"{rec.folder}: residual members cannot be averaged (each fits its own base's logits)")
    return records


@settings_function(AverageSettings)
def average_models(model_dirs: list[str] | None = None, out: str | None = None,
                   overwrite: bool = False) -> AverageResult:
    """Average K trained models of one member into one model folder (see the module docstring).

    Guarantees: every adapted layer of the result computes the mean of the K models' layer outputs
    (exactly, up to float round-off), its heads are the K heads' mean, and the sources are only read.

    Example:
        >>> average_models(["models/gemma3-270m/fold0", "models/gemma3-270m/fold1"])  # doctest: +SKIP
    """
    s = AverageSettings(model_dirs=model_dirs, out=out, overwrite=overwrite)
    dirs = [Path(d) for d in s.model_dirs or []]
    records = check_alike(dirs)
    first = records[0]
    target = Path(s.out) if s.out else under(work_dir(), "models", first.preset.name, "average")
    check_outside(target, [(f"the trained model {d}", d) for d in dirs]
                  + [("the backbone folder", first.preset.model_dir)])
    try:
        merged, config = average_lora([load_file(d / "adapter" / ADAPTER_WEIGHTS) for d in dirs],
                                      [read_json(d / "adapter" / ADAPTER_CONFIG, "retrain it") for d in dirs])
    except ValueError as err:
        raise KitError(f"cannot average {', '.join(map(str, dirs))}: {err}") from None
    manifest = read_manifest(dirs[0] / MANIFEST, f"trained model {dirs[0]}", "retrain it")
    cache = manifest.get("inputs", {}).get("cache", {})

    def save_adapter(folder: Path) -> None:
        shutil.copytree(dirs[0] / "adapter", folder, ignore=shutil.ignore_patterns(ADAPTER_WEIGHTS, ADAPTER_CONFIG))
        save_file(merged, str(folder / ADAPTER_WEIGHTS))
        write_json(config, folder / ADAPTER_CONFIG)

    origin = {"averaged_from": [{"model_dir": str(r.folder), "fold": r.fold, "run_id": r.run_id} for r in records],
              "method": f"LoRA deltas' mean (rank {config['r']} = {len(dirs)} x {config['r'] // len(dirs)}), heads' mean"}
    with output_lock(target):
        check_free([target / n for n in FINAL_FILES], s.overwrite)
        publish_training(target, first.preset, None, TrainSettings(**first.train), first.tokenized,
                         first.tokenization, {"outputs": {"train.parquet": cache.get("sha256")},
                                              "folds": cache.get("folds")},
                         {"fold": None, "averaged_models": len(dirs)}, None, save_adapter, origin=origin)
    log.info(f"[kit average] {len(dirs)} {first.preset.name} models -> {target} ({origin['method']})")
    return AverageResult(target, dirs)
