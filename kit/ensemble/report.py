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

from ..store.figures import plot_confusion, plot_methods, plot_reliability
from ..store.io import write_csv, write_json, write_text, staged_folder
from ..store.manifest import stage_manifest
from ..store.predictions import MemberPredictions
from .combine import BlendResult, describe_weights
from .submission import PreparedSubmission

REPORT_FILES = ("report.md", "evaluation.csv", "blend.json", "methods.png", "reliability.png", "confusion.png",
                "manifest.json")


def render_report(result: BlendResult) -> str:
    lines = [f"# LoRA-LiteE blend report ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"- members: {', '.join(result.members)}",
             f"- weights: {describe_weights(result)}",
             f"- blending space: {result.space}; temperature: {result.temperature:.3f}"
             f"{' (fitted)' if result.report.get('temperature_fitted') else ''}",
             f"- out-of-fold `blend` score: {result.report.get('oof_score', '-')}"
             + "".join(f"; fold {k}: weights [{', '.join(f'{x:.3f}' for x in v['weights'])}], "
                       f"temperature {v['temperature']:.3f}" for k, v in result.report.get("per_fold", {}).items()),
             f"- out-of-fold rows: {result.oof_rows}; submission: {result.report.get('submission', '-')}", "",
             "## Out-of-fold evaluation", "", result.table.to_markdown(floatfmt=".4f"), "",
             "![log loss per method](methods.png)", "",
             "![reliability](reliability.png)", "", "![confusion](confusion.png)", ""]
    return "\n".join(lines)


def write_report(result: BlendResult, submission: PreparedSubmission, report_dir: Path,
                 members: Sequence[MemberPredictions], space: str) -> None:
    """Write the report folder stage-atomically (see the module docstring)."""
    with staged_folder(report_dir, REPORT_FILES) as stage:
        plot_reliability(result.oof_labels, result.oof_blend, stage / "reliability.png", "blend, out-of-fold")
        plot_confusion(result.oof_labels, result.oof_blend, stage / "confusion.png", "blend, out-of-fold")
        plot_methods(result.table, stage / "methods.png", f"{result.oof_rows} out-of-fold rows")
        write_csv(result.table.reset_index(names="method"), stage / "evaluation.csv")
        write_json(result.report, stage / "blend.json")
        write_text(render_report(result), stage / "report.md")
        write_csv(submission.frame, stage / ".submission.csv", float_format="%.10g")  # its exact bytes
        write_json(stage_manifest(
            "blend", settings={"weights": result.weights_mode, "space": space},
            inputs={m.name: [str(d) for d in m.model_dirs] for m in members},
            outputs={n: stage / n for n in REPORT_FILES if (stage / n).exists()}
            | {"submission.csv": stage / ".submission.csv"}), stage / "manifest.json")
        (stage / ".submission.csv").unlink()
