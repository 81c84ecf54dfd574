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
_CELLS = 2_000_000
"""Bootstrap resamples × samples held at once (memory: a few arrays of this many float64)."""


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
    order = _order(tokens, np.asarray(censored, dtype=bool))
    weights = np.ones((1, tokens.size))
    return float(_medians(tokens[order], ~np.asarray(censored, dtype=bool)[order], weights)[0])


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
    value, base = (thinking_length(tokens, ~events) for tokens, events, _ in sides)
    ratio = (
        value.median / base.median if value.identified and base.identified and base.median else float("nan")
    )
    low, high = _ratio_ci(sides, len(shared), n_boot, seed) if shared else (float("nan"), float("nan"))
    return ThinkingChange(value, base, float(ratio), low, high, len(shared))


def _side(
    rows: tuple[Sequence[str], np.ndarray, np.ndarray], index: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One side's samples on the shared items, sorted for Kaplan–Meier: (tokens, finished, item)."""
    items = np.array([index.get(str(item), -1) for item in rows[0]], dtype=np.int64)
    keep = items >= 0
    tokens = np.asarray(rows[1], dtype=np.float64)[keep]
    censored = np.asarray(rows[2], dtype=bool)[keep]
    order = _order(tokens, censored)
    return tokens[order], ~censored[order], items[keep][order]


def _order(tokens: np.ndarray, censored: np.ndarray) -> np.ndarray:
    """Samples by length, a finished one before a censored one of the same length (the usual
    convention: a sample censored at t was still at risk at t)."""
    return np.lexsort((censored, tokens))


def _medians(tokens: np.ndarray, finished: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kaplan–Meier medians of sorted samples under each row of `weights` (copies of each sample).

    Walking the sorted samples, each finished one multiplies the survival by 1 - w/at_risk; ties
    taken one at a time give the same product as taken together. The median is the first length
    where survival is at most 1/2; where it is exactly 1/2 up to a later drop, the midpoint of
    the two lengths (so it is the ordinary median when nothing is censored); NaN where survival
    never reaches 1/2, or stays at exactly 1/2 to the end."""
    at_risk = np.cumsum(weights[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(finished & (at_risk > 0), weights / at_risk, 0.0)
    survival = np.cumprod(1.0 - hazard, axis=1)
    reached = survival <= 0.5 + _TIE
    below = survival < 0.5 - _TIE
    first, drop = reached.argmax(axis=1), below.argmax(axis=1)
    rows = np.arange(survival.shape[0])
    plateau = np.abs(survival[rows, first] - 0.5) <= _TIE
    median = np.where(plateau, (tokens[first] + tokens[drop]) / 2, tokens[first])
    return np.where(reached.any(axis=1) & (~plateau | below.any(axis=1)), median, np.nan)


def _ratio_ci(
    sides: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_items: int, n_boot: int, seed: int
) -> tuple[float, float]:
    """Percentile 95% CI of the median ratio, items resampled together on both sides. A resample
    where the variant's median is not identified counts as +inf, the baseline's alone as 0; one
    where neither is identified is dropped, and more than 5% dropped gives no CI."""
    rng = np.random.default_rng(seed)
    size = max(len(side[0]) for side in sides)
    chunk = max(1, _CELLS // max(size, 1))
    ratios = []
    for begin in range(0, n_boot, chunk):
        draws = rng.integers(0, n_items, size=(min(chunk, n_boot - begin), n_items))
        rows = np.arange(draws.shape[0])[:, None] * n_items
        counts = np.bincount((rows + draws).ravel(), minlength=draws.size).reshape(draws.shape).astype(float)
        ours, theirs = (_medians(t, f, counts[:, items]) for t, f, items in sides)
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


def median_text(length: ThinkingLength) -> str:
    """A Kaplan–Meier median for a table: "1,204", "≥2,048" when not identified (half or more
    cut: the median lies beyond the longest thinking seen), "–" without samples."""
    if length.samples == 0:
        return "–"
    return f"{length.median:,.0f}" if length.identified else f"≥{length.longest:,.0f}"
