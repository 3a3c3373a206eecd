"""The paper's comparison: un-finetuned decoders as zero-shot judges (real SmolLM2 weights) and an
external judge's verdicts, scored on the blend's out-of-fold rows beside the members, never blended."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import PANDALM
from kit.core.errors import BlendError
from kit.core.presets import resolve_preset
from kit.ensemble.judges import confusion_probs, external_judge
from kit.members.zeroshot import JudgePacker, load_judge, verdict_logits, verdict_token_ids
from kit.ops.chat import chat_frame


@pytest.fixture(scope="module")
def judge():
    preset = resolve_preset("smollm2-zeroshot", dict(max_length=192))
    model, tokenizer = load_judge(None, preset)
    return preset, model, tokenizer


def test_the_judge_prompt_fits_the_budget_inside_the_chat_frame(judge):
    preset, _, tokenizer = judge
    packer = JudgePacker(tokenizer, preset.max_length)
    before, after = chat_frame(tokenizer)
    long = "word " * 3000
    for p, a, b in [("hi", "A says yes", "B says no"), (long, long, long), ("x", long, "")]:
        ids = packer.pack_ids(*([packer.encode_many([t])[0]] for t in (p, a, b))).input_ids  # one turn each
        assert len(ids) <= preset.max_length  # always
        assert ids[:len(before)] == before and ids[-len(after):] == after
        text = tokenizer.decode(ids)
        assert "[Answer A]" in text and "[Answer B]" in text and text.count("<|im_start|>") == 3  # system, user, assistant


def test_verdict_logits_match_the_full_forward_pass(judge):
    """Golden: the last-position projection equals the model's own logits at the last real token."""
    _, model, tokenizer = judge
    verdicts = verdict_token_ids(tokenizer)
    assert verdicts == {"A": [49, 330], "B": [50, 389], "tie": sorted(verdicts["tie"])} and len(verdicts["tie"]) >= 2
    rows = [np.array(tokenizer("Which is better? Reply A or B.")["input_ids"]), np.array(tokenizer("Short.")["input_ids"])]
    got = verdict_logits(model, rows, tokenizer.pad_token_id, verdicts, progress=False)
    for i, ids in enumerate(rows):
        with torch.no_grad():
            full = model(input_ids=torch.as_tensor(ids)[None]).logits[0, -1].double()
        want = [torch.logsumexp(full[verdicts[v]], 0).item() for v in ("A", "B", "tie")]
        np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4)


def test_confusion_probabilities_are_cross_fitted():
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    verdicts = labels.copy()
    probs = confusion_probs(verdicts, labels, folds)
    assert np.allclose(probs.sum(1), 1)
    # fold 1's "tie" verdicts: fold 0 holds no tie verdict, so only the smoothing speaks (uniform)
    assert np.allclose(probs[4], [1 / 3] * 3)
    # fold 0's "A" verdicts were right on fold 1: 2 of 4 (smoothed) for A
    assert probs[0][0] == pytest.approx(2 / 4)


