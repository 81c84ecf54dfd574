"""Decisions on paired differences: the TOST equivalence rule, better / worse / undecided, the
samples that would decide, the floor zero observed variance gets, Holm's correction, and an
independent oracle (scipy's `ttest_rel`, statsmodels' `ttost_paired`) on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantscope.analysis.decide import (
    VERDICT_BETTER,
    VERDICT_EQUIVALENT,
    VERDICT_UNDECIDED,
    VERDICT_WORSE,
    PairedItems,
    decide,
    holm,
    in_family,
    min_items_for_equivalence,
    paired_items,
    t_quantile,
    t_sf,
    verdict_of,
)
from quantscope.analysis.metrics import results_from_columns


def items(ours: np.ndarray, theirs: np.ndarray) -> PairedItems:
    """Per-item samples (rows = items, columns = samples; 1 = correct) as PairedItems."""
    k = ours.shape[1]
    var = ours.var(axis=1, ddof=1) if k > 1 else np.full(len(ours), np.nan)
    other_var = theirs.var(axis=1, ddof=1) if theirs.shape[1] > 1 else np.full(len(theirs), np.nan)
    return PairedItems(
        tuple(str(i) for i in range(len(ours))),
        ours.mean(axis=1),
        theirs.mean(axis=1),
        var,
        other_var,
        np.full(len(ours), k),
        np.full(len(theirs), theirs.shape[1]),
    )


def test_the_verdict_rules() -> None:
    assert verdict_of((-0.01, 0.01), (-0.008, 0.008), 0.02) == VERDICT_EQUIVALENT
    assert verdict_of((0.01, 0.2), (0.02, 0.18), 0.02) == VERDICT_BETTER
    assert verdict_of((-0.2, -0.01), (-0.18, -0.02), 0.02) == VERDICT_WORSE
    assert verdict_of((-0.05, 0.03), (-0.04, 0.02), 0.02) == VERDICT_UNDECIDED  # not significant is no tie
    # significant but tiny: the 90% CI inside the margin makes it equivalent, not worse
    assert verdict_of((-0.015, -0.001), (-0.013, -0.002), 0.02) == VERDICT_EQUIVALENT


def test_identical_answers_on_enough_items_are_equivalent() -> None:
    same = np.tile([[1, 0]], (200, 1))
    d = decide([items(same, same)])
    assert d.verdict == VERDICT_EQUIVALENT and d.delta == 0.0 and d.samples_needed is None
    assert d.ci90[0] < 0 < d.ci90[1]  # never a zero-width interval


def test_within_item_noise_is_decided_by_more_samples() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 0.9, size=(200, 1))
    ours, theirs = (rng.random((200, 2)) < p).astype(float), (rng.random((200, 2)) < p).astype(float)
    d = decide([items(ours, theirs)])
    assert d.verdict == VERDICT_UNDECIDED
    needed = d.samples_needed
    assert needed is not None and needed.k is not None and needed.k > 2
    assert needed.extra == 200 * (needed.k - 2) and "samples per item on 200 items" in needed.reason


def test_a_spread_between_items_that_more_samples_cannot_narrow_is_said() -> None:
    """30 items (as AIME has) whose difference is fixed per item (+1 or -1, every sample the
    same): the within-item variance is zero, so no number of samples narrows the CI to ±2 points."""
    ours = np.repeat(np.array([[1.0]] * 16 + [[0.0]] * 14), 4, axis=1)
    theirs = np.repeat(np.array([[0.0]] * 15 + [[1.0]] * 15), 4, axis=1)
    d = decide([items(ours, theirs)])
    assert d.verdict == VERDICT_UNDECIDED
    assert d.samples_needed is not None and d.samples_needed.k is None
    assert d.samples_needed.floor > 0.15
    assert "more samples per item cannot decide it" in d.samples_needed.reason


def test_several_tasks_weigh_the_same() -> None:
    rng = np.random.default_rng(1)
    big = items((rng.random((100, 2)) < 0.9).astype(float), (rng.random((100, 2)) < 0.4).astype(float))
    small = items((rng.random((10, 2)) < 0.5).astype(float), (rng.random((10, 2)) < 0.5).astype(float))
    d = decide([big, small])
    assert d.delta == pytest.approx((big.diff.mean() + small.diff.mean()) / 2) and d.items == 110


# ---- issue 27, defect 2: no verdict from zero observed variance -------------------------------


def test_one_paired_item_is_never_a_verdict() -> None:
    """Defect 2: one item the variant got right and the baseline wrong read "better", CI [+100, +100]."""
    one = items(np.array([[1.0]]), np.array([[0.0]]))
    d = decide([one])
    assert d.verdict == VERDICT_UNDECIDED and not d.significant
    assert d.samples_needed is not None and "one item" in d.samples_needed.reason


def test_items_that_all_agree_give_an_interval_that_does_not_collapse() -> None:
    """Defect 2: ten items on which both sides agree read "equivalent", CI [0, 0]: zero sample
    variance of paired 0/1 outcomes is no evidence of zero variance."""
    same = np.ones((10, 1))
    d = decide([items(same, same)])
    assert d.verdict == VERDICT_UNDECIDED
    assert d.ci95[1] - d.ci95[0] > 0.2  # the floor of one discordant pair in ten: SE 1/10
    ten_better = decide([items(np.ones((10, 1)), np.zeros((10, 1)))])
    assert ten_better.verdict == VERDICT_BETTER and ten_better.ci95[0] < 1.0 < ten_better.ci95[1]


def test_few_items_with_a_real_loss_rarely_read_equivalent() -> None:
    """Defect 2, simulated: 10 items at k = 1 on an easy benchmark (accuracy U(0.9, 1.0)) and a true
    loss of 10 points read "equivalent" at ±2 points whenever all ten items agreed (~15% of runs)."""
    rng = np.random.default_rng(5)
    runs, equivalent = 300, 0
    for _ in range(runs):
        p = rng.uniform(0.9, 1.0, size=(10, 1))
        ours, theirs = (rng.random((10, 1)) < p - 0.1).astype(float), (rng.random((10, 1)) < p).astype(float)
        equivalent += decide([items(ours, theirs)], 0.02).verdict == VERDICT_EQUIVALENT
    assert equivalent / runs <= 0.05


def test_equivalence_needs_enough_items_for_agreement_to_rule_out_the_margin() -> None:
    """With n items that all agree, the exact one-sided 95% bound on the rate of items that differ is
    1 - 0.05^(1/n) (about 3/n): equivalence at ±m needs (1 - m)^n <= 0.05."""
    for margin in (0.02, 0.05, 0.10):
        n = min_items_for_equivalence(margin)
        assert (1 - margin) ** n <= 0.05 < (1 - margin) ** (n - 1)
    assert min_items_for_equivalence(0.02) == 149
    many_agreeing = np.tile([[1.0, 0.0, 1.0, 1.0]], (148, 1))
    d = decide([items(many_agreeing, many_agreeing)], 0.02)
    assert d.ci90[1] < 0.02 and d.verdict == VERDICT_UNDECIDED  # inside the margin, yet too few items
    assert d.samples_needed is not None and "149 items" in d.samples_needed.reason


# ---- issue 27, defect 7: the t quantile -------------------------------------------------------


def test_t_quantile_and_tail_match_scipy_at_every_df() -> None:
    """The Cornish-Fisher expansion was off by 81% at 1 degree of freedom."""
    from scipy import stats

    for df in (1, 2, 3, 4.5, 7, 10, 29, 100, 1000):
        for p in (0.5, 0.6, 0.9, 0.95, 0.975, 0.99, 0.9995, 1 - 1e-6):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-12)
        for x in (0.0, 0.3, 1.0, 2.5, 8.0, 40.0):
            assert t_sf(x, df) == pytest.approx(stats.t.sf(x, df), rel=1e-9, abs=1e-300)
    assert t_quantile(0.05, 5) == pytest.approx(-t_quantile(0.95, 5))


# ---- issue 27, build 4: Holm's step-down over a family ----------------------------------------


def test_holm_matches_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(2)
    for m in (1, 2, 5, 17):
        p = rng.uniform(0, 0.1, m) ** rng.uniform(0.5, 2, m)
        assert holm(p) == pytest.approx(multipletests(p, method="holm")[1], rel=1e-12)
    assert holm([0.01, math.nan, 0.02]) == pytest.approx([0.02, math.nan, 0.02], nan_ok=True)


def test_a_family_of_decisions_is_corrected_by_holm() -> None:
    rng = np.random.default_rng(4)
    base = (rng.random((60, 2)) < 0.6).astype(float)
    worse = (rng.random((60, 2)) < 0.45).astype(float)
    decisions = [decide([items(worse, base)]), decide([items(base, base)])]
    family = in_family(decisions)
    assert [d.family for d in family] == [2, 2]
    assert family[0].p_adjusted == pytest.approx(min(1, 2 * decisions[0].p_value))
    # the verdict follows the adjusted p: significant alone at 0.05 / 2 < p < 0.05 is undecided in two
    edge = decide([items(worse, base)], alpha=0.05)
    assert (edge.p_value <= 0.05) == (edge.verdict == VERDICT_WORSE)


# ---- issue 27, build 7: an independent oracle -------------------------------------------------


def _rows(rng: np.random.Generator, variant: str, n_items: int, present: float, accuracy: np.ndarray):
    """Random rows: each item present with probability `present`, with 1-5 samples (unequal k)."""
    rows = []
    for i in range(n_items):
        if rng.random() < present:
            for j in range(int(rng.integers(1, 6))):
                rows.append((variant, f"i{i}", j, bool(rng.random() < accuracy[i])))
    return rows


def _results(rows):
    n = len(rows)
    return results_from_columns(
        {
            "variant": [r[0] for r in rows],
            "task": ["t"] * n,
            "item_id": [r[1] for r in rows],
            "sample": [r[2] for r in rows],
            "correct": [r[3] for r in rows],
            "finish_reason": ["stop"] * n,
            "completion_tokens": [10] * n,
            "thinking_tokens": [5] * n,
            "answer_tokens": [5] * n,
            "max_tokens": [100] * n,
            "seconds": [0.1] * n,
        }
    )


def _item_means(rows) -> dict[str, float]:
    """The oracle's own per-item accuracy, from the raw rows."""
    sums: dict[str, list[int]] = {}
    for _, item, _, correct in rows:
        sums.setdefault(item, []).append(int(correct))
    return {item: sum(v) / len(v) for item, v in sums.items()}


