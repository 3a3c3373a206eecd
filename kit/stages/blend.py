"""Stage 4 — blend: every member's predictions (:mod:`kit.store.predictions`) -> the ensemble
(:mod:`kit.ensemble`) -> ``submission.csv`` and the report.

A member is one preset: its test probabilities are the mean over its trained (model, fold)
outputs, its out-of-fold probabilities the concatenation of every fold's held-out rows. Weights
are fixed (the paper's 0.7/0.3 for two members, equal otherwise, or given) or fitted on the
out-of-fold rows — cross-fitted for the reported figure (:func:`kit.ensemble.combine.blend_members`).
Both outputs are refused before either is written; the submission is validated before anything
is written and written last, once the report is in place.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.env import work_dir
from ..core.errors import BlendError
from ..core.log import get_logger
from ..core.settings import BlendSettings
from ..core.signature import settings_function
from ..core.values import one_path_each
from ..ensemble.combine import BlendResult, blend_members
from ..ensemble.evaluation import evaluation_table
from ..ensemble.guardrails import apply_guardrails
from ..ensemble.judges import (external_comparison, held_out_judge, judge_table, params_of, read_judge_csv,
                              split_judges)
from ..ensemble.report import REPORT_FILES, write_report
from ..ensemble.submission import prepare_blended_submission
from ..store.cache import check_cache
from ..store.io import check_free, output_lock, recover_staged
from ..store.models import discover_members, read_model_config
from ..store.predictions import MemberPredictions, load_member

log = get_logger(__name__)


@settings_function(BlendSettings)
def blend_stage(
        members: dict | None = None,
        models: list[str] | None = None,
        weights: str = "paper",
        space: str = "prob",
        temperature: bool = False,
        tie_offset: bool = False,
        out: str | None = None,
        report_dir: str | None = None,
        sample_submission: str | None = "auto",
        guardrails: bool = True,
        baselines: bool = True,
        judge_csv: dict | None = None,
        overwrite: bool = False,
) -> BlendResult:
    """Stage 4: blend the members, write and validate submission.csv and the report.

    Every parameter is a field of :class:`kit.core.settings.BlendSettings`: its type and default are in the signature, its
    meaning under Args (generated from the field's help).

    Returns:
        :class:`kit.ensemble.combine.BlendResult`: members, weights, the test probabilities, the
        out-of-fold table and the report's record.

    Example:
        >>> result = blend_stage(weights="fit", space="log")  # doctest: +SKIP
        >>> result.table[["log_loss", "accuracy"]]             # doctest: +SKIP
    """
    s = BlendSettings(**locals())
    groups = s.members if s.members is not None else discover_members(models=s.models)
    if not groups:
        raise BlendError(f"no trained models found under {work_dir() / 'models'}")
    if s.sample_submission not in (None, "auto") and not Path(s.sample_submission).is_file():
        raise BlendError(f"no sample submission at {s.sample_submission}: pass an existing file, or 'none' to skip "
                         f"the check (--sample-submission)")
    judge_csv = one_path_each(s.judge_csv)
    for name, path in judge_csv.items():  # a wrong file fails now, before anything is blended
        read_judge_csv(name, path)
    groups, judge_groups = split_judges(groups)  # judges are compared with the members, never blended
    if not groups:
        raise BlendError(f"only judges among the trained models ({', '.join(judge_groups)}): train a member to blend")
    loaded = [load_member(name, dirs) for name, dirs in groups.items()]
    judged = [load_member(name, dirs, need_test=False) for name, dirs in judge_groups.items()]
    result = blend_members(loaded, s.weights, s.space, s.temperature, s.tie_offset)

    with output_lock(Path(s.report_dir) if s.report_dir else work_dir() / "report"):  # one blend per report
        out = Path(s.out) if s.out else work_dir() / "submission.csv"
        report_dir = Path(s.report_dir) if s.report_dir else work_dir() / "report"
        if result.table is not None:  # both refused before either is written
            recover_staged(report_dir, REPORT_FILES)
            check_free([out, *(report_dir / n for n in REPORT_FILES)], s.overwrite)
        tokenized = Path(read_model_config(loaded[0].model_dirs[0])["tokenized"])
        _check_same_test_table(loaded, tokenized)
        if result.table is not None:
            if s.baselines and not (tokenized / "train.parquet").exists():
                # e.g. Kaggle: the models' cache holds the test table only; the members' OOF rows are
                # still reported, the baselines need the training rows
                log.info(f"[kit blend] no baselines: {tokenized} holds no train.parquet")
            elif s.baselines:
                result.table = evaluation_table(result, tokenized)
            if s.guardrails:
                apply_guardrails(result, tokenized)  # may change test rows: before the submission is made
            result.table["params"] = [params_of(groups[n][0]) if n in groups else None for n in result.table.index]
            if judged:  # the paper's comparison: un-finetuned judges on the same rows
                rows = [held_out_judge(j, result.oof_ids, params_of(j.model_dirs[0])) for j in judged]
                result.table = pd.concat([result.table, judge_table(rows, result.oof_labels)])
            if judge_csv:  # the paper's comparison with external judges, on the rows they judged
                result.judged = external_comparison(result, judge_csv)
        # validated before anything is written; written last, once the report is in place: a failure
        # anywhere before leaves the previous submission (and report) as they were
        submission = prepare_blended_submission(result.test, tokenized, s.sample_submission)
        result.report["submission"] = str(out)
        if result.table is not None:
            result.report["report_dir"] = str(report_dir)
            write_report(result, submission, report_dir, loaded, s.space)
        submission.write(out, s.overwrite)
        return result


def _check_same_test_table(members: list[MemberPredictions], tokenized: Path) -> None:
    """Every member's test predictions must come from the same source test table (by content)
    as the cache whose ids the submission takes — else one member predicted another test set."""
    source = check_cache(tokenized, "test").get("inputs", {}).get("test", {}).get("sha256")
    for m in members:
        other = sorted(s for s in m.test_sources if s != source)
        if other:
            raise BlendError(f"member {m.name}: its test predictions were made from another test table "
                             f"(fingerprint {str(other[0])[:12]}) than {tokenized}'s ({str(source)[:12]}): re-tokenize "
                             f"that member's test table from the same file and rerun its infer stage")
