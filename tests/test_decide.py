"""Decisions on paired differences: the TOST equivalence rule, better / worse / undecided, and the
samples that would decide, including the floor the spread between items sets."""

from __future__ import annotations

import numpy as np
import pytest

from quantscope.analysis.decide import (
    VERDICT_BETTER,
    VERDICT_EQUIVALENT,
    VERDICT_UNDECIDED,
    VERDICT_WORSE,
    PairedItems,
    decide,
    verdict_of,
)


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


def test_identical_answers_are_equivalent() -> None:
    same = np.tile([[1, 0]], (50, 1))
    d = decide([items(same, same)])
    assert d.verdict == VERDICT_EQUIVALENT and d.delta == 0.0 and d.samples_needed is None


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


def test_several_tasks_weigh_the_same_and_resample_within_tasks() -> None:
    big = items(np.ones((100, 1)), np.zeros((100, 1)))  # +1 on every item
    small = items(np.zeros((10, 1)), np.zeros((10, 1)))  # 0 on every item
    d = decide([big, small])
    assert d.delta == pytest.approx(0.5) and d.items == 110
    assert d.ci95 == pytest.approx((0.5, 0.5))
