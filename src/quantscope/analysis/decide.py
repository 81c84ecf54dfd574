"""Deciding a paired comparison: better, worse, equivalent or undecided, and what would decide it.

The unit of evidence is the item: for every item both sides ran, its difference
d_i = (variant's accuracy over its samples of i) - (the other side's over its samples of i),
so item difficulty cancels and an item with more samples does not weigh more. Over several
tasks, the difference is the mean over tasks of each task's mean d_i (each task weighs the same),
and the bootstrap resamples items within each task.

Verdicts (`decide`), at `margin` (fraction; default 2 points) with a seeded paired bootstrap:
- equivalent: the 90% CI of the mean difference lies inside ±margin (two one-sided tests, TOST,
  each at α = 0.05);
- better / worse: the 95% CI excludes 0 and the result is not equivalent;
- undecided: anything else — "not significant" is never a tie. `samples_needed` then estimates
  the samples per item that would likely decide it, from the observed paired variance split into
  the part between items (which more samples cannot shrink: with 30 AIME items it sets a floor)
  and the part within items.

Each comparison is its own test at these levels: with many variants × tasks, about 5% of
comparisons at Δ = 0 will still read better or worse by chance (the family-wise error is not
controlled; `family_note` says so where verdicts are shown).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from quantscope.analysis.metrics import DEFAULT_BOOTSTRAP, Results

DEFAULT_MARGIN = 0.02
VERDICT_BETTER = "better"
VERDICT_WORSE = "worse"
VERDICT_EQUIVALENT = "equivalent"
VERDICT_UNDECIDED = "undecided"
_Z90 = 1.6448536269514722  # one-sided 5% (the TOST level), two-sided 90%
_Z95 = 1.959963984540054
_MAX_SAMPLES_PER_ITEM = 4096


@dataclass(frozen=True)
class PairedItems:
    """Per item both sides ran (one task): each side's mean correctness, its sample variance
    (ddof 1; NaN with one sample) and its number of samples."""

    item_ids: tuple[str, ...]
    mean: np.ndarray
    other_mean: np.ndarray
    var: np.ndarray
    other_var: np.ndarray
    k: np.ndarray
    other_k: np.ndarray

    @property
    def diff(self) -> np.ndarray:
        """d_i, the per-item differences (fractions)."""
        return self.mean - self.other_mean

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True)
class SamplesNeeded:
    """What would likely decide an undecided comparison: `k` samples per item on its `items` items
    (`extra` more generations for each side), or `k` None when more samples on these items
    cannot, because the spread between items alone leaves a 90% CI half-width of `floor`."""

    items: int
    k: int | None
    extra: int | None
    floor: float
    reason: str


@dataclass(frozen=True)
class Decision:
    """One paired comparison decided: the mean difference (fraction), its CIs for the difference
    test (`ci95`: two-sided 1 - alpha) and for equivalence (`ci90`: 1 - 2·alpha, TOST), the
    verdict at `margin`, the items compared, and for an undecided one what would decide it. At
    the default alpha 0.05 these are the 95% and 90% CIs; a sequential procedure spends less
    alpha per look (`analysis.sequential`)."""

    delta: float
    ci95: tuple[float, float]
    ci90: tuple[float, float]
    margin: float
    items: int
    verdict: str
    samples_needed: SamplesNeeded | None = None
    alpha: float = 0.05
    alpha_equivalence: float = 0.05

    @property
    def significant(self) -> bool:
        """The 95% CI excludes 0."""
        return self.items > 0 and (self.ci95[0] > 0 or self.ci95[1] < 0)


def paired_items(results: Results, other: Results) -> PairedItems:
    """The items both `results` and `other` (one task each) ran, with each side's per-item stats."""
    ours, theirs = _item_stats(results), _item_stats(other)
    shared = sorted(ours.keys() & theirs.keys())
    columns = [np.array([ours[i][n] for i in shared], dtype=float) for n in range(3)]
    other_columns = [np.array([theirs[i][n] for i in shared], dtype=float) for n in range(3)]
    return PairedItems(
        tuple(shared),
        columns[0],
        other_columns[0],
        columns[1],
        other_columns[1],
        columns[2],
        other_columns[2],
    )


