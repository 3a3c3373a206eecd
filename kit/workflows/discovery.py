"""What ``kit submit`` finds under the attached roots: trained model folders and saved blends.

A trained output is recognised by its complete train-stage manifest; a saved blend by its blend
stage's manifest vouching for its bytes. Nothing in the kit repository's own ``results/`` is ever a
candidate (:func:`in_kit_results`), also when the whole repository is attached as a dataset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..core.errors import StaleOutput, SubmitError
from ..core.log import get_logger
from ..ensemble.report import read_saved_blend
from ..store.manifest import MANIFEST, check_output, read_manifest
from ..store.models import finished_training, group_by_preset, is_trained_output

log = get_logger(__name__)


def in_kit_results(path: Path) -> bool:
    """True for a path inside the kit repository's own ``results/`` (the folder beside ``kit/``): its
    committed reports are measurements, never trained outputs or blends to submit with — also when
    the whole repository is attached as a dataset (``/kaggle/input/<kit>/results``)."""
    return any(folder.name == "results" and (folder.parent / "kit" / "__init__.py").is_file()
               for folder in path.parents)


def find_trained_models(roots: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Every finished train-stage output under ``roots`` (recognised by its train manifest, at any
    depth; the kit's own ``results/`` excepted: :func:`in_kit_results`), grouped by the preset it
    was trained from, stronger presets first; folds sorted."""
    found = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise SubmitError(f"model root {root} is not a folder: attach the trained models' dataset "
                              f"(MODEL_ROOTS in the notebook, --model-roots on the CLI)")
        found += [cfg.parent for cfg in sorted(root.rglob("config.json")) if not in_kit_results(cfg)
                  and is_trained_output(cfg.parent) and finished_training(cfg.parent)]
    return group_by_preset(found)


def find_saved_blends(roots: Sequence[str | Path]) -> list[Path]:
    """Every saved blend under ``roots``: a ``blend.json`` that a blend stage wrote — its folder's
    complete manifest (stage ``blend``) vouches for its bytes. Anything else named blend.json (an
    example, an edited file) is not a candidate, nor is any blend in the kit's own ``results/``
    (:func:`in_kit_results`)."""
    found = []
    for path in sorted({p.resolve() for root in map(Path, roots) for p in root.rglob("blend.json")}):
        if in_kit_results(path):
            continue
        try:
            manifest = read_manifest(path.parent / MANIFEST, str(path.parent), "")
            if manifest.get("stage") == "blend":
                check_output(manifest, "blend.json", path, str(path.parent), "")
                found.append(path)
        except StaleOutput:
            log.info(f"[kit submit] {path}: not a blend report's own file (no matching manifest): not a candidate")
    return found


def choose_saved_blend(candidates: Sequence[Path], members: Sequence[str], explicit: bool = False) -> Path | None:
    """The saved blend whose members are exactly ``members`` (the models found); None when there is
    no candidate at all; a SubmitError naming every candidate and its members otherwise."""
    if not candidates:
        return None
    blends = {path: read_saved_blend(path) for path in candidates}
    matching = [path for path, saved in blends.items() if sorted(saved["members"]) == sorted(members)]
    if len(matching) == 1:
        return matching[0]
    listed = "; ".join(f"{path} (members {saved['members']})" for path, saved in blends.items())
    if explicit:
        raise SubmitError(f"the saved blend {listed} does not match the models found {list(members)}: attach the "
                          f"same members, or pass WEIGHTS = 'paper' / 'equal' / [w1, ...] (--weights)")
    why = "several match" if matching else "none matches"
    raise SubmitError(f"{len(blends)} saved blend(s) under the roots, {why} the models found {list(members)}: {listed}. "
                      f"Pass the one to use (BLEND_JSON, --blend-json) or fixed weights (WEIGHTS = 'paper' / 'equal')")
