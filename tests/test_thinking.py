"""The censored thinking length (`analysis.thinking`): the Kaplan–Meier median against a hand
computation, numpy's median and statsmodels' Kaplan–Meier curve, and its paired ratio's CI
against a simulation whose true ratio is known."""

from __future__ import annotations

import numpy as np
import pytest

from quantscope.analysis.thinking import (
    MAX_BINS,
    _bins,
    _Counter,
    _medians,
    km_median,
    median_text,
    paired_thinking,
    thinking_censored,
    thinking_length,
)

survfunc = pytest.importorskip(
    "statsmodels.duration.survfunc", reason="statsmodels (dev extra) is the oracle"
)


def _median_from_statsmodels(tokens: np.ndarray, censored: np.ndarray) -> float:
    """The median read off statsmodels' Kaplan–Meier curve with our stated convention: the first
    time survival is at most 1/2, the midpoint to the next drop where it is exactly 1/2."""
    curve = survfunc.SurvfuncRight(tokens, (~censored).astype(int))
    times, survival = curve.surv_times, curve.surv_prob
    reached = np.flatnonzero(survival <= 0.5 + 1e-9)
    if not reached.size:
        return float("nan")
    first = reached[0]
    if abs(survival[first] - 0.5) > 1e-9:
        return float(times[first])
    below = np.flatnonzero(survival < 0.5 - 1e-9)
    return float((times[first] + times[below[0]]) / 2) if below.size else float("nan")


def test_a_hand_computed_median() -> None:
    """Lengths 1..5, the third censored: survival 4/5, 3/5, then at 4 with two at risk 3/5 · 1/2
    = 0.3 <= 1/2, so the median is 4 (the plain median, 3, would take the censored 3 as a length)."""
    assert km_median(np.array([1, 2, 3, 4, 5]), np.array([0, 0, 1, 0, 0], dtype=bool)) == 4.0
    # every sample censored at the largest length: not identified once half are censored
    assert np.isnan(km_median(np.array([10, 20, 30, 40, 40, 40]), np.array([0, 0, 0, 1, 1, 1], dtype=bool)))
    assert km_median(np.array([10, 20, 30, 40, 40]), np.array([0, 0, 0, 1, 1], dtype=bool)) == 30.0


def test_without_censoring_it_is_numpys_median() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 40, 41):
        tokens = rng.integers(1, 50, size=size).astype(float)
        assert km_median(tokens, np.zeros(size, dtype=bool)) == np.median(tokens)


def test_it_matches_statsmodels_kaplan_meier_curve_with_ties_and_censoring() -> None:
    rng = np.random.default_rng(1)
    checked = identified = 0
    for _ in range(400):
        size = int(rng.integers(1, 60))
        tokens = rng.integers(1, 25, size=size).astype(float)  # many ties
        censored = rng.random(size) < rng.random() * 0.7
        ours, theirs = km_median(tokens, censored), _median_from_statsmodels(tokens, censored)
        assert ours == theirs or (np.isnan(ours) and np.isnan(theirs)), (tokens, censored)
        checked += 1
        identified += not np.isnan(ours)
    assert identified > checked / 2  # the comparison is mostly between numbers


def _resampled_medians(
    tokens: np.ndarray, censored: np.ndarray, weights: np.ndarray, dense: bool = False
) -> np.ndarray:
    """The bootstrap's medians with each sample its own item, drawn `weights` times (rows)."""
    values = _bins(tokens)
    cut = np.unique(np.searchsorted(values, tokens[censored]))
    counter = _Counter((tokens, censored, np.arange(tokens.size)), values, cut, tokens.size)
    if dense:  # the matrix-product path a large side takes: one histogram row per item
        counter.histogram = np.zeros((tokens.size, counter.width), dtype=np.float32)
        counter.histogram[np.arange(tokens.size), counter.at] = 1
    return _medians(values, *counter.split(counter.weights(weights)))


