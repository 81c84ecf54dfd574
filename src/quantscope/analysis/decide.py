"""Deciding a paired comparison: better, worse, equivalent or undecided, and what would decide it.

The unit of evidence is the item: for every item both sides ran, its difference
d_i = (variant's accuracy over its samples of i) - (the other side's over its samples of i),
so item difficulty cancels and an item with more samples does not weigh more. Over several
tasks, the difference is the mean over tasks of each task's mean d_i (each task weighs the same).

Intervals are Student-t intervals on the d_i (`decide`): per task the variance of d_i over its
n items, floored at 1/n, the variance of n differences of which one is a discordant pair (one
item where one side is right and the other wrong) and the rest agree. Zero observed variance of
paired 0/1 outcomes is no evidence of zero variance; the floor is the variance side of Agresti
and Min's pseudo-count interval for matched proportions (Agresti & Min 2005, "Simple improved
confidence intervals for comparing matched proportions", Stat. Med. 24:729-740), which adds one
discordant pair so that all-agreeing data do not give a zero-width interval; the estimate itself
is not moved. Over several tasks the variance of the mean is the sum of each task's over T², with
Welch-Satterthwaite degrees of freedom (one task: n - 1, exactly `scipy.stats.ttest_rel`).

Verdicts, at `margin` (fraction; default 2 points):
- equivalent: the 90% CI (1 - 2·alpha_equivalence) lies inside ±margin (two one-sided tests,
  TOST, each at alpha_equivalence = 0.05), on enough items: had every item agreed, the exact
  one-sided 95% bound on the share of items that differ, 1 - 0.05^(1/n) (about 3/n: Clopper-
  Pearson with no events; Hanley & Lippman-Hand 1983, JAMA 249:1743), must be within the margin,
  i.e. n >= `min_items_for_equivalence(margin)` (149 items at ±2 points, 59 at ±5, 29 at ±10);
- better / worse: the difference test (two-sided t-test of no difference) rejects at alpha
  (0.05: the 95% CI excludes 0) after Holm's correction over its family, and it is not equivalent;
- undecided: anything else, including one shared item (no variance to estimate) — "not
  significant" is never a tie. `samples_needed` then estimates the samples per item that would
  likely decide it, from the observed paired variance split into the part between items (which
  more samples cannot shrink: with 30 AIME items it sets a floor) and the part within items.

Multiplicity: every output that can flag a variant (compare's verdicts, the by-level table's
flags, recommend's exclusions) is one family, and `in_family` applies Holm's step-down procedure
to it (Holm 1979, "A simple sequentially rejective multiple test procedure", Scand. J. Stat.
6:65-70), so the chance of any false better / worse in it stays at alpha whatever the number of
tests. Equivalence is each comparison's own TOST: `family_note` says both where verdicts are shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from quantscope.analysis.metrics import Results, resample_counts

ALPHA = 0.05
"""The level of every test: better / worse at two-sided ALPHA, each one-sided equivalence test at ALPHA."""
DEFAULT_MARGIN = 0.02
VERDICT_BETTER = "better"
VERDICT_WORSE = "worse"
VERDICT_EQUIVALENT = "equivalent"
VERDICT_UNDECIDED = "undecided"
_Z90 = 1.6448536269514722  # one-sided 5% (the TOST level), two-sided 90%
_Z95 = 1.959963984540054
_MAX_SAMPLES_PER_ITEM = 4096


@dataclass(frozen=True)
class Delta:
    """variant - baseline over the items both ran (`value` and `baseline` each side's mean over
    those items, `delta` the mean paired difference), with a paired 95% CI over the items."""

    value: float
    baseline: float
    delta: float
    ci_low: float
    ci_high: float
    items: int

    @property
    def significant(self) -> bool:
        """The 95% CI excludes 0 (uncorrected; `levels.Shift` corrects over its family)."""
        return bool(self.ci_low > 0 or self.ci_high < 0)


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
    cannot, because the spread between items alone leaves a 90% CI half-width of `floor`
    (or because there are too few items: `reason` says which)."""

    items: int
    k: int | None
    extra: int | None
    floor: float
    reason: str


