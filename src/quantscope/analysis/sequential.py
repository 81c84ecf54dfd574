"""Sampling until decided: a group sequential design over samples per item (Pocock 1977, "Group
sequential methods in the design and analysis of clinical trials", Biometrika 64:191-199;
Jennison & Turnbull 2000, "Group Sequential Methods with Applications to Clinical Trials").

After each round every task is decided, and every shared item of a task still undecided gets one
more sample on both sides (an item whose sides differ in samples first has the smaller side
brought up to the larger, whatever the larger's k), until every task is decided or the items
reach `max_k`. Which items get more samples never depends on their outcomes, only whether their
task goes on (the ordinary group sequential stopping rule), so every look's per-item differences
are unbiased. The rule this replaces extended only the items that disagreed most: those regressed
towards their truth while the others kept their lucky values, pulling the mean towards 0 (28-58%
false "equivalent" in simulation at a true difference of the margin).

Looking after every round and stopping at the first verdict would inflate the error rates of a
fixed-sample test. Round r raises the items to at most k0 + r + 1 samples, so there are at most
L = max_k - k0 + 1 looks, and the levels are spent over them:
- better / worse at alpha / L per look (Bonferroni over the looks, valid however the looks are
  correlated), with Holm's correction over the tasks within a look (`decide.in_family`);
- equivalent at Pocock's nominal level for L looks (`pocock_alpha`) for each of the two one-sided
  tests: the level at which a test repeated L times on accumulating data is wrong at most alpha of
  the time overall; less conservative than alpha / L because successive looks share most of
  their data (for L = 12: 0.0097 against 0.0042).
Every look uses `decide`'s Student-t intervals on the per-item differences (with its variance floor
and its minimum items for equivalence), which hold their level at these small alphas where a
percentile bootstrap over 20-60 items does not. The delta at the stop is the plain mean over items:
stopping at the first verdict biases it slightly (Whitehead 1986, Biometrika 73:573-581).
`benchmarks/sequential_errors.py` measures the error rates, that bias, the power and the samples
used, on simulated items run through `until_decided`, the loop `adaptive.eval_until_decided` runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from quantscope.analysis.decide import (
    ALPHA,
    DEFAULT_MARGIN,
    VERDICT_UNDECIDED,
    Decision,
    PairedItems,
    decide,
    in_family,
    t_quantile,
    variance_parts,
)

RULE = (
    "every item of an undecided task gets one more sample on both sides each round (never chosen by "
    "its outcomes); alpha spent over the L = max_k - k + 1 planned looks: 0.05 / L per look for "
    "better / worse (Holm over tasks), Pocock's boundary for equivalence"
)

Extension = Mapping[str, Mapping[str, int]]
"""task -> item id -> the samples of that item one side should have after the round."""


@dataclass(frozen=True)
class RoundPlan:
    """One look: the decision per task at this look's alphas, and for each undecided task the
    samples per item each side should have next (`extend`: the variant; `extend_baseline`: the
    baseline; only items that need more appear)."""

    look: int
    alpha: float
    decisions: Mapping[str, Decision]
    extend: Extension
    extend_baseline: Extension
    alpha_equivalence: float
    spread: Mapping[str, tuple[float, float]]
    """task -> (between-item, within-item) variance of its mean difference at this look
    (`decide.variance_parts`), the model `adjusted_delta` runs on."""

    @property
    def done(self) -> bool:
        """True when every task is decided, or nothing is left to sample."""
        return not any(self.extend.values()) and not any(self.extend_baseline.values())


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
) -> RoundPlan:
    """Decide every task at look `look` (0 = the initial samples) and plan the next samples.

    Every shared item of an undecided task is planned: where one side has fewer samples than the
    other it catches up, else both get one more; never above `max_k`. Tasks are one family per
    look (Holm) at this look's better / worse level.
    """
    looks = planned_looks(k0, max_k)
    alpha, alpha_eq = ALPHA / looks, pocock_alpha(looks)
    names = list(tasks)
    decided = in_family([decide([tasks[n]], margin, alpha=alpha, alpha_equivalence=alpha_eq) for n in names])
    decisions = dict(zip(names, decided, strict=True))
    extend, extend_baseline = {}, {}
    for name in names:
        undecided = decisions[name].verdict == VERDICT_UNDECIDED
        extend[name], extend_baseline[name] = _next_samples(tasks[name], max_k) if undecided else ({}, {})
    spread = {name: variance_parts([tasks[name]])[:2] for name in names if len(tasks[name]) > 1}
    return RoundPlan(look, alpha, decisions, extend, extend_baseline, alpha_eq, spread)


def _next_samples(items: PairedItems, max_k: int) -> tuple[dict[str, int], dict[str, int]]:
    """Per item, the samples each side should have after this round: the larger side's count where
    the two differ, one more than both where they agree, at most `max_k`."""
    larger = np.maximum(items.k, items.other_k)
    target = np.minimum(max_k, np.where(items.k == items.other_k, larger + 1, larger)).astype(int)
    ids = items.item_ids
    ours = {ids[i]: int(target[i]) for i in np.flatnonzero(items.k < target)}
    theirs = {ids[i]: int(target[i]) for i in np.flatnonzero(items.other_k < target)}
    return ours, theirs


def until_decided(
    paired: Callable[[], Mapping[str, PairedItems]],
    extend: Callable[[RoundPlan], None],
    *,
    k0: int,
    max_k: int,
    margin: float = DEFAULT_MARGIN,
    on_round: Callable[[RoundPlan], None] | None = None,
) -> tuple[RoundPlan, ...]:
    """The procedure's loop: at each look, plan a round on what `paired()` returns now (task ->
    PairedItems), report it to `on_round`, stop when it is done, else let `extend(plan)` add the
    planned samples. Returns every look's plan (the last holds the final decisions).
    `adaptive.eval_until_decided` runs it on a store and engines; `analysis.simulation` on
    simulated items."""
    rounds = []
    for look in range(planned_looks(k0, max_k)):
        plan = plan_round(paired(), look, k0=k0, max_k=max_k, margin=margin)
        rounds.append(plan)
        if on_round is not None:
            on_round(plan)
        if plan.done:
            break
        extend(plan)
    return tuple(rounds)


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


def adjusted_delta(rounds: Sequence[RoundPlan], task: str, paths: int = 4000, seed: int = 0) -> float:
    """`task`'s delta at the stop corrected for stopping at the first verdict (fraction): the
    Rao-Blackwell estimate E[delta at the first look | the look it stopped at, the delta there]
    (Emerson & Fleming 1990, "Parameter estimation following group sequential hypothesis testing",
    Biometrika 77:875-892), unbiased when the looks' deltas move as a Gaussian process with the
    variances the data show (`RoundPlan.spread`: a between-item part that more samples keep and a
    within-item part they shrink). By Monte Carlo: Brownian bridges from the stop back to the first
    look, kept where every earlier look was undecided at that look's boundaries (its alphas and
    observed standard error), averaged at the first look. The plain delta when it stopped at the
    first look, or when the bridges cannot be kept (the Gaussian model is too far off)."""
    looks = _looks_of(rounds, task)
    final = looks[-1].decisions[task]
    if len(looks) == 1 or task not in looks[-1].spread:
        return final.delta
    between = looks[-1].spread[task][0]
    within_now = [r.spread[task][1] for r in looks]
    variance = np.array([between + max(w, 1e-12) for w in within_now])  # the model, unfloored
    information = 1.0 / np.maximum.accumulate(variance[::-1])[::-1]
    rng = np.random.default_rng(seed)
    level = np.empty((paths, len(looks)))
    level[:, -1] = information[-1] * final.delta
    for r in range(len(looks) - 2, -1, -1):  # S(I_r) | S(I_r+1) on the bridge from 0 to the stop
        ratio = information[r] / information[r + 1]
        spread = math.sqrt(max(information[r] * (1 - ratio), 0.0))
        level[:, r] = ratio * level[:, r + 1] + spread * rng.standard_normal(paths)
    estimates = level / information
    kept = np.ones(paths, dtype=bool)
    for r, plan in enumerate(looks[:-1]):
        kept &= ~_decided(estimates[:, r], plan.decisions[task])
    return float(estimates[kept, 0].mean()) if kept.sum() >= 20 else final.delta


def _looks_of(rounds: Sequence[RoundPlan], task: str) -> list[RoundPlan]:
    """The looks at which `task`'s data were new: every look up to and including the one after its
    last extension (later looks re-decide the same data)."""
    extended = [i for i, r in enumerate(rounds) if r.extend.get(task) or r.extend_baseline.get(task)]
    last = extended[-1] + 1 if extended else 0
    return list(rounds[: min(last, len(rounds) - 1) + 1])


def _decided(delta: np.ndarray, d: Decision) -> np.ndarray:
    """Where a look's decision rule, at its alphas and observed standard error, gives a verdict."""
    if math.isnan(d.se):
        return np.zeros(delta.shape, dtype=bool)
    different = np.abs(delta) > t_quantile(1 - d.alpha / 2, d.df) * d.se
    if d.agreement_bound > d.margin:
        return different
    half = t_quantile(1 - d.alpha_equivalence, d.df) * d.se
    return different | ((delta - half > -d.margin) & (delta + half < d.margin))