def test_bootstrap_weights_equal_copies_of_the_samples() -> None:
    """The resampled medians weight each sample by its item's draws: the same as repeating it."""
    rng = np.random.default_rng(2)
    tokens = rng.integers(1, 30, size=50).astype(float)
    censored = rng.random(50) < 0.3
    weights = rng.integers(0, 4, size=(20, 50))
    sparse, dense = (_resampled_medians(tokens, censored, weights, dense=d) for d in (False, True))
    np.testing.assert_array_equal(sparse, dense)  # both counting paths agree
    for row, median in zip(weights, sparse, strict=True):
        copies = np.repeat(np.arange(50), row)
        expected = _median_from_statsmodels(tokens[copies], censored[copies])
        assert median == expected or (np.isnan(median) and np.isnan(expected))


def test_with_many_distinct_lengths_the_bootstrap_rounds_up_to_the_next_bin() -> None:
    rng = np.random.default_rng(4)
    tokens = rng.integers(1, 30_000, size=4000).astype(float)
    censored = tokens > 25_000
    values = _bins(tokens)
    assert values.size <= MAX_BINS and values[-1] == tokens.max()
    (binned,) = _resampled_medians(tokens, censored, np.ones((1, tokens.size), dtype=np.int64))
    exact = km_median(tokens, censored)
    assert exact <= binned <= values[np.searchsorted(values, exact)]


def test_a_sample_cut_in_its_answer_finished_thinking() -> None:
    truncated = np.array([True, True, False])
    assert thinking_censored(truncated, np.array([0, 7, 0])).tolist() == [True, False, False]
    length = thinking_length(np.array([100, 400, 400]), np.array([False, True, True]))
    assert not length.identified and median_text(length) == "≥400" and length.censored == pytest.approx(2 / 3)
    assert median_text(thinking_length(np.array([100, 200, 400]), np.array([False, False, True]))) == "200"


def test_the_paired_ratio_is_taken_on_the_shared_items() -> None:
    items = [f"i{i}" for i in range(20) for _ in range(2)]
    tokens = np.array([100.0 if i < 10 else 900.0 for i in range(20) for _ in range(2)])
    none = np.zeros(40, dtype=bool)
    same = paired_thinking((items[:20], tokens[:20], none[:20]), (items, tokens, none), n_boot=200)
    assert same.items == 10 and same.ratio == 1.0 and (same.ci_low, same.ci_high) == (1.0, 1.0)
    assert not same.significant
    double = paired_thinking((items, 2 * tokens, none), (items, tokens, none), n_boot=200)
    assert double.ratio == 2.0 and double.significant


def test_the_ratio_ci_covers_the_true_ratio_in_simulation() -> None:
    """Per item a scale s ~ lognormal; the baseline thinks s · Exp(1) tokens, the variant 1.3 times
    as long in distribution, both cut at a cap that censors about 11% of the baseline and 17% of
    the variant: the true ratio of medians is 1.3. Over 150 simulated studies (40 items × 4
    samples) the paired 95% CI must cover 1.3 about 95% of the time (measured: 95.3%) and exclude
    1.0, no change, often enough to show it can see one (measured: 32%)."""
    rng = np.random.default_rng(3)
    reps, items, k, cap = 150, 40, 4, 2.5
    covered = detected = 0
    names = [f"i{i}" for i in range(items) for _ in range(k)]
    for rep in range(reps):
        scale = np.repeat(rng.lognormal(0.0, 0.5, size=items), k)
        base = scale * rng.exponential(size=items * k)
        ours = 1.3 * scale * rng.exponential(size=items * k)
        change = paired_thinking(
            (names, np.minimum(ours, cap), ours >= cap), (names, np.minimum(base, cap), base >= cap), 300, rep
        )
        covered += change.ci_low <= 1.3 <= change.ci_high
        detected += change.significant
    assert 0.90 <= covered / reps <= 0.99, covered / reps
    assert detected / reps >= 0.2, detected / reps