def _item_stats(results: Results) -> dict[str, tuple[float, float, int]]:
    """item id -> (mean correctness, sample variance with ddof 1 or NaN, samples)."""
    stats: dict[str, list[float]] = {}
    for item, correct in zip(results.item_id.astype(str), results.correct, strict=True):
        stats.setdefault(item, []).append(float(correct))
    return {
        item: (float(np.mean(v)), float(np.var(v, ddof=1)) if len(v) > 1 else math.nan, len(v))
        for item, v in stats.items()
    }


def decide(
    tasks: Sequence[PairedItems],
    margin: float = DEFAULT_MARGIN,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    alpha: float = 0.05,
    alpha_equivalence: float | None = None,
    method: str = "bootstrap",
) -> Decision:
    """Decide the mean over `tasks` of the per-task mean paired difference (see the module
    docstring): the difference test at two-sided level `alpha`, each one-sided test of the
    equivalence pair at `alpha_equivalence` (default `alpha`; 0.05 gives the 95% and 90% CIs).

    `method` "bootstrap" (the paired percentile bootstrap, seeded) or "t" (Student-t intervals
    on the per-item differences): at the small levels a sequential procedure spends per look, the
    percentile bootstrap over 20-60 items is liberal (a nominal 0.7% test rejects ~1.2% of the time
    in simulation) while the t interval holds its level, so `analysis.sequential` uses "t".
    """
    alpha_eq = alpha if alpha_equivalence is None else alpha_equivalence
    tasks = [t for t in tasks if len(t)]
    items = sum(len(t) for t in tasks)
    if not tasks:
        nan = math.nan
        return Decision(nan, (nan, nan), (nan, nan), margin, 0, VERDICT_UNDECIDED, None, alpha, alpha_eq)
    delta = float(np.mean([t.diff.mean() for t in tasks]))
    if method == "t":
        ci95, ci90 = _t_intervals(tasks, delta, alpha, alpha_eq)
    else:
        means = bootstrap_means(tasks, max(n_boot, math.ceil(20 / min(alpha, alpha_eq))), seed)
        ci95 = tuple(float(x) for x in np.percentile(means, [50 * alpha, 100 - 50 * alpha]))
        ci90 = tuple(float(x) for x in np.percentile(means, [100 * alpha_eq, 100 - 100 * alpha_eq]))
    verdict = verdict_of(ci95, ci90, margin)
    needed = samples_needed(tasks, delta, margin) if verdict == VERDICT_UNDECIDED else None
    return Decision(delta, ci95, ci90, margin, items, verdict, needed, alpha, alpha_eq)  # type: ignore[arg-type]


