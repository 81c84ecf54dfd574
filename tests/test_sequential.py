"""Sampling until decided, simulated through the shipped loop (`sequential.until_decided`, the one
`adaptive.eval_until_decided` runs): wrong verdicts stay at or below 5%, the estimate is not pulled
towards 0, the procedure has power, and a control shows the check fails on the old selection rule
(extend the items that disagree most), so it is a check that can fail."""

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
)
from quantscope.analysis.sequential import plan_round, planned_looks, pocock_alpha, until_decided
from quantscope.analysis.simulation import Pool, draw_pool, paired_from_pool, replay

ITEMS, MAX_K, MARGIN = 60, 16, 0.10
RUNS = 120


def _rate(verdicts: list[str], wanted: set[str]) -> float:
    return sum(v in wanted for v in verdicts) / len(verdicts)


def _old_rule_replay(pool: Pool, k0: int, max_k: int, margin: float) -> tuple[str, float]:
    """The selection rule issue 27 removed, driven by the shipped decisions: each round, the half of
    an undecided task's items with the largest |d_i| get one more sample on both sides."""
    counts = np.full(pool.items, k0)

    def paired() -> dict[str, PairedItems]:
        return {"t": paired_from_pool(pool, counts, counts)}

    def extend(plan) -> None:
        if plan.decisions["t"].verdict != VERDICT_UNDECIDED:
            return
        items = paired()["t"]
        cap = min(max_k, k0 + plan.look + 1)
        open_ = (counts < cap) & ~(np.isin(items.mean, (0.0, 1.0)) & (items.mean == items.other_mean))
        order = [i for i in np.argsort(-np.abs(items.diff), kind="stable") if open_[i]]
        counts[order[: math.ceil(pool.items / 2)]] += 1

    rounds = until_decided(paired, extend, k0=k0, max_k=max_k, margin=margin)
    return rounds[-1].decisions["t"].verdict, rounds[-1].decisions["t"].delta


def test_false_equivalence_at_the_margin_stays_at_or_below_five_percent() -> None:
    """Defect 1: 60 items, accuracies U(0.3, 0.9), margin ±10, true Δ -10, max k 16: extending the
    items that disagreed most read "equivalent" in 32% of runs, the delta averaging -8.1 for -10.0."""
    rng = np.random.default_rng(27)
    runs = [replay(draw_pool(rng, ITEMS, -MARGIN, "uniform", MAX_K), 2, MAX_K, MARGIN) for _ in range(RUNS)]
    assert _rate([r.verdict for r in runs], {VERDICT_EQUIVALENT}) <= 0.05
    assert abs(np.mean([r.adjusted for r in runs]) + MARGIN) <= 0.01  # the adjusted delta: within 1 point


def test_the_same_check_fails_on_the_old_selection_rule() -> None:
    rng = np.random.default_rng(27)
    runs = [
        _old_rule_replay(draw_pool(rng, ITEMS, -MARGIN, "uniform", MAX_K), 2, MAX_K, MARGIN)
        for _ in range(RUNS)
    ]
    assert _rate([verdict for verdict, _ in runs], {VERDICT_EQUIVALENT}) > 0.15
    assert np.mean([delta for _, delta in runs]) > -MARGIN + 0.01  # pulled towards 0


def test_no_difference_reads_equivalent_often_and_better_or_worse_rarely() -> None:
    """Power as well as error: at Δ = 0 the procedure says equivalent (a procedure that never does
    would pass the error checks trivially) and rarely better or worse."""
    rng = np.random.default_rng(3)
    runs = [replay(draw_pool(rng, ITEMS, 0.0, "uniform", MAX_K), 2, MAX_K, MARGIN) for _ in range(60)]
    verdicts = [r.verdict for r in runs]
    assert _rate(verdicts, {VERDICT_BETTER, VERDICT_WORSE}) <= 0.05
    assert _rate(verdicts, {VERDICT_EQUIVALENT}) >= 0.8


