"""Trained model folders (``<work>/models/<preset>/fold<K>`` or ``.../full``): their writer, reader,
checks and discovery.

A folder holds a complete model or none: :func:`publish_training` writes ``adapter/`` (what the
member type's fit saved), ``config.json``, ``metrics.json``, ``oof.csv``, ``train_log.csv``,
``training.png`` and, last, ``manifest.json`` into a staging folder swapped in at once.
Discovery (:func:`trained_outputs`, :func:`find_trained_models`) recognises a trained output by
its complete train-stage manifest — nothing else, so a backbone's own ``config.json`` or files
shipped inside the kit's repository are never taken for a model.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.env import work_dir
from ..core.errors import KitError, StaleOutput
from ..core.files import read_json, under
from ..core.log import get_logger
from ..core.presets import Preset, member_order
from ..core.settings import TrainSettings
from .cache import pack_options
from .figures import plot_training
from .io import new_run_id, staged_folder, write_csv, write_json, writing
from .manifest import (MANIFEST, check_output, check_outputs, links_under, read_manifest, rerun_advice,
                       stage_manifest)

log = get_logger(__name__)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def default_model_out(preset_name: str, fold: int | None) -> Path:
    """``<work>/models/<preset>/fold<K>`` (``full`` when the model trains on every row)."""
    return under(work_dir(), "models", preset_name, f"fold{fold}" if fold is not None else "full")


# the train stage's own files in its output folder; anything else there (checkpoints/, ranks/) is
# carried over when a run publishes (:func:`publish_training`)
FINAL_FILES = ("adapter", "config.json", "metrics.json", "oof.csv", "train_log.csv", "training.png",
               "predictions", MANIFEST)


def publish_training(out: Path, preset: Preset, fold, settings: TrainSettings, tokenized: Path, token_meta: dict,
                     cache_manifest: dict, metrics: dict, oof: pd.DataFrame | None, save_adapter,
                     log: pd.DataFrame | None = None, origin: dict | None = None) -> str:
    """Write a finished run's outputs stage-atomically: adapter/ (``save_adapter(folder)``),
    config.json, train_log.csv + training.png (with ``log``), oof.csv, metrics.json and, last,
    manifest.json go into a staging folder that replaces ``out`` in one rename. A kill or a full
    disk before that leaves ``out`` as it was — the previous complete model, or no model (its
    checkpoints stay for the rerun to resume). The previous model's predictions/ go with it:
    nothing it predicted outlives it. ``origin`` is recorded in config.json as well (an averaged
    model's sources: :mod:`kit.stages.average`). Returns the new run id."""
    run_id = new_run_id()
    config = {"preset": preset.to_dict(), "member": preset.member, "fold": fold, "train": asdict(settings),
              "tokenized": str(tokenized), "tokenization": token_meta, "torch": _version("torch"), "run_id": run_id,
              **({"origin": origin} if origin else {})}
    with staged_folder(out, FINAL_FILES) as stage:
        with writing(out / "adapter"):
            save_adapter(stage / "adapter")
        write_json(config, stage / "config.json")
        if log is not None:
            write_csv(log, stage / "train_log.csv")
            plot_training(log, stage / "training.png", title=f"{preset.name} fold {fold}")
        if oof is not None:
            write_csv(oof, stage / "oof.csv")
        write_json(metrics, stage / "metrics.json")
        written = {n: stage / n for n in ("adapter", "config.json", "oof.csv", "metrics.json") if (stage / n).exists()}
        write_json(stage_manifest(
            "train", settings={"preset": preset.name, "member": preset.member, "fold": fold, **asdict(settings)},
            inputs={"cache": {"path": str(tokenized), "sha256": cache_manifest["outputs"]["train.parquet"],
                              "folds": cache_manifest.get("folds")}},
            outputs=written, run_id=run_id), stage / MANIFEST)  # last: the model is complete
    return run_id


# files that run code when read (pickles: joblib, torch's .bin/.pt): never loaded from a model folder
EXECUTABLE_SUFFIXES = (".joblib", ".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")


def refuse_executable_files(folder: Path) -> None:
    """A KitError naming the first file under ``folder`` that could run code when loaded."""
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix.lower() in EXECUTABLE_SUFFIXES:
            raise KitError(f"{path}: refusing to load a {path.suffix} file from a model folder (a pickle can run code "
                           f"when read); the kit saves only data (safetensors, JSON, npz): retrain the model with "
                           f"this kit, or remove the file")


def check_safetensors(folder: Path, rerun: str) -> None:
    """Every ``*.safetensors`` under ``folder`` starts as the format says — an 8-byte header length
    within the file, then a JSON object — else a StaleOutput naming the file (a pickle or any other
    bytes under that name are not a damaged disk, and are never handed to a loader)."""
    for path in sorted(Path(folder).rglob("*.safetensors")):
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            start = f.read(1) if 0 < length <= size - 8 else b""
        if start != b"{":
            raise StaleOutput(f"{path} is not a safetensors file (its first bytes are not a safetensors header): "
                              f"{rerun}")


def check_trained(model_dir: str | Path) -> dict:
    """The model folder's manifest, once its adapter is checked to be the one its train stage
    wrote and to hold nothing that runs code when read; else an error saying to retrain."""
    model_dir = Path(model_dir)
    rerun = rerun_advice(model_dir, f"rerun the train stage into it (`python -m kit train ... --out {model_dir} "
                                    f"--overwrite`)")
    manifest = read_manifest(model_dir / MANIFEST, f"trained model {model_dir}", rerun)
    # links first (a link could lead the pickle scan elsewhere), then pickles, then every fingerprint
    links = links_under(model_dir / "adapter")
    if links:
        raise StaleOutput(f"trained model {model_dir}: {links[0]} is a symbolic link; the kit writes none into a model "
                          f"folder and reads none: {rerun}")
    refuse_executable_files(model_dir / "adapter")
    check_output(manifest, "adapter", model_dir / "adapter", f"trained model {model_dir}", rerun)
    check_safetensors(model_dir / "adapter", rerun)
    # the identity triple: config.json, the manifest and (through the manifest's fingerprint) the
    # adapter must describe one training run — files swapped between folds or runs do not
    trained = read_trained(model_dir)
    settings = manifest.get("settings", {})
    member = trained.member
    then = {"run id": manifest.get("run_id"), "fold": settings.get("fold"), "member type": settings.get("member", member)}
    now = {"run id": trained.run_id, "fold": trained.fold, "member type": member}
    differ = [f"{k} {then[k]!r} in {MANIFEST}, {now[k]!r} in config.json" for k in then if then[k] != now[k]]
    if differ:
        raise StaleOutput(f"trained model {model_dir}: its files come from different training runs ({'; '.join(differ)}): "
                          f"{rerun}")
    # then every other file the manifest fingerprints; oof.csv is compared where it is read (the infer
    # stage's reuse of the train stage's scores, whose message offers scoring afresh instead)
    check_outputs(manifest, model_dir, f"trained model {model_dir}", rerun, skip=("adapter", "oof.csv"))
    return manifest


@dataclass(frozen=True)
class TrainedModel:
    """A trained output's record (its ``config.json``), read once and typed: the preset it was
    trained from (older kits' records included), its fold, run id, the cache it trained on and how
    that cache was packed. Readers take the token budget and packing from here, never from JSON."""

    folder: Path
    preset: Preset
    fold: int | None
    run_id: str | None
    tokenized: Path
    tokenization: dict  # the cache's meta.json at training time (pack, sources, fold settings)
    train: dict  # the train stage's settings (every TrainSettings field; older records: its default)

    @property
    def member(self) -> str:
        return self.preset.member

    @property
    def max_length(self) -> int:
        """Tokens per sequence (per side for a pairwise member) the model was trained with."""
        return self.preset.max_length

    @property
    def pack_options(self) -> dict | None:
        """The packing options beyond the token budget (``kit tokenize --pack``): the budget is
        :attr:`max_length`, stated once."""
        return pack_options(self.tokenization.get("pack"))


def read_trained(model_dir: str | Path) -> TrainedModel:
    """The typed record of a trained output (see :class:`TrainedModel`); a StaleOutput naming the file
    when its config.json is not a trained model's."""
    config = read_model_config(model_dir)
    # a record older than a training setting reads as that setting's default (as its preset does)
    train = {**json.loads(json.dumps(asdict(TrainSettings()))), **(config.get("train") or {})}
    return TrainedModel(Path(model_dir), Preset.from_dict(config["preset"]), config["fold"], config.get("run_id"),
                        Path(config.get("tokenized") or ""), config.get("tokenization") or {}, train)


def read_model_config(model_dir: str | Path) -> dict:
    """A trained output's ``config.json``, checked to name its preset as a record; a StaleOutput
    naming the file otherwise."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise StaleOutput(f"{model_dir} is not a train-stage output (no config.json): pass a folder the train stage "
                          f"wrote (models/<preset>/fold<K>)")
    rerun = rerun_advice(model_dir, "rerun the train stage there")
    config = read_json(path, rerun)
    if not isinstance(config, dict) or not isinstance(config.get("preset"), dict) or "fold" not in config:
        raise StaleOutput(f"{path} does not describe a trained model (no preset record or fold): {rerun}")
    return config


def finished_training(folder: Path) -> bool:
    """True when the train stage finished in ``folder`` (a complete manifest.json, written last);
    otherwise says so on the console."""
    manifest = Path(folder) / MANIFEST
    try:
        read_manifest(manifest, str(folder), "")
        return True
    except StaleOutput as e:
        why = ("no complete manifest.json, a training run that did not finish (or made by an older kit)"
               if not manifest.is_file() or "does not say complete" in str(e) else str(e).rstrip(": "))
        log.warning(f"[kit] {folder}: skipped: {why} ({rerun_advice(folder, 'rerun the train stage there')})")
        return False


def is_trained_output(folder: Path) -> bool:
    """A folder the train stage wrote or began: ``config.json`` beside an ``adapter/`` or a train-stage
    manifest. One whose manifest is missing or incomplete is still a candidate, so that
    :func:`finished_training` names it (never dropped silently); a backbone's own folder (a
    config.json, no adapter) is not."""
    if not (folder / "config.json").is_file():
        return False
    if (folder / "adapter").is_dir():
        return True
    try:
        manifest = read_json(folder / MANIFEST, "")
    except (OSError, StaleOutput):
        return False
    return isinstance(manifest, dict) and manifest.get("stage") == "train"


def trained_outputs(root: str | Path | None = None, models: Sequence[str] | None = None) -> list[Path]:
    """Every finished train-stage output ``<root>/<preset>/<run>`` (default root <work>/models):
    recognised by its train manifest. A folder whose run did not finish is named on the console
    and left out; staging folders of a run in progress (``.name``) are never listed."""
    root = Path(root) if root else work_dir() / "models"
    found = sorted(p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith(".")
                   and not p.parent.name.startswith(".") and is_trained_output(p))
    found = [p for p in found if models is None or p.parent.name in models]
    return [p for p in found if finished_training(p)]


def group_by_preset(folders: Sequence[Path]) -> dict[str, list[Path]]:
    """Trained outputs grouped by the preset they were trained from (each folder's config.json),
    stronger presets first (:data:`kit.core.presets.MEMBER_ORDER`), folds in name order."""
    groups: dict[str, list[Path]] = {}
    for folder in folders:
        name = read_trained(folder).preset.name or folder.parent.name
        groups.setdefault(name, []).append(folder)
    return {n: sorted(groups[n]) for n in member_order(groups)}


def discover_members(root: str | Path | None = None, models: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Trained outputs under <work>/models (or ``root``) grouped by preset, stronger presets first."""
    return group_by_preset(trained_outputs(root, models))
