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
from ..core.files import read_json
from ..store.manifest import MANIFEST, check_output, links_under, read_manifest, rerun_advice
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
        _refuse_linked_models(root)
    return group_by_preset(found)


def _refuse_linked_models(root: Path) -> None:
    """A SubmitError naming a symbolic link under ``root`` that leads to a trained model (or a folder holding
    one): the kit reads no links (a link can lead the checks outside the folder they vouch for), and a
    member behind one must not be left out unsaid."""
    for link in links_under(root):
        target = link.resolve()
        if target.is_dir() and (is_trained_output(target) or any(
                is_trained_output(cfg.parent) for cfg in target.rglob("config.json"))):
            raise SubmitError(f"{link} is a symbolic link to the trained model(s) at {target}: the kit reads no links; "
                              f"attach or copy the folder itself (MODEL_ROOTS in the notebook, --model-roots)")


def find_saved_blends(roots: Sequence[str | Path]) -> list[Path]:
    """Every saved blend under ``roots``: a ``blend.json`` that a blend stage wrote — its folder's
    complete manifest (stage ``blend``) vouches for its bytes. A ``blend.json`` with no manifest beside
    it, or beside another stage's, is not a blend report's (an example, a copy): not a candidate, and
    said so; nor is any blend in the kit's own ``results/`` (:func:`in_kit_results`). A blend report
    whose manifest is incomplete, unreadable or no longer matches its ``blend.json`` (edited, truncated)
    is damaged: a SubmitError naming it — never silently replaced by other weights."""
    return [path for path in sorted({p.resolve() for root in map(Path, roots) for p in root.rglob("blend.json")})
            if not in_kit_results(path) and is_blend_report(path)]


def is_blend_report(path: Path) -> bool:
    """True for a ``blend.json`` its blend report's complete manifest vouches for; False for one with no
    blend manifest beside it (not a report's own file, said so); a SubmitError for a damaged report (see
    :func:`find_saved_blends`)."""
    manifest_path = path.parent / MANIFEST
    stage = _stage_of(manifest_path)
    if stage is None or (stage != "blend" and stage is not _UNREADABLE):
        log.info(f"[kit submit] {path}: not a blend report's own file (no blend manifest beside it)")
        return False
    rerun = rerun_advice(path.parent, "rerun the blend stage that wrote it")
    try:
        manifest = read_manifest(manifest_path, f"the saved blend {path}", rerun)
        check_output(manifest, "blend.json", path, f"the saved blend {path}", rerun)
    except StaleOutput as e:
        raise SubmitError(f"{e}; or pass fixed weights (WEIGHTS = 'paper' / 'equal', --weights) to submit "
                          f"without it") from None
    return True


_UNREADABLE = object()


def _stage_of(manifest_path: Path):
    """The ``stage`` a manifest file names (None: no manifest file, or one naming no stage;
    :data:`_UNREADABLE`: a manifest file that cannot be read, which a damaged blend report's can be)."""
    if not manifest_path.is_file():
        return None
    try:
        record = read_json(manifest_path, "")
    except (StaleOutput, OSError):
        return _UNREADABLE
    return record.get("stage") if isinstance(record, dict) else _UNREADABLE


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
