"""Sampling until decided: after each round, decide every task, and give the items where the variant
and the baseline disagree most one more sample on both sides, until every verdict is decided or
the samples per item reach `max_k`.

Looking again after every round and stopping as soon as a verdict appears would inflate the
error rates of a fixed-sample test. So the procedure spends alpha with Bonferroni over its planned
looks: round r may raise an item's samples to at most k0 + r, so there are at most
L = max_k - k0 + 1 looks, and every look decides at alpha / L. By the union bound the chance of any
wrong verdict over the whole procedure (better or worse when nothing changed, equivalent when the
true difference is ±margin) stays below alpha; `tests/test_sequential.py` checks it by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

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

RULE = "Bonferroni alpha-spending over the planned looks (alpha / L per look, L = max_k - k + 1)"


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
    alpha = ALPHA / planned_looks(k0, max_k)
    decisions = {
        name: decide([items], margin, n_boot=n_boot, seed=seed + look, alpha=alpha)
        for name, items in tasks.items()
    }
    cap = min(max_k, k0 + look + 1)
    extend = {
        name: _most_disagreeing(items, cap) if decisions[name].verdict == VERDICT_UNDECIDED else ()
        for name, items in tasks.items()
    }
    return RoundPlan(look, alpha, decisions, extend)


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
