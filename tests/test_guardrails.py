"""Fitted guardrails: only the rows a kept rule names change; the two empty-side orientations
pool by mirroring; a rule that does not help out of fold is dropped; the blend report and
kit submit carry them."""
import json

import numpy as np
import pandas as pd

from kit.data.ingest import load_conversations
from kit.ensemble.guardrails import fit_guardrails, rule_masks
from conftest import KAGGLE_TRAIN, PANDALM, lexical_folds


def _rows():
    """Real PandaLM rows; in some, one response emptied (the other side labelled the winner), in
    others both responses made the same (labelled a tie)."""
    frame = load_conversations(PANDALM).frame
    plain = ~rule_masks(frame)["identical"][0] & ~rule_masks(frame)["one_empty"][0]  # none of the kinds yet
    frame = frame[plain].head(300).reset_index(drop=True)
    labels = frame["label"].to_numpy().copy()
    for i in range(0, 60, 3):  # A empty: B wins; then B empty: A wins
        side = "response_a" if i % 2 == 0 else "response_b"
        frame.at[i, side] = [""]
        labels[i] = 1 if side == "response_a" else 0
    for i in range(61, 90, 3):
        frame.at[i, "response_b"] = [" " + frame.at[i, "response_a"][0].upper() + " "]
        labels[i] = 2
    return frame, labels


def test_only_the_rows_a_kept_rule_names_change_and_mirrored_sides_pool():
    frame, labels = _rows()
    folds = np.arange(len(frame)) % 5
    blend = np.tile([0.4, 0.4, 0.2], (len(frame), 1))  # a blend that knows nothing of these rows
    rails, adjusted = fit_guardrails(frame, labels, folds, blend)
    masks = rule_masks(frame)
    named = masks["identical"][0] | masks["one_empty"][0]
    assert masks["one_empty"][0].sum() == 20 and masks["identical"][0].sum() == 10
    assert set(rails.kept) == {"identical", "one_empty"}
    np.testing.assert_array_equal(adjusted[~named], blend[~named])  # every other row as it was
    assert (adjusted[named] != blend[named]).any(axis=1).all()
    for rule in rails.kept:
        assert rails.report[rule]["log_loss_after"] < rails.report[rule]["log_loss_before"]
    # mirrored: the non-empty side is favoured whichever side is empty
    empty_a = [i for i in range(0, 60, 3) if i % 2 == 0]
    empty_b = [i for i in range(0, 60, 3) if i % 2 == 1]
    assert (adjusted[empty_a, 1] > 0.6).all() and (adjusted[empty_b, 0] > 0.6).all()
    assert rails.counts["one_empty"] == [0.0, 20.0, 0.0]  # all oriented as "A empty, B wins"
    probs, touched = rails.apply(blend, frame)
    assert touched == {"identical": 10, "one_empty": 20}
    np.testing.assert_array_equal(probs[~named], blend[~named])
    np.testing.assert_allclose(probs.sum(axis=1), 1)


def test_a_rule_that_does_not_help_out_of_fold_is_dropped():
    """Rows of a kind whose outcomes are mixed, and a blend already sure and right about each:
    pulling them toward the kind's rate can only hurt."""
    frame, labels = _rows()
    labels[:90] = (np.arange(90) // 3) % 3  # each kind: a third of each outcome
    folds = np.arange(len(frame)) % 5
    oracle = np.full((len(frame), 3), 0.01)
    oracle[np.arange(len(frame)), labels] = 0.98  # already right, and sure: no rule can help
    rails, adjusted = fit_guardrails(frame, labels, folds, oracle)
    assert rails.kept == [] and rails.report["one_empty"]["kept"] is False
    assert rails.report["one_empty"]["log_loss_after"] > rails.report["one_empty"]["log_loss_before"]
    np.testing.assert_array_equal(adjusted, oracle)


def test_blend_report_and_submission_on_real_kaggle_rows(tmp_path):
    """The shipped Kaggle rows hold three identical-response pairs (all ties): the report says
    what the rule did out of fold and whether it was kept."""
    from kit.stages.blend import blend_stage

    dirs = lexical_folds(tmp_path, train=[KAGGLE_TRAIN])
    result = blend_stage({"lexical": dirs}, weights="equal", out=tmp_path / "s.csv", report_dir=tmp_path / "r")
    saved = json.loads((tmp_path / "r" / "blend.json").read_text())["guardrails"]
    assert saved["rules"]["identical"]["rows"] == 3 and "blend + guardrails" in result.table.index
    assert len(pd.read_csv(tmp_path / "s.csv")) == 3
