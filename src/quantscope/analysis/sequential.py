"""Sampling until decided: after each round, decide every task, and give the items where the variant
and the baseline disagree most one more sample on both sides, until every verdict is decided or
the samples per item reach `max_k`.

Looking again after every round and stopping as soon as a verdict appears would inflate the
error rates of a fixed-sample test. Round r may raise an item's samples to at most k0 + r, so there
are at most L = max_k - k0 + 1 looks, and the levels are spent over them:
- better / worse at alpha / (2 L) per look: Bonferroni's alpha / L bounds a false difference over
  the whole procedure only when each look's test holds its level, and here later looks sample the
  items that disagreed, so their tests depend on earlier outcomes; in simulation alpha / L then
  read better or worse 6% of the time with nothing changed, alpha / (2 L) under 1%;
- equivalent at Pocock's nominal level for L looks (`pocock_alpha`) for each of the two one-sided
  tests: the level at which a test repeated L times on accumulating data is wrong at most alpha of
  the time overall; less conservative than alpha / L because successive looks share most of their
  data (for L = 12: 0.0097 against 0.0042).
Every look uses Student-t intervals on the per-item differences (`decide(method="t")`), which hold
their level at these small alphas where the percentile bootstrap does not. `tests/test_sequential.py`
checks by simulation that wrong verdicts (better or worse when nothing changed, equivalent when the
true difference is ±margin) stay at or below 5%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from quantscope.analysis.decide import (
    DEFAULT_MARGIN,
    VERDICT_UNDECIDED,
    Decision,
    PairedItems,
    decide,
)
from quantscope.analysis.metrics import DEFAULT_BOOTSTRAP

ALPHA = 0.05
EXTEND_FRACTION = 0.5
"""The share of a task's items (those that disagree most) that get another sample each round."""

RULE = (
    "alpha spent over the L = max_k - k + 1 planned looks: 0.05 / (2 L) per look for better / worse, "
    "Pocock's boundary for equivalence"
)


@dataclass(frozen=True)
class RoundPlan:
    """One look: the decision per task at this look's alpha, the items of each undecided task that
    get one more sample on both sides, and whether the procedure stops here."""

    look: int
    alpha: float
    decisions: Mapping[str, Decision]
    extend: Mapping[str, tuple[str, ...]]

    @property
    def done(self) -> bool:
        """True when every task is decided, or nothing is left to sample."""
        return not any(self.extend.values())


def planned_looks(k0: int, max_k: int) -> int:
    """The looks the procedure can take from `k0` to `max_k` samples per item (the initial one included)."""
    return max(1, max_k - k0 + 1)


def plan_round(
    tasks: Mapping[str, PairedItems],
    look: int,
    *,
    k0: int,
    max_k: int,
    margin: float = DEFAULT_MARGIN,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> RoundPlan:
    """Decide every task at look `look` (0 = the initial samples) and choose what to sample next.

    An undecided task extends the `EXTEND_FRACTION` of its items that disagree most (largest |d_i|,
    then the largest within-item variance) among those still below min(max_k, k0 + look + 1)
    samples on both sides; items on which both sides were unanimous and agree carry no evidence
    of a difference and are left alone.
    """
    looks = planned_looks(k0, max_k)
    alpha, alpha_eq = ALPHA / (2 * looks), pocock_alpha(looks)
    decisions = {
        name: decide(
            [items], margin, n_boot=n_boot, seed=seed + look, alpha=alpha, alpha_equivalence=alpha_eq
        )
        for name, items in tasks.items()
    }
    cap = min(max_k, k0 + look + 1)
    extend = {
        name: _most_disagreeing(items, cap) if decisions[name].verdict == VERDICT_UNDECIDED else ()
        for name, items in tasks.items()
    }
    return RoundPlan(look, alpha, decisions, extend)


@lru_cache(maxsize=64)
def pocock_alpha(looks: int, alpha: float = ALPHA, paths: int = 100_000) -> float:
    """Pocock's nominal two-sided level for `looks` equally spaced looks at overall level `alpha`:
    the c with P(max_r |S_r| / sqrt(r) >= c) = alpha for a Gaussian random walk S, found by a
    seeded Monte Carlo (deterministic), returned as 2 (1 - Phi(c))."""
    if looks <= 1:
        return alpha
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal((paths, looks)), axis=1) / np.sqrt(np.arange(1, looks + 1))
    boundary = float(np.quantile(np.abs(walk).max(axis=1), 1 - alpha))
    return 2 * (1 - NormalDist().cdf(boundary))


def _most_disagreeing(items: PairedItems, cap: int) -> tuple[str, ...]:
    unanimous = np.isin(items.mean, (0.0, 1.0)) & (items.mean == items.other_mean)
    open_ = (items.k < cap) & (items.other_k < cap) & ~unanimous
    if not open_.any():
        return ()
    spread = _shrunk_variance(items.mean, items.k) + _shrunk_variance(items.other_mean, items.other_k)
    order = np.lexsort((-spread, -np.abs(items.diff)))
    chosen = [i for i in order if open_[i]][: max(1, math.ceil(EXTEND_FRACTION * len(items)))]
    return tuple(str(items.item_ids[i]) for i in sorted(chosen))


def _shrunk_variance(mean: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Bernoulli variance of each item's mean, with the mean pulled towards 1/2 by one half-sample
    on each side (so an item seen once is not taken as certain)."""
    p = (mean * k + 0.5) / (k + 1)
    return p * (1 - p) / k