def test_cv_reports_zero_shot_and_external_judges_beside_the_members(tmp_path):
    from kit.workflows.cv import cv_stage
    frame = pd.read_csv(PANDALM).head(30)
    truth = np.select([frame["winner_model_a"] == 1, frame["winner_model_b"] == 1], ["A", "B"], "tie")
    pd.DataFrame({"id": frame["id"], "verdict": truth}).to_csv(tmp_path / "verdicts.csv", index=False)
    probs = pd.DataFrame({"id": frame["id"], "p_a": 0.4, "p_b": 0.4, "p_tie": 0.2})
    probs.to_csv(tmp_path / "probs.csv", index=False)
    from dataclasses import replace
    from kit.core.presets import PRESETS, register_preset
    register_preset(replace(PRESETS["smollm2-zeroshot"], name="smollm2-zeroshot-128", max_length=128))  # CI's scale
    result = cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv", max_rows=30, max_length=None,
                      judges=["smollm2-zeroshot-128"],
                      judge_csv={"truthful": [str(tmp_path / "verdicts.csv")], "flat": [str(tmp_path / "probs.csv")]})
    table = result["table"]
    assert {"judge: smollm2-zeroshot-128", "judge: truthful", "judge: flat"} <= set(table.index)
    assert table.loc["judge: smollm2-zeroshot-128", "params"] == 134515008  # SmolLM2-135M, untouched
    assert table.loc["judge: truthful", "accuracy"] == 1.0  # verdicts equal to the labels
    assert table.loc["judge: flat", "log_loss"] == pytest.approx(
        -np.mean(np.log(np.where(truth == "tie", 0.2, 0.4))), rel=1e-6)
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert list(saved["settings"]["blend"]["weights"]) == ["lexical"]  # judges are compared, never blended
    # the report names its judges, so a rerun (scripts/bag_spread.py) can pass them on
    assert saved["settings"]["judges"] == ["smollm2-zeroshot-128"]
    assert saved["settings"]["judge_csv"] == {"truthful": str(tmp_path / "verdicts.csv"),
                                              "flat": str(tmp_path / "probs.csv")}
    assert "judge: smollm2-zeroshot-128" in saved["results"] and "| zero-shot" in result["markdown"]
    # a judge known by its verdicts is scored on them: accuracy and macro-F1, no log loss
    assert saved["results"]["judge: truthful"] == {"log_loss": None, "accuracy": 1.0, "macro_f1": 1.0}
    assert "not comparable" in result["markdown"]
    # each member's and judge's cut rate beside its figures: the lexical member packs no tokens
    rates = saved["settings"]["cut_rates"]
    assert rates["lexical"] is None and 0 <= rates["smollm2-zeroshot-128"] <= 1
    assert "rows cut" in result["markdown"] and f"{rates['smollm2-zeroshot-128']:.1%}" in result["markdown"]
    # every difference on the same rows carries its paired bootstrap interval (prompts resampled)
    comparisons = {(c["a"], c["b"], c["metric"]): c for c in saved["comparisons"]}
    truthful = comparisons[("blend", "judge: truthful", "accuracy")]
    assert truthful["difference"] < 0 and truthful["low"] <= truthful["difference"] <= truthful["high"] <= 0
    assert ("blend", "judge: truthful", "log_loss") not in comparisons
    assert {("blend", "judge: flat", "log_loss"), ("blend", "judge: smollm2-zeroshot-128", "accuracy"),
            ("blend", "lexical", "accuracy"), ("blend", "tfidf", "log_loss")} <= set(comparisons)
    assert truthful["groups"] == frame["prompt"].nunique() and "paired bootstrap 95 % intervals" in result["markdown"]
    # --blend-judges (a measurement): the same folds, reused; the judge is a blended member and still a judge row
    again = cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv", max_rows=30, max_length=None,
                     judges=["smollm2-zeroshot-128"], blend_judges=True)
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert list(saved["settings"]["blend"]["weights"]) == ["lexical", "smollm2-zeroshot-128"]
    assert {"smollm2-zeroshot-128", "judge: smollm2-zeroshot-128"} <= set(again["table"].index)
    assert "blended as members too" in again["markdown"]


