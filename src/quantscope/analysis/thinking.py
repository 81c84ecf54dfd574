"""How long a variant thinks when some generations hit the cap: a Kaplan–Meier median of thinking tokens.

A generation cut at the cap while still thinking has an unknown thinking length: at least what it
wrote. Percentiles of the raw counts take the cap as the length, so once 10% of the samples are cut
the p90 *is* the cap, for the baseline and every variant alike (+0% whatever happens). Here each
sample cut while thinking (`thinking_censored`: truncated with no answer token, so `</think>` never
came) is right-censored at its thinking tokens, and the length reported is the Kaplan–Meier median
(Kaplan & Meier 1958, "Nonparametric estimation from incomplete observations", JASA 53:457): the
smallest thinking length at which the estimated share of samples still thinking is at most one
half, or the midpoint of the two lengths around an estimate of exactly one half (R survival's
convention, so that with nothing censored it is the ordinary median). With every cut sample
censored at the cap it equals the plain median of all samples until half of them are cut; from
there on it is not identified (the median lies beyond the cap), and says so instead of a number.

Against the baseline (`paired_thinking`) both medians are taken over the items both ran, and the
ratio's 95% CI comes from a bootstrap over those items, resampled together on both sides (paired).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_TIE = 1e-9
"""Survival within this of 1/2 is taken as exactly 1/2 (a product of fractions rounds)."""
_CELLS = 4_000_000
"""Bootstrap resamples × items (or × lengths) held at once (memory: a few arrays this large)."""
MAX_BINS = 256
"""Distinct thinking lengths the bootstrap counts at, at most (see `_ratio_ci`)."""
_DENSE_FROM = 1_000
"""Samples on a side from which the bootstrap counts with a matrix product (`_Counter`)."""


@dataclass(frozen=True)
class ThinkingLength:
    """Thinking tokens of some samples: `median` the Kaplan–Meier median (NaN when not identified:
    half or more of the samples were cut before it), `longest` the longest thinking seen (tokens;
    the median is at least this when not identified), `censored` the share of samples cut while
    thinking, `samples` how many."""

    median: float
    longest: float
    censored: float
    samples: int

    @property
    def identified(self) -> bool:
        return not np.isnan(self.median)


@dataclass(frozen=True)
class ThinkingChange:
    """The variant's Kaplan–Meier median thinking against the baseline's on the items both ran:
    `ratio` = variant / baseline (NaN when either median is not identified), with a paired
    bootstrap 95% CI over those `items`; each side's `ThinkingLength` on them."""

    value: ThinkingLength
    baseline: ThinkingLength
    ratio: float
    ci_low: float
    ci_high: float
    items: int

    @property
    def significant(self) -> bool:
        return bool(self.ci_low > 1 or self.ci_high < 1)


def thinking_censored(truncated: np.ndarray, answer_tokens: np.ndarray) -> np.ndarray:
    """Per sample: cut at the cap while still thinking (its thinking length is only a lower bound).
    A sample cut in its answer finished thinking (`answer_tokens` counts the `</think>` tag)."""
    return np.asarray(truncated, dtype=bool) & (np.asarray(answer_tokens) == 0)


def km_median(tokens: np.ndarray, censored: np.ndarray) -> float:
    """The Kaplan–Meier median of `tokens` with `censored` samples right-censored (NaN: not
    identified, or no samples)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.size == 0:
        return float("nan")
    censored = np.asarray(censored, dtype=bool)
    values, at = np.unique(tokens, return_inverse=True)
    events = np.bincount(at, weights=~censored, minlength=values.size)[None, :]
    cut = np.bincount(at, weights=censored, minlength=values.size)[None, :]
    return float(_medians(values, events, cut)[0])


def thinking_length(tokens: np.ndarray, censored: np.ndarray) -> ThinkingLength:
    """The `ThinkingLength` of these samples (tokens; `censored` from `thinking_censored`)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.size == 0:
        nan = float("nan")
        return ThinkingLength(nan, nan, nan, 0)
    censored = np.asarray(censored, dtype=bool)
    return ThinkingLength(
        km_median(tokens, censored), float(tokens.max()), float(censored.mean()), tokens.size
    )


