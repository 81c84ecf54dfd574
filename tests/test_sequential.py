"""Sampling until decided: the alpha-spending rule keeps wrong verdicts at or below 5% in simulation,
at no difference and at a difference of exactly the margin."""

from __future__ import annotations

import numpy as np
import pytest

from quantscope.analysis.decide import (
    VERDICT_BETTER,
    VERDICT_EQUIVALENT,
    VERDICT_UNDECIDED,
    VERDICT_WORSE,
    PairedItems,
)
from quantscope.analysis.sequential import plan_round, planned_looks, pocock_alpha

ITEMS, K0, MAX_K, MARGIN = 60, 2, 8, 0.02


def _paired(ours: list[list[float]], theirs: list[list[float]]) -> PairedItems:
    def stats(samples: list[list[float]]):
        mean = np.array([np.mean(s) for s in samples])
        var = np.array([np.var(s, ddof=1) if len(s) > 1 else np.nan for s in samples])
        return mean, var, np.array([len(s) for s in samples])

    (m, v, k), (om, ov, ok) = stats(ours), stats(theirs)
    return PairedItems(tuple(str(i) for i in range(len(ours))), m, om, v, ov, k, ok)


def run_procedure(rng: np.random.Generator, delta: float, k0: int = K0) -> tuple[str, int]:
    """One simulated sampling-until-decided run: (final verdict, generations per side)."""
    p = rng.uniform(0.3, 0.9, ITEMS)
    q = np.clip(p + delta, 0, 1)
    ours = [list((rng.random(k0) < q[i]).astype(float)) for i in range(ITEMS)]
    theirs = [list((rng.random(k0) < p[i]).astype(float)) for i in range(ITEMS)]
    for look in range(planned_looks(k0, MAX_K)):
        plan = plan_round({"t": _paired(ours, theirs)}, look, k0=k0, max_k=MAX_K, margin=MARGIN, n_boot=200)
        verdict = plan.decisions["t"].verdict
        if verdict != VERDICT_UNDECIDED or plan.done:
            return verdict, sum(len(s) for s in ours)
        for item in map(int, plan.extend["t"]):
            ours[item].append(float(rng.random() < q[item]))
            theirs[item].append(float(rng.random() < p[item]))
    return VERDICT_UNDECIDED, sum(len(s) for s in ours)


@pytest.mark.parametrize("k0", [2, 3])
@pytest.mark.parametrize(
    ("delta", "wrong"),
    [(0.0, {VERDICT_BETTER, VERDICT_WORSE}), (MARGIN, {VERDICT_EQUIVALENT}), (-MARGIN, {VERDICT_EQUIVALENT})],
)
def test_wrong_verdicts_stay_at_or_below_five_percent(delta: float, wrong: set[str], k0: int) -> None:
    rng = np.random.default_rng(11)
    verdicts = [run_procedure(rng, delta, k0)[0] for _ in range(80)]
    assert sum(v in wrong for v in verdicts) / len(verdicts) <= 0.05


def test_a_clear_difference_is_decided_early_with_few_samples() -> None:
    rng = np.random.default_rng(3)
    verdict, generated = run_procedure(rng, -0.3)
    assert verdict == VERDICT_WORSE and generated == ITEMS * K0  # decided at the first look


def test_only_undecided_tasks_extend_and_only_their_most_disagreeing_items() -> None:
    same = _paired([[1.0, 1.0]] * 10, [[1.0, 1.0]] * 10)
    # items 0-1 only the variant gets right, 2-3 only the baseline, 4-9 both: undecided at Δ = 0
    mixed = _paired(
        [[1.0, 1.0]] * 2 + [[0.0, 0.0]] * 2 + [[1.0, 1.0]] * 6, [[0.0, 0.0]] * 2 + [[1.0, 1.0]] * 8
    )
    plan = plan_round({"same": same, "mixed": mixed}, 0, k0=2, max_k=4, margin=MARGIN, n_boot=200)
    assert plan.decisions["same"].verdict == VERDICT_EQUIVALENT and plan.extend["same"] == ()
    assert plan.decisions["mixed"].verdict == VERDICT_UNDECIDED
    assert plan.extend["mixed"] == ("0", "1", "2", "3")  # the four that disagree; unanimous agreement waits
    # three looks: better / worse at 0.05 / 6, equivalence at Pocock's level
    assert plan.alpha == pytest.approx(0.05 / 6)
    assert plan.decisions["mixed"].alpha_equivalence == pocock_alpha(3) and 0.05 / 3 < pocock_alpha(3) < 0.05
