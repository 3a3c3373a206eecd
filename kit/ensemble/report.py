"""The blend report (``<work>/report/``): report.md, evaluation.csv, blend.json (what ``kit
submit`` re-applies), methods.png, reliability.png, confusion.png and manifest.json.

:func:`write_report` writes it stage-atomically (staged, then swapped in whole); its manifest
fingerprints the submission it belongs to, so a report and a submission that do not match are
recognisable.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from ..core.errors import BlendError
from .judges import comparison_markdown
from ..store.figures import plot_confusion, plot_methods, plot_reliability
from ..store.io import write_csv, write_json, write_text, staged_folder
from ..store.manifest import stage_manifest
from ..store.predictions import MemberPredictions
from .combine import BlendResult, describe_weights
from .evaluation import table_scores
from .intervals import N_DRAWS, Difference, MethodScores, compare, differences_markdown
from .submission import PreparedSubmission
from ..core.files import read_json

REPORT_FILES = ("report.md", "evaluation.csv", "blend.json", "methods.png", "reliability.png", "confusion.png",
                "manifest.json")


def render_report(result: BlendResult, differences: Sequence[Difference] = ()) -> str:
    lines = [f"# LoRA-LiteE blend report ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"- members: {', '.join(result.members)}",
             f"- weights: {describe_weights(result)}",
             f"- blending space: {result.space}; temperature: {result.temperature:.3f}"
             f"{' (fitted)' if result.report.get('temperature_fitted') else ''}"
             + (f"; tie offset {result.tie_offset:+.3f} (fitted)" if result.report.get("tie_offset_fitted") else ""),
             f"- out-of-fold `blend` score: {result.report.get('oof_score', '-')}"
             + "".join(f"; {'fold' if 'per fold' in result.report.get('oof_score', '') else 'part'} {k}: weights [{', '.join(f'{x:.3f}' for x in v['weights'])}], "
                       f"temperature {v['temperature']:.3f}"
                       + (f", tie offset {v['tie_offset']:+.3f}" if result.report.get("tie_offset_fitted") else "")
                       for k, v in result.report.get("per_fold", {}).items()),
             f"- out-of-fold rows: {result.oof_rows}; submission: {result.report.get('submission', '-')}", "",
             "## Out-of-fold evaluation", "", comparison_markdown(result.table, recalls=True), ""]
    if differences:
        lines += ["## Differences on the same rows, with paired bootstrap 95 % intervals", "",
                  f"The first method's figure minus the second's on the {result.oof_rows} out-of-fold rows; the "
                  f"interval resamples whole prompts ({differences[0].groups} of them, {N_DRAWS} draws). Log loss: "
                  f"negative favours the first; accuracy: positive favours the first.", "",
                  differences_markdown(differences)]
    judged = result.judged
    if judged is not None:
        lines += [f"## Against external judges, on the {judged.rows} of the {judged.of_rows} out-of-fold rows they judged",
                  "", "The blend and its members on the rows every judge gave a verdict for, the judges beside them "
                  "(a judge known by its verdicts: accuracy and macro-F1; its log loss is not comparable).", "",
                  comparison_markdown(judged.table), "", differences_markdown(judged.differences)]
    lines += ["![log loss and accuracy per method](methods.png)", "",
              "![reliability](reliability.png)", "", "![confusion](confusion.png)", ""]
    return "\n".join(lines)


def blend_comparisons(result: BlendResult, judges: Sequence = (), members: Sequence[str] | None = None
                      ) -> list[Difference]:
    """The blend against each judge (``judges``: rows of :mod:`kit.ensemble.judges`, scored on their
    verdicts or probabilities), each ``blend without X``, each member and TF-IDF, and member against
    member, each with its interval (:mod:`kit.ensemble.intervals`); none when the rows' prompts are
    unknown (no baselines were computed). ``members``: the names compared as members (default: the
    blend's; ``kit cv --blend-judges`` blends judges it still compares as judges)."""
    if result.oof_groups is None or "blend" not in result.oof_methods:
        return []
    methods = {name: MethodScores.from_probs(name, p) for name, p in result.oof_methods.items()}
    for j in judges:
        name = f"judge: {j.name}"
        methods[name] = (MethodScores(name, None, j.verdicts) if j.verdicts is not None
                         else MethodScores.from_probs(name, j.probs))
    return compare(methods, result.oof_labels, result.oof_groups,
                   list(result.members if members is None else members))


def write_report(result: BlendResult, submission: PreparedSubmission, report_dir: Path,
                 members: Sequence[MemberPredictions], space: str) -> None:
    """Write the report folder stage-atomically (see the module docstring)."""
    with staged_folder(report_dir, REPORT_FILES) as stage:
        plot_reliability(result.oof_labels, result.oof_blend, stage / "reliability.png", "blend, out-of-fold")
        plot_confusion(result.oof_labels, result.oof_blend, stage / "confusion.png", "blend, out-of-fold")
        plot_methods(result.table, stage / "methods.png", f"{result.oof_rows} out-of-fold rows")
        write_csv(result.table.reset_index(names="method"), stage / "evaluation.csv")
        differences = blend_comparisons(result)
        judged = result.judged
        external = None if judged is None else {
            "rows": judged.rows, "of_rows": judged.of_rows,
            "results": table_scores(judged.table),
            "comparisons": [d.to_dict() for d in judged.differences]}
        write_json({**result.report, "comparisons": [d.to_dict() for d in differences],
                    **({"external_judges": external} if external else {})}, stage / "blend.json")
        write_text(render_report(result, differences), stage / "report.md")
        write_csv(submission.frame, stage / ".submission.csv", float_format="%.10g")  # its exact bytes
        write_json(stage_manifest(
            "blend", settings={"weights": result.weights_mode, "space": space},
            inputs={m.name: [str(d) for d in m.model_dirs] for m in members},
            outputs={n: stage / n for n in REPORT_FILES if (stage / n).exists()}
            | {"submission.csv": stage / ".submission.csv"}), stage / "manifest.json")
        (stage / ".submission.csv").unlink()


WEIGHT_MODES = ("paper", "equal", "fit", "stack", "fixed")


def read_saved_blend(path: str | Path) -> dict:
    """A report's ``blend.json`` (what ``kit submit`` re-applies), checked to hold a usable blend:
    members, a weights mode, and weights for each member (or the stacker's coefficients). A
    BlendError naming the file and the field otherwise."""
    path = Path(path)
    try:
        saved = read_json(path, "pass the blend.json a blend report wrote (BLEND_JSON / --blend-json), or "
                                "weights='paper' / 'equal'", BlendError, kind="a readable blend.json")
    except OSError as e:
        raise BlendError(f"{path}: not a readable blend.json ({type(e).__name__}: {e}): pass the blend.json a blend "
                         f"report wrote (BLEND_JSON / --blend-json), or weights='paper' / 'equal'") from None
    fix = "rerun the blend stage that wrote it, or pass weights='paper' / 'equal' / [w1, ...]"
    if not isinstance(saved, dict):
        raise BlendError(f"{path}: a blend.json holds a JSON object, not {type(saved).__name__}: {fix}")
    members, mode = saved.get("members"), saved.get("weights_mode")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise BlendError(f"{path}: field 'members' must list the member names: {fix}")
    if mode not in WEIGHT_MODES:
        raise BlendError(f"{path}: field 'weights_mode' is {mode!r}, not one of {list(WEIGHT_MODES)}: {fix}")
    if mode == "stack":
        if not isinstance(saved.get("stacker"), dict):
            raise BlendError(f"{path}: a stacked blend needs its 'stacker' coefficients: {fix}")
    else:
        weights = saved.get("weights")
        if (not isinstance(weights, list) or len(weights) != len(members)
                or not all(isinstance(w, (int, float)) and w >= 0 for w in weights)):
            raise BlendError(f"{path}: field 'weights' must hold one non-negative number per member {members}: {fix}")
    return saved