@dataclass(frozen=True)
class Decision:
    """One paired comparison decided: the mean difference (fraction), its Student-t CIs for the
    difference test (`ci95`: two-sided 1 - alpha) and for equivalence (`ci90`: 1 - 2·alpha_equivalence,
    TOST), the verdict at `margin`, the items compared, and for an undecided one what would decide
    it. `p_value` is the two-sided t-test of no difference, `p_adjusted` the same after Holm's
    correction over a `family` of that many tests (`in_family`; alone, the two are equal),
    `p_equivalence` the TOST's p (the larger one-sided p), `se` and `df` the t's standard error
    (fraction, with the variance floor) and degrees of freedom, and `agreement_bound` the largest
    |difference| complete agreement on these items could still hide (exact one-sided 95% bound;
    equivalence needs it within the margin). At the default alpha 0.05 the CIs are the 95% and
    90% CIs; a sequential procedure spends less alpha per look (`analysis.sequential`)."""

    delta: float
    ci95: tuple[float, float]
    ci90: tuple[float, float]
    margin: float
    items: int
    verdict: str
    samples_needed: SamplesNeeded | None = None
    alpha: float = ALPHA
    alpha_equivalence: float = ALPHA
    p_value: float = math.nan
    p_adjusted: float = math.nan
    p_equivalence: float = math.nan
    family: int = 1
    df: float = math.nan
    se: float = math.nan
    agreement_bound: float = math.nan

    @property
    def significant(self) -> bool:
        """The difference test rejects at `alpha` after the family's correction (alone: the CI
        `ci95` excludes 0)."""
        return self.items > 1 and bool(self.p_adjusted <= self.alpha)


def paired_items(results: Results, other: Results) -> PairedItems:
    """The items both `results` and `other` (one task each) ran, with each side's per-item stats."""
    ours, theirs = _item_stats(results), _item_stats(other)
    shared, mine, their = np.intersect1d(ours[0], theirs[0], assume_unique=True, return_indices=True)
    return PairedItems(
        tuple(shared.tolist()),
        ours[1][mine],
        theirs[1][their],
        ours[2][mine],
        theirs[2][their],
        ours[3][mine].astype(float),
        theirs[3][their].astype(float),
    )


