"""Paired bootstrap intervals (kit.ensemble.intervals) and macro-F1 (kit.core.metrics), against
references: scikit-learn's F1, an explicit resampling loop, and what grouping by prompt must do."""
import numpy as np
import pytest
from sklearn.metrics import f1_score

from kit.core.metrics import macro_f1, metrics
from kit.ensemble.intervals import MethodScores, compare, paired_difference, paired_differences


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_is_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    labels, predicted = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    predicted[rng.random(200) < 0.3] = 0  # uneven classes
    assert macro_f1(labels, predicted) == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert macro_f1(labels[labels < 2], predicted[labels < 2] % 2) == pytest.approx(
        f1_score(labels[labels < 2], predicted[labels < 2] % 2, average="macro"))  # a class absent from both
    assert macro_f1(np.zeros(5, int), np.zeros(5, int)) == 1.0


def _random_methods(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    good = np.full((n, 3), 0.2)
    good[np.arange(n), labels] = 0.6
    good[rng.random(n) < 0.3] = [0.5, 0.3, 0.2]  # wrong on some rows
    flat = rng.dirichlet([1, 1, 1], n)
    return labels, MethodScores.from_probs("good", good), MethodScores.from_probs("flat", flat)


def test_a_method_against_itself_is_exactly_zero():
    labels, good, _ = _random_methods()
    for d in paired_difference(good, good, labels, range(len(labels))):
        assert (d.difference, d.low, d.high) == (0.0, 0.0, 0.0) and not d.settled


def test_the_point_difference_is_the_difference_of_the_two_metrics():
    labels, good, flat = _random_methods()
    ll, acc = paired_difference(good, flat, labels, range(len(labels)))
    assert ll.metric == "log_loss" and acc.metric == "accuracy"
    assert ll.difference == pytest.approx(metrics(labels, good.probs)["log_loss"] - metrics(labels, flat.probs)["log_loss"])
    assert acc.difference == pytest.approx(metrics(labels, good.probs)["accuracy"] - metrics(labels, flat.probs)["accuracy"])
    assert ll.low < ll.difference < ll.high < 0 and ll.settled  # the good method is better, and it shows


def test_differences_by_name_follow_the_pairs_given():
    labels, good, flat = _random_methods()
    probs, groups = {"good": good.probs, "flat": flat.probs}, range(len(labels))
    got = paired_differences(probs, [("good", "flat"), ("flat", "good")], labels, groups)
    assert [(d.a, d.b, d.metric) for d in got] == [("good", "flat", "log_loss"), ("good", "flat", "accuracy"),
                                                   ("flat", "good", "log_loss"), ("flat", "good", "accuracy")]
    assert got[:2] == paired_difference(good, flat, labels, groups)


def test_group_sums_match_an_explicit_resampling_loop():
    """The fast path (group sums x multinomial counts) against resampling prompts one by one."""
    labels, good, flat = _random_methods(n=120, seed=3)
    groups = np.repeat(np.arange(40), 3)
    d = paired_difference(good, flat, labels, groups, n_draws=400, seed=7)[1]  # accuracy
    rng = np.random.default_rng(7)
    counts = rng.multinomial(40, np.full(40, 1 / 40), size=400)
    per_row = (good.predicted == labels).astype(float) - (flat.predicted == labels).astype(float)
    boot = [np.concatenate([np.tile(per_row[groups == g], c) for g, c in enumerate(draw)]).mean() for draw in counts]
    assert (d.low, d.high) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))


def test_rows_of_one_prompt_are_resampled_together():
    """The same 50 rows each repeated 6 times: grouped by prompt the interval is that of the 50 rows;
    treated as 300 independent rows it would be falsely narrow."""
    labels, good, flat = _random_methods(n=50, seed=1)
    rep = lambda m: MethodScores.from_probs(m.name, np.repeat(m.probs, 6, axis=0))  # noqa: E731
    labels6 = np.repeat(labels, 6)
    once = paired_difference(good, flat, labels, np.arange(50), seed=2)[1]
    grouped = paired_difference(rep(good), rep(flat), labels6, np.repeat(np.arange(50), 6), seed=2)[1]
    independent = paired_difference(rep(good), rep(flat), labels6, np.arange(300), seed=2)[1]
    assert (grouped.low, grouped.high) == pytest.approx((once.low, once.high))
    assert independent.high - independent.low < 0.6 * (grouped.high - grouped.low)


def test_a_judge_known_by_its_verdicts_gets_no_log_loss_difference():
    labels, good, _ = _random_methods()
    judge = MethodScores("judge: gpt", None, labels.copy())  # always right
    diffs = paired_difference(good, judge, labels, range(len(labels)))
    assert [d.metric for d in diffs] == ["accuracy"] and diffs[0].difference < 0 and diffs[0].settled


def test_the_report_compares_the_blend_with_everything_and_members_pairwise():
    labels, good, flat = _random_methods()
    methods = {"blend": good, "m1": good, "m2": flat, "blend without m1": flat, "tfidf": flat,
               "judge: j": MethodScores("judge: j", None, labels)}
    pairs = {(d.a, d.b) for d in compare(methods, labels, range(len(labels)), ["m1", "m2"], n_draws=200)}
    assert pairs == {("blend", "judge: j"), ("blend", "blend without m1"), ("blend", "m1"), ("blend", "m2"),
                     ("blend", "tfidf"), ("m1", "m2")}