def paired_thinking(
    ours: tuple[Sequence[str], np.ndarray, np.ndarray],
    theirs: tuple[Sequence[str], np.ndarray, np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
) -> ThinkingChange:
    """The variant's (`ours`) Kaplan–Meier median thinking against the baseline's (`theirs`), each
    given per sample as (item ids, thinking tokens, censored), over the items both ran; the ratio's
    CI resamples those items together on both sides, `n_boot` times (seeded)."""
    shared = sorted(set(ours[0]) & set(theirs[0]))
    index = {item: i for i, item in enumerate(shared)}
    sides = [_side(rows, index) for rows in (ours, theirs)]
    value, base = (thinking_length(tokens, censored) for tokens, censored, _ in sides)
    ratio = (
        value.median / base.median if value.identified and base.identified and base.median else float("nan")
    )
    low, high = _ratio_ci(sides, len(shared), n_boot, seed) if shared else (float("nan"), float("nan"))
    return ThinkingChange(value, base, float(ratio), low, high, len(shared))


def _side(
    rows: tuple[Sequence[str], np.ndarray, np.ndarray], index: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One side's samples on the shared items: (tokens, censored, item index)."""
    items = np.array([index.get(str(item), -1) for item in rows[0]], dtype=np.int64)
    keep = items >= 0
    return np.asarray(rows[1], dtype=np.float64)[keep], np.asarray(rows[2], dtype=bool)[keep], items[keep]


def _medians(values: np.ndarray, events: np.ndarray, censored: np.ndarray) -> np.ndarray:
    """Kaplan–Meier medians from weighted counts at sorted distinct lengths `values`: row r of
    `events` / `censored` holds, per length, the weight of samples that finished / were censored
    there (a bootstrap resample's copies of each sample, or ones).

    At each length the survival is multiplied by 1 - events / at risk, the at-risk count holding
    everything not yet finished or censored before it (a sample censored at t was at risk at t).
    The median is the first length where survival is at most 1/2; where it is exactly 1/2 up to
    a later drop, the midpoint of the two lengths (so it is the ordinary median when nothing is
    censored); NaN where survival never reaches 1/2, or stays at exactly 1/2 to the end."""
    leaving = events + censored
    at_risk = leaving.sum(axis=1, keepdims=True) - (np.cumsum(leaving, axis=1) - leaving)
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(at_risk > 0, events / at_risk, 0.0)
    survival = np.cumprod(1.0 - hazard, axis=1)
    reached = survival <= 0.5 + _TIE
    below = survival < 0.5 - _TIE
    first, drop = reached.argmax(axis=1), below.argmax(axis=1)
    rows = np.arange(survival.shape[0])
    plateau = np.abs(survival[rows, first] - 0.5) <= _TIE
    median = np.where(plateau, (values[first] + values[drop]) / 2, values[first])
    return np.where(reached.any(axis=1) & (~plateau | below.any(axis=1)), median, np.nan)


def _ratio_ci(
    sides: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_items: int, n_boot: int, seed: int
) -> tuple[float, float]:
    """Percentile 95% CI of the median ratio, items resampled together on both sides. A resample
    where the variant's median is not identified counts as +inf, the baseline's alone as 0; one
    where neither is identified is dropped, and more than 5% dropped gives no CI.

    A resample's weight at each length is its items' draw counts summed over their samples there
    (`_Counter`): exact Kaplan–Meier when the two sides hold at most `MAX_BINS` distinct lengths,
    else every length rounded up to the next of `MAX_BINS` lengths spread over the distinct ones
    (a resolution of 1/`MAX_BINS` of the samples, for the CI only; the medians are exact)."""
    values = _bins(np.concatenate([tokens for tokens, _, _ in sides]))
    # the lengths where either side has censored samples (usually the cap alone)
    cut = np.unique(
        np.concatenate([np.searchsorted(values, tokens[censored]) for tokens, censored, _ in sides])
    )
    counters = [_Counter(side, values, cut, n_items) for side in sides]
    rng = np.random.default_rng(seed)
    sparse = [c.samples for c in counters if c.histogram is None]  # a bincount holds every sample
    chunk = max(1, _CELLS // max(n_items, counters[0].width, *sparse))
    ratios = []
    for begin in range(0, n_boot, chunk):
        draws = rng.integers(0, n_items, size=(min(chunk, n_boot - begin), n_items))
        rows = np.arange(draws.shape[0])[:, None] * n_items
        counts = np.bincount((rows + draws).ravel(), minlength=draws.size).reshape(draws.shape)
        ours, theirs = (_medians(values, *c.split(c.weights(counts))) for c in counters)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = ours / theirs
        ratio = np.where(np.isnan(ours) & ~np.isnan(theirs), np.inf, ratio)
        ratio = np.where(~np.isnan(ours) & np.isnan(theirs), 0.0, ratio)
        ratios.append(ratio)
    every = np.concatenate(ratios)
    kept = every[~np.isnan(every)]
    if kept.size < 0.95 * every.size or kept.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(kept, [0.025, 0.975], method="inverted_cdf")
    return float(low), float(high)


def _bins(tokens: np.ndarray) -> np.ndarray:
    """The lengths the bootstrap counts at: every distinct one, or `MAX_BINS` of them spread over
    the distinct ones (the largest included, so every length rounds up to one)."""
    distinct = np.unique(tokens)
    if distinct.size <= MAX_BINS:
        return distinct
    return distinct[np.unique(np.linspace(0, distinct.size - 1, MAX_BINS).round().astype(np.int64))]


class _Counter:
    """One side's samples as weights for a batch of resamples: (resamples × width), finished ones
    at each of the lengths `values`, then censored ones at each length of `cut` (those where any
    sample is censored). Many samples: one matrix product of the draw counts with the (items ×
    width) histogram; few: a bincount over the samples (no BLAS call, whose threads cost more than
    the work on small problems)."""

    def __init__(
        self,
        side: tuple[np.ndarray, np.ndarray, np.ndarray],
        values: np.ndarray,
        cut: np.ndarray,
        n_items: int,
    ):
        tokens, censored, self.items = side
        self.cut, self.lengths = cut, values.size
        self.samples, self.width = tokens.size, values.size + cut.size
        at = np.searchsorted(values, tokens)
        self.at = np.where(censored, values.size + np.searchsorted(cut, at), at)
        self.histogram: np.ndarray | None = None
        if self.samples > _DENSE_FROM:
            flat = np.bincount(self.items * self.width + self.at, minlength=n_items * self.width)
            self.histogram = flat.reshape(n_items, self.width).astype(np.float32)

    def weights(self, counts: np.ndarray) -> np.ndarray:
        """(resamples × 2·lengths) weights for `counts` (resamples × items: each item's draws)."""
        if self.histogram is not None:  # float32 is exact here: counts stay far below 2^24
            return (counts.astype(np.float32) @ self.histogram).astype(np.float64)
        rows = np.arange(counts.shape[0])[:, None] * self.width
        flat = np.bincount(
            (rows + self.at).ravel(),
            weights=counts[:, self.items].ravel(),
            minlength=counts.shape[0] * self.width,
        )
        return flat.reshape(counts.shape[0], self.width)

    def split(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(finished, censored) weights at every length, from `weights`' columns."""
        censored = np.zeros((weights.shape[0], self.lengths))
        censored[:, self.cut] = weights[:, self.lengths :]
        return weights[:, : self.lengths], censored


def median_text(length: ThinkingLength) -> str:
    """A Kaplan–Meier median for a table: "1,204", "≥2,048" when not identified (half or more
    cut: the median lies beyond the longest thinking seen), "–" without samples."""
    if length.samples == 0:
        return "–"
    return f"{length.median:,.0f}" if length.identified else f"≥{length.longest:,.0f}"