def _item_stats(results: Results) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per item, in sorted id order: (item ids, mean correctness, sample variance with ddof 1 or
    NaN with one sample, samples). Vectorised: a study holds ~10^5 rows per variant."""
    ids, inverse = np.unique(results.item_id.astype(str), return_inverse=True)
    inverse = inverse.reshape(-1)
    k = np.bincount(inverse, minlength=ids.size)
    x = results.correct.astype(np.float64)
    mean = np.bincount(inverse, weights=x, minlength=ids.size) / np.maximum(k, 1)
    squares = np.bincount(inverse, weights=(x - mean[inverse]) ** 2, minlength=ids.size)
    var = np.full(ids.size, math.nan)
    var[k > 1] = squares[k > 1] / (k[k > 1] - 1)
    return ids, mean, var, k


def decide(
    tasks: Sequence[PairedItems],
    margin: float = DEFAULT_MARGIN,
    *,
    alpha: float = ALPHA,
    alpha_equivalence: float | None = None,
) -> Decision:
    """Decide the mean over `tasks` of the per-task mean paired difference with Student-t intervals
    (see the module docstring): the difference test at two-sided level `alpha`, each one-sided
    test of the equivalence pair at `alpha_equivalence` (default `alpha`; 0.05 gives the 95% and
    90% CIs). A decision alone is a family of one; `in_family` corrects a family of them. With a
    task of fewer than two shared items (none included: a task is never dropped silently) nothing
    is estimated and the verdict is undecided.
    """
    alpha_eq = alpha if alpha_equivalence is None else alpha_equivalence
    items = sum(len(t) for t in tasks)
    if not tasks or min(len(t) for t in tasks) < 2:
        return _too_few(tasks, margin, items, alpha, alpha_eq)
    delta = float(np.mean([t.diff.mean() for t in tasks]))
    se, df = standard_error(tasks)
    wide, narrow = t_quantile(1 - alpha / 2, df) * se, t_quantile(1 - alpha_eq, df) * se
    p_equivalence = max(t_sf((delta + margin) / se, df), t_sf((margin - delta) / se, df))
    p_value = 2 * t_sf(abs(delta) / se, df)
    bound = float(np.mean([agreement_bound(len(t)) for t in tasks]))
    decision = Decision(
        delta=delta,
        ci95=(delta - wide, delta + wide),
        ci90=(delta - narrow, delta + narrow),
        margin=margin,
        items=items,
        verdict=VERDICT_UNDECIDED,
        alpha=alpha,
        alpha_equivalence=alpha_eq,
        p_value=p_value,
        p_adjusted=p_value,
        p_equivalence=p_equivalence,
        df=df,
        se=se,
        agreement_bound=bound,
    )
    return _with_verdict(decision, tasks)


def _too_few(
    tasks: Sequence[PairedItems], margin: float, items: int, alpha: float, alpha_eq: float
) -> Decision:
    """The decision when some task shares fewer than two items: undecided, saying why."""
    nan = math.nan
    fewest = min((len(t) for t in tasks), default=0)
    what = "no item" if items == 0 else "one item" if items == 1 else f"a task with {fewest} item(s)"
    reason = (
        f"{what} shared: a verdict needs at least two items to estimate their spread; evaluate more items"
    )
    needed = SamplesNeeded(items, None, None, nan, reason)
    return Decision(nan, (nan, nan), (nan, nan), margin, items, VERDICT_UNDECIDED, needed, alpha, alpha_eq)


def standard_error(tasks: Sequence[PairedItems]) -> tuple[float, float]:
    """(standard error, degrees of freedom) of the mean over tasks of mean d_i: each task's variance
    of d_i floored at 1/n (one discordant pair among its n items), the mean's variance summed over
    tasks / T², Welch-Satterthwaite degrees of freedom (n - 1 for one task). Every task needs >= 2 items."""
    parts = [max(float(np.var(t.diff, ddof=1)), 1.0 / len(t)) / len(t) for t in tasks]
    total = sum(parts)
    df = total**2 / sum(v**2 / (len(t) - 1) for v, t in zip(parts, tasks, strict=True))
    return math.sqrt(total) / len(tasks), df


def agreement_bound(items: int, alpha: float = ALPHA) -> float:
    """The largest share of items that could differ (so the largest |difference|, each d_i being
    at most 1) consistent at one-sided level `alpha` with `items` items that all agree: the exact
    binomial (Clopper-Pearson) upper bound with no events, 1 - alpha^(1/n), about 3/n."""
    return 1.0 - alpha ** (1.0 / items) if items > 0 else 1.0


def min_items_for_equivalence(margin: float, alpha: float = ALPHA) -> int:
    """The fewest items on which "equivalent" at ±`margin` (fraction) can be said: the smallest n
    with `agreement_bound(n) <= margin`, i.e. (1 - margin)^n <= alpha (149 at 0.02, 29 at 0.10)."""
    n = max(1, math.ceil(math.log(alpha) / math.log1p(-margin)))
    while agreement_bound(n, alpha) > margin:  # guards the rounding of the logarithms
        n += 1
    while n > 1 and agreement_bound(n - 1, alpha) <= margin:
        n -= 1
    return n


def _with_verdict(decision: Decision, tasks: Sequence[PairedItems] | None = None) -> Decision:
    """`decision` with its verdict from its CIs, adjusted p and agreement bound, and for an
    undecided one (when `tasks` are given) what would decide it."""
    verdict = verdict_of(
        decision.ci95,
        decision.ci90,
        decision.margin,
        significant=decision.significant,
        enough_items=decision.agreement_bound <= decision.margin,
    )
    needed = decision.samples_needed
    if tasks is not None:
        needed = (
            samples_needed(tasks, decision.delta, decision.margin) if verdict == VERDICT_UNDECIDED else None
        )
    return replace(decision, verdict=verdict, samples_needed=needed)


def verdict_of(
    ci95: tuple[float, float],
    ci90: tuple[float, float],
    margin: float,
    *,
    significant: bool | None = None,
    enough_items: bool = True,
) -> str:
    """The verdict a pair of confidence intervals gives at `margin` (module docstring rules):
    equivalent when `ci90` lies inside ±margin on enough items; else better / worse when the
    difference test rejects (`significant`; default: `ci95` excludes 0); else undecided."""
    if enough_items and -margin < ci90[0] and ci90[1] < margin:
        return VERDICT_EQUIVALENT
    if significant is None:
        significant = ci95[0] > 0 or ci95[1] < 0
    if significant:
        return VERDICT_BETTER if ci95[0] + ci95[1] > 0 else VERDICT_WORSE
    return VERDICT_UNDECIDED


# ---- multiplicity -------------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): the j-th smallest of the m finite p-values
    becomes max over i <= j of min(1, (m - i + 1) p_(i)); NaNs (no test) stay NaN and do not
    count in m. Rejecting every adjusted p <= alpha keeps the family-wise error at alpha."""
    finite = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(finite, key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def in_family(decisions: Sequence[Decision]) -> list[Decision]:
    """`decisions` as one family: each one's p-value Holm-adjusted over the family and its verdict
    redone with it (better / worse only where the adjusted p <= its alpha). Undecidable ones
    (no p-value) are left as they are and do not count in the family's size."""
    adjusted = holm([d.p_value for d in decisions])
    size = sum(not math.isnan(p) for p in adjusted)
    return [
        d if math.isnan(p) else _with_verdict(replace(d, p_adjusted=p, family=size))
        for d, p in zip(decisions, adjusted, strict=True)
    ]


def family_note(tests: int, margin: float, what: str = "verdicts") -> str:
    """What the error rates of `tests` flags mean where they are shown (`what`: "verdicts",
    "flags"), with the items equivalence needs at `margin` (fraction)."""
    needed = min_items_for_equivalence(margin)
    return (
        f"Better / worse: Holm's step-down over the {tests} tests of these {what} keeps the chance of any "
        f"false one at 5% (family-wise); equivalent: each its own pair of one-sided tests (90% CI inside "
        f"±{100 * margin:g} pts) on at least {needed} items (fewer cannot rule the margin out even if "
        "every item agrees)."
    )


# ---- Student's t --------------------------------------------------------------------------------


def t_sf(x: float, df: float) -> float:
    """P(T > x) for Student's t with `df` > 0 degrees of freedom (any real df), from the
    regularized incomplete beta function: P(|T| > x) = I_{df/(df+x²)}(df/2, 1/2)."""
    if math.isnan(x):
        return math.nan
    if math.isinf(x):
        return 0.0 if x > 0 else 1.0
    square = x * x
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + square), square / (df + square))
    return tail if x >= 0 else 1.0 - tail


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The Student-t quantile: the x with P(T <= x) = p, by Newton's method on `t_sf` kept inside
    a bracket (exact to ~1e-12 relative at any df, where a normal-based expansion is off by 81% at
    df 1). `tests/test_decide.py` checks it against scipy.stats.t.ppf."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    tail = 1.0 - p
    low, high = 0.0, 1.0
    while t_sf(high, df) > tail:
        low, high = high, 2.0 * high
    x = (low + high) / 2
    for _ in range(200):
        excess = t_sf(x, df) - tail  # > 0: x is below the quantile
        low, high = (x, high) if excess > 0 else (low, x)
        step = excess / _t_pdf(x, df)
        if abs(step) <= 1e-15 * x or high - low <= 1e-15 * x:
            return x + step
        x = x + step if low < x + step < high else (low + high) / 2
    return x