def test_an_external_judge_must_cover_every_scored_row(tmp_path):
    ids = ["a", "b", "c"]
    pd.DataFrame({"id": ["a", "b"], "verdict": ["A", "B"]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(BlendError, match=r"no verdict for 1 of the 3 scored rows \(e\.g\. ids \['c'\]\)"):
        external_judge("gpt-4", tmp_path / "short.csv", ids, np.zeros(3, int), np.zeros(3, int))
    pd.DataFrame({"id": ids, "verdict": ["A", "maybe", "tie"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(BlendError, match=r"row 3 \(id b\), column verdict: 'maybe' is not A, B or tie"):
        external_judge("gpt-4", tmp_path / "bad.csv", ids, np.zeros(3, int), np.zeros(3, int))
    pd.DataFrame({"id": ids, "score": [1, 2, 3]}).to_csv(tmp_path / "shape.csv", index=False)
    from kit.workflows.cv import cv_stage
    with pytest.raises(BlendError, match="needs columns .* or a verdict column"):  # before any training
        cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv", judge_csv={"gpt-4": [str(tmp_path / "shape.csv")]})
    assert not (tmp_path / "cv").exists()
    pd.DataFrame({"id": ids, "p_a": [0.5, 0.5, 0.9], "p_b": 0.25, "p_tie": 0.25}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(BlendError, match="not summing to 1"):
        external_judge("gpt-4", tmp_path / "p.csv", ids, np.zeros(3, int), np.zeros(3, int))


def test_the_blend_report_shows_a_judge_and_submit_skips_it(tmp_path):
    """A zero-shot judge trained (nothing) and scored beside a member: the blend stage reports it on
    the blend's rows with its parameter count and leaves it out of the blend; kit submit, finding it
    among the attached models, submits the members only."""
    from dataclasses import replace
    from conftest import KAGGLE_TEST, SAMPLE_SUB
    from kit.core.presets import PRESETS, register_preset
    from kit.stages.blend import blend_stage
    from kit.stages.infer import infer_stage
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage
    from kit.workflows.submit import submit
    register_preset(replace(PRESETS["smollm2-zeroshot"], name="smollm2-zeroshot-128", max_length=128))
    groups = {}
    for name in ("lexical", "smollm2-zeroshot-128"):
        tokenize_stage(name, [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=16, out=tmp_path / "tok" / name)
        groups[name] = []
        for k in range(2):
            model = train_stage(name, k, tokenized=tmp_path / "tok" / name,
                                out=tmp_path / "models" / name / f"fold{k}").out_dir
            for split in ("oof", "test"):
                infer_stage(model, split)
            groups[name].append(model)
    result = blend_stage(groups, weights="fit", out=tmp_path / "s.csv", report_dir=tmp_path / "report",
                         sample_submission=SAMPLE_SUB)
    assert result.members == ["lexical"]
    row = result.table.loc["judge: smollm2-zeroshot-128"]
    assert row["kind"] == "zero-shot" and row["params"] == 134515008 and 0 < row["log_loss"] < 5
    report = (tmp_path / "report" / "report.md").read_text()
    assert "judge: smollm2-zeroshot-128" in report and "| zero-shot" in report and "recall_tie" in report
    done = submit([tmp_path / "models"], KAGGLE_TEST, weights="equal", work=tmp_path / "w", out=tmp_path / "sub.csv",
                  sample_submission=SAMPLE_SUB)
    assert list(done.members) == ["lexical"]


def test_the_blend_report_compares_external_judges_on_the_rows_they_judged(tmp_path):
    """The main job's case: training rows from Kaggle and PandaLM, judges' verdicts for PandaLM's
    only. The report compares the blend with each judge on the judged rows, with the interval; the
    judge's accuracy is its verdicts' on those rows (computed here from the file)."""
    from conftest import KAGGLE_TEST, KAGGLE_TRAIN, lexical_folds
    from kit.core.env import default_judges
    from kit.core.metrics import macro_f1
    from kit.stages.blend import blend_stage
    dirs = lexical_folds(tmp_path, train=(KAGGLE_TRAIN, PANDALM), max_rows=160)
    judges = default_judges()
    assert sorted(judges) == ["gpt-3.5-turbo", "pandalm-7b"]
    result = blend_stage({"lexical": [str(d) for d in dirs]}, weights="fit", space="log", out=tmp_path / "sub.csv",
                         report_dir=tmp_path / "report", judge_csv=judges)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Against external judges, on the 60 of the 160 out-of-fold rows they judged" in report
    saved = json.loads((tmp_path / "report" / "blend.json").read_text())["external_judges"]
    assert saved["rows"] == 60 and saved["of_rows"] == 160
    # golden: the judge's accuracy and macro-F1 are its verdicts' on the PandaLM rows trained here
    pandalm = pd.read_csv(PANDALM, dtype={"id": str}).head(60)
    truth = np.select([pandalm["winner_model_a"] == 1, pandalm["winner_model_b"] == 1], [0, 1], 2)
    said = pd.read_csv(judges["gpt-3.5-turbo"], dtype={"id": str}).set_index("id").loc[pandalm["id"], "verdict"]
    said = said.str.lower().map({"a": 0, "b": 1, "tie": 2}).to_numpy()
    assert saved["results"]["judge: gpt-3.5-turbo"]["accuracy"] == pytest.approx((said == truth).mean())
    assert saved["results"]["judge: gpt-3.5-turbo"]["macro_f1"] == pytest.approx(macro_f1(truth, said))
    assert saved["results"]["judge: gpt-3.5-turbo"]["log_loss"] is None  # verdicts: not comparable
    blend_rows = result.judged.table.loc["blend"]
    diff = {(d["b"], d["metric"]): d for d in saved["comparisons"]}[("judge: gpt-3.5-turbo", "accuracy")]
    assert diff["difference"] == pytest.approx(blend_rows["accuracy"] - (said == truth).mean())
    assert diff["low"] <= diff["difference"] <= diff["high"] and diff["rows"] == 60
    # judges of other rows only: one line, before anything is written
    other = tmp_path / "other.csv"
    pd.DataFrame({"id": ["x1", "x2"], "verdict": ["A", "B"]}).to_csv(other, index=False)
    with pytest.raises(BlendError, match="none of the 160 out-of-fold rows has a verdict"):
        blend_stage({"lexical": [str(d) for d in dirs]}, weights="fit", out=tmp_path / "sub2.csv",
                    report_dir=tmp_path / "report2", judge_csv={"elsewhere": str(other)})
    assert not (tmp_path / "sub2.csv").exists()