def _t_intervals(
    tasks: Sequence[PairedItems], delta: float, alpha: float, alpha_eq: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Student-t intervals of the mean over tasks (variance summed over tasks, df = items - tasks)."""
    variance = (
        sum(float(np.var(t.diff, ddof=1)) / len(t) if len(t) > 1 else 0.0 for t in tasks) / len(tasks) ** 2
    )
    se, df = math.sqrt(variance), max(1, sum(len(t) for t in tasks) - len(tasks))
    wide, narrow = t_quantile(1 - alpha / 2, df) * se, t_quantile(1 - alpha_eq, df) * se
    return (delta - wide, delta + wide), (delta - narrow, delta + narrow)


def t_quantile(p: float, df: int) -> float:
    """The Student-t quantile, by the Cornish-Fisher expansion around the normal one (accurate to
    about 1e-3 for df >= 10, which is all this module needs)."""
    z = NormalDist().inv_cdf(p)
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def verdict_of(ci95: tuple[float, float], ci90: tuple[float, float], margin: float) -> str:
    """The verdict a pair of confidence intervals gives at `margin` (module docstring rules)."""
    if -margin < ci90[0] and ci90[1] < margin:
        return VERDICT_EQUIVALENT
    if ci95[0] > 0:
        return VERDICT_BETTER
    if ci95[1] < 0:
        return VERDICT_WORSE
    return VERDICT_UNDECIDED


def bootstrap_means(
    tasks: Sequence[PairedItems], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> np.ndarray:
    """Bootstrap distribution of the mean over tasks of mean d_i, items resampled within each task."""
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for task in tasks:
        diff = task.diff
        total += diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    return total / len(tasks)


def samples_needed(tasks: Sequence[PairedItems], delta: float, margin: float) -> SamplesNeeded:
    """Samples per item likely to decide a comparison whose true difference is `delta`.

    The variance of the mean difference is split into a between-item part (fixed by the items) and
    a within-item part that shrinks as 1/k; the smallest k that makes either the equivalence test
    (|delta| + z90·SE < margin) or the difference test (z95·SE < |delta|) pass is returned, or
    none when even infinitely many samples leave the between-item floor too wide.
    """
    between, within, k_now = _variance_parts(tasks)
    items = sum(len(t) for t in tasks)
    floor = _Z90 * math.sqrt(between)
    targets = []
    if abs(delta) < margin:
        targets.append((margin - abs(delta)) / _Z90)
    if abs(delta) > 0:
        targets.append(abs(delta) / _Z95)
    best = min(
        (k for k in (_k_for(se, between, within, k_now) for se in targets) if k is not None), default=None
    )
    if best is None:
        reason = (
            f"the spread between these {items} items alone leaves the 90% CI ±{100 * floor:.1f} points wide; "
            "more samples per item cannot decide it: add items (another benchmark) or accept the margin"
        )
        return SamplesNeeded(items, None, None, floor, reason)
    extra = items * (best - k_now)
    reason = f"about {best} samples per item on {items} items ({extra:,} more generations for each side)"
    return SamplesNeeded(items, best, extra, floor, reason)


def _variance_parts(tasks: Sequence[PairedItems]) -> tuple[float, float, int]:
    """(between-item, within-item at the current k) variance of the mean over tasks, and that k."""
    between = within = 0.0
    k_now = int(min(min(t.k.min(), t.other_k.min()) for t in tasks))
    weight = 1.0 / len(tasks) ** 2
    for task in tasks:
        n = len(task)
        total = float(np.var(task.diff, ddof=1)) if n > 1 else 0.0
        part = _within(task)
        within += weight * min(part, total) / n
        between += weight * max(0.0, total - part) / n
    return between, within, max(1, k_now)


def _within(task: PairedItems) -> float:
    """The within-item variance of d_i at the current samples: measured where items have two or more
    samples on both sides, else bounded by the Bernoulli variance of each side's mean accuracy."""
    both = (task.k > 1) & (task.other_k > 1)
    if both.any():
        parts = task.var[both] / task.k[both] + task.other_var[both] / task.other_k[both]
        return float(np.mean(parts))
    p, q = float(task.mean.mean()), float(task.other_mean.mean())
    return float(p * (1 - p) / task.k.mean() + q * (1 - q) / task.other_k.mean())


def _k_for(se_target: float, between: float, within: float, k_now: int) -> int | None:
    """The smallest samples per item k > k_now with sqrt(between + within·k_now/k) <= se_target."""
    room = se_target**2 - between
    if room <= 0 or within <= 0:
        return None
    k = max(k_now + 1, math.ceil(within * k_now / room))
    return k if k <= _MAX_SAMPLES_PER_ITEM else None


def family_note(comparisons: int) -> str:
    """What per-comparison error rates mean over `comparisons` comparisons (said where shown)."""
    expected = 0.05 * comparisons
    return (
        f"Each of the {comparisons} verdicts is its own test (95% CI for better/worse, 90% CI for "
        f"equivalence): with nothing changed, about {expected:.1f} of them could still read better or worse "
        "by chance; the family-wise error is not controlled."
    )