def test_a_clear_difference_is_decided_early_with_few_samples() -> None:
    rng = np.random.default_rng(3)
    run = replay(draw_pool(rng, ITEMS, -0.3, "uniform", MAX_K), 2, MAX_K, 0.02)
    assert run.verdict == VERDICT_WORSE and run.generations == 2 * ITEMS * 2 and run.looks == 1


def _paired(ours: list[list[float]], theirs: list[list[float]]) -> PairedItems:
    def stats(samples: list[list[float]]):
        mean = np.array([np.mean(s) for s in samples])
        var = np.array([np.var(s, ddof=1) if len(s) > 1 else np.nan for s in samples])
        return mean, var, np.array([len(s) for s in samples])

    (m, v, k), (om, ov, ok) = stats(ours), stats(theirs)
    return PairedItems(tuple(str(i) for i in range(len(ours))), m, om, v, ov, k, ok)


def test_every_item_of_an_undecided_task_is_extended_whatever_its_outcomes() -> None:
    rng = np.random.default_rng(0)
    same = _paired([[1.0, 1.0]] * 200, [[1.0, 1.0]] * 200)
    noisy = [list((rng.random(2) < 0.6).astype(float)) for _ in range(30)]
    mixed = _paired(noisy, [list((rng.random(2) < 0.6).astype(float)) for _ in range(30)])
    plan = plan_round({"same": same, "mixed": mixed}, 0, k0=2, max_k=4, margin=0.02)
    assert plan.decisions["same"].verdict == VERDICT_EQUIVALENT and plan.extend["same"] == {}
    assert plan.decisions["mixed"].verdict == VERDICT_UNDECIDED
    assert plan.extend["mixed"] == dict.fromkeys(mixed.item_ids, 3)  # all 30, unanimous ones too
    assert plan.extend_baseline["mixed"] == dict.fromkeys(mixed.item_ids, 3)
    # three looks: better / worse at 0.05 / 3 (Bonferroni over looks), equivalence at Pocock's level
    assert plan.alpha == pytest.approx(0.05 / 3)
    assert plan.decisions["mixed"].alpha_equivalence == pocock_alpha(3) and 0.05 / 3 < pocock_alpha(3) < 0.05


def test_the_variant_catches_up_with_a_baseline_that_has_more_samples() -> None:
    """Defect 5: baseline -k 4, variant -k 2: every item's baseline count was already above the
    look's cap, so nothing was extended and the procedure stopped at once, undecided."""
    rng = np.random.default_rng(1)
    ours = [list((rng.random(2) < 0.55).astype(float)) for _ in range(40)]
    theirs = [list((rng.random(4) < 0.6).astype(float)) for _ in range(40)]
    plan = plan_round({"t": _paired(ours, theirs)}, 0, k0=2, max_k=16, margin=0.02)
    assert plan.decisions["t"].verdict == VERDICT_UNDECIDED and not plan.done
    assert plan.extend["t"] == {str(i): 4 for i in range(40)}  # up to the baseline's 4
    assert plan.extend_baseline["t"] == {}


def test_each_look_uses_student_t_intervals_at_its_alpha() -> None:
    """The docstring promised Student-t intervals while the code ran the percentile bootstrap."""
    from scipy import stats

    rng = np.random.default_rng(8)
    ours = [list((rng.random(3) < 0.5).astype(float)) for _ in range(50)]
    theirs = [list((rng.random(3) < 0.6).astype(float)) for _ in range(50)]
    items = _paired(ours, theirs)
    plan = plan_round({"t": items}, 1, k0=2, max_k=8, margin=0.05)
    d = plan.decisions["t"]
    looks = planned_looks(2, 8)
    expected = stats.ttest_rel(items.mean, items.other_mean).confidence_interval(1 - 0.05 / looks)
    assert d.ci95 == pytest.approx(tuple(expected), rel=1e-9)
