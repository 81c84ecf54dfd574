"""Simulated paired evaluations, to measure what sampling until decided guarantees.

Items: each item's baseline accuracy p_i is drawn from a distribution (`DISTRIBUTIONS`):
"uniform", U(0.3, 0.9), a benchmark of middling items; "reasoning", Beta(0.4, 0.4), most items
nearly always or never solved, as on AIME or GPQA with a reasoning model. The variant's accuracy
is q_i = expit(logit(p_i) + s), the shift s solved so that the mean of q - p over the distribution
is exactly the true difference `delta` (a loss falls on the items in between, as quantization
losses do; at delta 0, q = p). Every sample is an independent Bernoulli draw.

A run's generations are drawn in advance (`Pool`: `max_k` samples per item and side) and the
shipped procedure reads them in order, as a store replays resumable samples (sample j of an item
is the same whenever it is asked for): `replay` runs `sequential.until_decided`, the loop
`adaptive.eval_until_decided` runs, with only the generation step simulated.
`benchmarks/sequential_errors.py` and `tests/test_sequential.py` use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from quantscope.analysis.decide import PairedItems
from quantscope.analysis.sequential import adjusted_delta, until_decided
from quantscope.errors import QuantscopeError

DISTRIBUTIONS = ("uniform", "reasoning")
TASK = "simulated"
_EDGE = 1e-9  # keeps logit finite for accuracies drawn at 0 or 1


def item_accuracies(rng: np.random.Generator, dist: str, items: int) -> np.ndarray:
    """`items` baseline accuracies (fractions) drawn from `dist` (see the module docstring)."""
    if dist == "uniform":
        return rng.uniform(0.3, 0.9, items)
    if dist == "reasoning":
        return rng.beta(0.4, 0.4, items)
    raise QuantscopeError(f"unknown item distribution {dist!r}: use one of {', '.join(DISTRIBUTIONS)}")


def variant_accuracies(p: np.ndarray, delta: float, dist: str) -> np.ndarray:
    """The variant's accuracies: `p` shifted on the logit scale by the shift that moves the mean
    over `dist` by exactly `delta` (fraction); `p` itself at delta 0."""
    if delta == 0:
        return p.copy()
    return _expit(_logit(p) + logit_shift(delta, dist))


@lru_cache(maxsize=64)
def logit_shift(delta: float, dist: str) -> float:
    """The logit shift s with mean(expit(logit(p) + s) - p) = `delta` over `dist`, by bisection on
    a fixed, seeded sample of 400,000 accuracies (deterministic; error about 0.02 points)."""
    p = item_accuracies(np.random.default_rng(0), dist, 400_000)
    logits = _logit(p)
    low, high = -30.0, 30.0
    for _ in range(100):
        middle = (low + high) / 2
        if float(np.mean(_expit(logits + middle) - p)) < delta:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EDGE, 1 - _EDGE)
    return np.log(p) - np.log1p(-p)


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Pool:
    """A run's generations drawn in advance: correctness of sample j of item i for the variant
    (`ours`) and the baseline (`theirs`), shape (items, max_k), with running counts of correct
    samples (`*_hits[i, k]`: correct among the first k)."""

    ours: np.ndarray
    theirs: np.ndarray
    ours_hits: np.ndarray
    theirs_hits: np.ndarray

    @property
    def items(self) -> int:
        return int(self.ours.shape[0])


def draw_pool(rng: np.random.Generator, items: int, delta: float, dist: str, max_k: int) -> Pool:
    """One run's items and `max_k` samples per item and side, at true difference `delta`."""
    p = item_accuracies(rng, dist, items)
    q = variant_accuracies(p, delta, dist)
    ours = rng.random((items, max_k)) < q[:, None]
    theirs = rng.random((items, max_k)) < p[:, None]
    return Pool(ours, theirs, _running(ours), _running(theirs))


def _running(correct: np.ndarray) -> np.ndarray:
    hits = np.zeros((correct.shape[0], correct.shape[1] + 1), dtype=np.int64)
    np.cumsum(correct, axis=1, out=hits[:, 1:])
    return hits


def paired_from_pool(pool: Pool, k_ours: np.ndarray, k_theirs: np.ndarray) -> PairedItems:
    """The first `k_ours[i]` samples of item i on the variant's side and `k_theirs[i]` on the
    baseline's, as the PairedItems a store would give (item ids "0", "1", …)."""
    rows = np.arange(pool.items)

    def side(hits: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = hits[rows, k] / k
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(k > 1, mean * (1 - mean) * k / (k - 1), np.nan)
        return mean, var

    (mean, var), (other_mean, other_var) = side(pool.ours_hits, k_ours), side(pool.theirs_hits, k_theirs)
    return PairedItems(_ids(pool.items), mean, other_mean, var, other_var, k_ours.copy(), k_theirs.copy())


@lru_cache(maxsize=16)
def _ids(items: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(items))


@dataclass(frozen=True)
class Replayed:
    """One simulated run of sampling until decided: the final verdict, the delta at the stop and
    its adjusted value (`sequential.adjusted_delta`; fractions), the generations used on both
    sides together, and the looks taken."""

    verdict: str
    delta: float
    adjusted: float
    generations: int
    looks: int


def replay(pool: Pool, k0: int, max_k: int, margin: float) -> Replayed:
    """Run the shipped procedure (`sequential.until_decided`) on `pool`, from `k0` samples per item."""
    counts = {"ours": np.full(pool.items, k0), "theirs": np.full(pool.items, k0)}

    def paired() -> dict[str, PairedItems]:
        return {TASK: paired_from_pool(pool, counts["ours"], counts["theirs"])}

    def extend(plan) -> None:
        for side, wanted in (("ours", plan.extend[TASK]), ("theirs", plan.extend_baseline[TASK])):
            for item, k in wanted.items():
                counts[side][int(item)] = k

    rounds = until_decided(paired, extend, k0=k0, max_k=max_k, margin=margin)
    final = rounds[-1].decisions[TASK]
    used = int(counts["ours"].sum() + counts["theirs"].sum())
    return Replayed(final.verdict, final.delta, adjusted_delta(rounds, TASK), used, len(rounds))