def _t_pdf(x: float, df: float) -> float:
    log_density = (
        math.lgamma((df + 1) / 2)
        - math.lgamma(df / 2)
        - 0.5 * math.log(df * math.pi)
        - (df + 1) / 2 * math.log1p(x * x / df)
    )
    return math.exp(log_density)


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """The regularized incomplete beta function I_x(a, b), with y = 1 - x passed in exactly (so
    either tail keeps its precision), by its continued fraction on the side where it converges."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = a * math.log(x) + b * math.log(y) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) / (a * _beta_fraction(a, b, x))
    return 1.0 - math.exp(log_front) / (b * _beta_fraction(b, a, y))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The denominator 1 + d1/(1 + d2/(1 + ...)) of the incomplete beta's continued fraction
    (evaluated forwards by the modified Lentz method), with d_{2m+1} = -(a+m)(a+b+m)x /
    ((a+2m)(a+2m+1)) and d_{2m} = m(b-m)x / ((a+2m-1)(a+2m))."""
    tiny = 1e-300
    value, c, d = 1.0, 1.0, 0.0
    for j in range(1, 2000):
        m = j // 2
        if j % 2:
            term = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            term = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + term * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + term / c
        c = c if abs(c) > tiny else tiny
        value *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return value


def bootstrap_means(tasks: Sequence[PairedItems], n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the mean over tasks of mean d_i, items resampled within each task
    (`compare.paired_delta`'s percentile interval; verdicts use the t intervals of `decide`)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for task in tasks:
        total += resampled_means(task.diff, n_boot, rng)
    return total / len(tasks)


def resampled_means(diff: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The one paired resampler: `n_boot` means of the per-item differences `diff`, items drawn
    with replacement, so both sides of an item move together and item difficulty cancels out."""
    return diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)


def seeded_resampled_means(diff: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """`resampled_means` with a fresh generator seeded by `seed`: the same draws, counted once per
    number of items (`metrics.resample_counts`, cached) and applied as a matrix product, since
    every signal compared over the same items resamples them alike."""
    return resample_counts(diff.size, n_boot, seed) @ diff.astype(np.float64) / diff.size


def samples_needed(tasks: Sequence[PairedItems], delta: float, margin: float) -> SamplesNeeded:
    """Samples per item likely to decide a comparison whose true difference is `delta`.

    The variance of the mean difference is split into a between-item part (fixed by the items) and
    a within-item part that shrinks as 1/k, never below the floor of one discordant pair per task;
    the smallest k that makes either the equivalence test (|delta| + z90·SE < margin, on enough
    items for equivalence) or the difference test (z95·SE < |delta|) pass is returned, or none
    when even infinitely many samples leave the between-item floor too wide.
    """
    between, within, k_now = variance_parts(tasks)
    between = max(between, _floor_variance(tasks) - within)
    items = sum(len(t) for t in tasks)
    floor = _Z90 * math.sqrt(between)
    enough = float(np.mean([agreement_bound(len(t)) for t in tasks])) <= margin
    targets = []
    if abs(delta) < margin and enough:
        targets.append((margin - abs(delta)) / _Z90)
    if abs(delta) > 0:
        targets.append(abs(delta) / _Z95)
    best = min(
        (k for k in (_k_for(se, between, within, k_now) for se in targets) if k is not None), default=None
    )
    if best is None:
        return SamplesNeeded(items, None, None, floor, _undecidable_reason(items, floor, margin, enough))
    extra = items * (best - k_now)
    reason = f"about {best} samples per item on {items} items ({extra:,} more generations for each side)"
    return SamplesNeeded(items, best, extra, floor, reason)


def _undecidable_reason(items: int, floor: float, margin: float, enough: bool) -> str:
    reason = (
        f"the spread between these {items} items alone leaves the 90% CI ±{100 * floor:.1f} points wide; "
        "more samples per item cannot decide it"
    )
    if not enough:
        needed = min_items_for_equivalence(margin)
        reason += (
            f", and equivalence at ±{100 * margin:g} points needs at least {needed} items (fewer cannot "
            "rule the margin out even if every item agrees)"
        )
    return reason + ": add items (another benchmark) or accept the margin"


def _floor_variance(tasks: Sequence[PairedItems]) -> float:
    """The smallest variance `standard_error` allows the mean over tasks: one discordant pair per task."""
    return sum(1.0 / len(t) ** 2 for t in tasks) / len(tasks) ** 2


def variance_parts(tasks: Sequence[PairedItems]) -> tuple[float, float, int]:
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