def test_paired_intervals_and_tost_match_scipy_and_statsmodels_on_random_data() -> None:
    """Unequal k per item and items only one side ran: our per-item differences, CI, p-value and
    TOST against scipy.stats.ttest_rel and statsmodels' ttost_paired on the same items."""
    from scipy import stats
    from statsmodels.stats.weightstats import ttost_paired

    rng = np.random.default_rng(27)
    checked = 0
    for _ in range(40):
        n_items = int(rng.integers(8, 400))
        accuracy = rng.beta(0.6, 0.6, n_items)
        shift = rng.normal(0, 0.05)
        ours = _rows(rng, "v", n_items, 0.85, np.clip(accuracy + shift, 0, 1))
        theirs = _rows(rng, "b", n_items, 0.9, accuracy)
        margin = float(rng.choice([0.02, 0.05, 0.10]))
        d = decide([paired_items(_results(ours), _results(theirs))], margin)
        a, b = _item_means(ours), _item_means(theirs)
        shared = sorted(a.keys() & b.keys())
        x, y = np.array([a[i] for i in shared]), np.array([b[i] for i in shared])
        assert d.items == len(shared) and d.delta == pytest.approx(float(np.mean(x - y)), abs=1e-12)
        if np.var(x - y, ddof=1) < 1 / len(shared):  # the floor binds: wider than scipy's, by design
            assert d.ci95[1] - d.ci95[0] > np.diff(stats.ttest_rel(x, y).confidence_interval()).item()
            continue
        test = stats.ttest_rel(x, y)
        assert d.p_value == pytest.approx(test.pvalue, rel=1e-9)
        assert d.ci95 == pytest.approx(tuple(test.confidence_interval(0.95)), rel=1e-9)
        assert d.ci90 == pytest.approx(tuple(test.confidence_interval(0.90)), rel=1e-9)
        p_tost = ttost_paired(x, y, -margin, margin)[0]
        assert d.p_equivalence == pytest.approx(p_tost, rel=1e-9)
        enough = len(shared) >= min_items_for_equivalence(margin)
        assert (d.verdict == VERDICT_EQUIVALENT) == (p_tost < 0.05 and enough)
        if d.verdict != VERDICT_EQUIVALENT:
            assert (d.verdict in (VERDICT_BETTER, VERDICT_WORSE)) == (test.pvalue < 0.05)
        checked += 1
    assert checked >= 30


def test_two_tasks_match_welchs_test_of_their_means() -> None:
    """The mean over two tasks of each task's mean difference has the variance and the
    Welch-Satterthwaite degrees of freedom of Welch's two-sample test (scipy's ttest_ind)."""
    from scipy import stats

    rng = np.random.default_rng(9)
    first = items((rng.random((40, 3)) < 0.7).astype(float), (rng.random((40, 3)) < 0.6).astype(float))
    second = items((rng.random((25, 1)) < 0.5).astype(float), (rng.random((25, 1)) < 0.5).astype(float))
    d = decide([first, second])
    welch = stats.ttest_ind(first.diff, -second.diff, equal_var=False)
    assert d.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    assert d.df == pytest.approx(welch.df, rel=1e-9)
