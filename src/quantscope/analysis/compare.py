"""Compare every variant with a baseline on every task: what quantization cost, and why.

`analyze(store)` reads the store once and returns an `Analysis`: per (variant, task) metrics on a
common budget grid, and one `Comparison` per (variant, task) against the baseline (BF16 by
default). A comparison holds:

- the accuracy delta (variant - baseline, avg@k over the items both ran) with a paired bootstrap
  95% CI over items, and whether it is significant (the CI excludes 0);
- the truncation-rate delta and the accuracy among finished generations on both sides;
- thinking-token inflation: variant / baseline ratio of the median and the mean thinking tokens,
  over all samples and over finished ones only (truncated samples are censored at the cap, so
  the "all" ratios understate inflation when the variant truncates more);
- a verdict, including the seed study's failure mode: "loss mostly explained by truncation".

Truncation rule (`explained_by_truncation`): the variant lost accuracy (delta < 0), it truncates
more than the baseline, the accuracy it would lose if each extra truncated sample had been
right at the baseline's finished-accuracy rate covers at least half of the loss, and its own
accuracy among finished generations holds (no more than half the loss below the baseline's).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantscope.analysis.metrics import (
    DEFAULT_BOOTSTRAP,
    BudgetCurve,
    Results,
    TaskMetrics,
    default_budgets,
    load_results,
    per_item_mean,
    summarize,
)
from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    from quantscope.store import Store, Variant

BASELINE_RECIPES = ("bf16", "fp16")
VERDICT_SAME = "no significant change"
VERDICT_WORSE = "significantly worse"
VERDICT_BETTER = "significantly better"
VERDICT_TRUNCATION = "loss mostly explained by truncation"


@dataclass(frozen=True)
class VariantInfo:
    """A stored variant as analysis sees it: `memory_bytes` is its weight memory (bytes, None when
    unknown) and `memory_source` says where that number came from ("store", "manifest", "files")."""

    name: str
    model_path: str
    recipe: str | None
    memory_bytes: int | None
    memory_source: str | None
    is_baseline: bool


@dataclass(frozen=True)
class Inflation:
    """Variant / baseline ratios of thinking tokens (1.0 = same length; NaN when undefined)."""

    median_all: float
    mean_all: float
    median_finished: float
    mean_finished: float


@dataclass(frozen=True)
class Comparison:
    """One variant against the baseline on one task (see the module docstring).

    Accuracies and rates are fractions in [0, 1]; `delta*` are variant minus baseline over the
    `paired_items` both ran; `truncation_cost` is the accuracy the extra truncations would cost
    at the baseline's finished accuracy (fraction).
    """

    variant: str
    baseline: str
    task: str
    paired_items: int
    accuracy: float
    baseline_accuracy: float
    delta: float
    delta_ci_low: float
    delta_ci_high: float
    significant: bool
    truncation_rate: float
    baseline_truncation_rate: float
    truncation_delta: float
    accuracy_finished: float
    baseline_accuracy_finished: float
    truncation_cost: float
    explained_by_truncation: bool
    inflation: Inflation
    verdict: str


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything the report and the recommendation need, computed once from a store.

    `metrics` are per (variant, task) with budget curves on one grid per task (`budgets`, tokens);
    `comparisons` are per (non-baseline variant, task); `results` are the numeric rows.
    """

    baseline: str
    tasks: tuple[str, ...]
    variants: tuple[VariantInfo, ...]
    metrics: tuple[TaskMetrics, ...]
    comparisons: tuple[Comparison, ...]
    budgets: dict[str, tuple[int, ...]]
    results: Results
    n_boot: int
    seed: int

    def variant(self, name: str) -> VariantInfo:
        """The variant called `name`; QuantscopeError when there is none."""
        for info in self.variants:
            if info.name == name:
                return info
        raise QuantscopeError(f"no variant {name!r} in this analysis; variants: {self.variant_names}")

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The variants' names, in analysis order (baseline first, then by memory)."""
        return tuple(v.name for v in self.variants)

    def metric(self, variant: str, task: str) -> TaskMetrics | None:
        """The metrics of (variant, task), or None when that pair has no rows."""
        for m in self.metrics:
            if m.variant == variant and m.task == task:
                return m
        return None

    def comparison(self, variant: str, task: str) -> Comparison | None:
        """The comparison of (variant, task) with the baseline, or None."""
        for c in self.comparisons:
            if c.variant == variant and c.task == task:
                return c
        return None


# ---- pure functions -----------------------------------------------------------------------


def item_scores(results: Results) -> dict[str, float]:
    """Each item's fraction of correct samples, keyed by item id."""
    ids, inverse = np.unique(results.item_id.astype(str), return_inverse=True)
    scores = per_item_mean(results.correct, inverse.reshape(-1), len(ids))
    return dict(zip(ids.tolist(), scores.tolist(), strict=True))


def paired_delta(
    variant: Results,
    baseline: Results,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float, int]:
    """Accuracy delta (variant - baseline, avg@k) over the items both ran, with a paired bootstrap CI.

    Items are resampled together on both sides, so item difficulty cancels out. Returns
    (delta, ci_low, ci_high, paired_items); NaNs when no item is shared.
    """
    ours, theirs = item_scores(variant), item_scores(baseline)
    shared = sorted(ours.keys() & theirs.keys())
    if not shared:
        nan = float("nan")
        return nan, nan, nan, 0
    diff = np.array([ours[i] - theirs[i] for i in shared])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(diff.mean()), float(low), float(high), len(shared)


def thinking_inflation(variant: Results, baseline: Results) -> Inflation:
    """Variant / baseline ratios of median and mean thinking tokens, all and finished samples."""

    def ratio(ours: np.ndarray, theirs: np.ndarray, stat: str) -> float:
        if ours.size == 0 or theirs.size == 0:
            return float("nan")
        top, bottom = (
            (np.median(ours), np.median(theirs)) if stat == "median" else (ours.mean(), theirs.mean())
        )
        return float(top / bottom) if bottom > 0 else float("nan")

    ours_all, theirs_all = variant.thinking_tokens, baseline.thinking_tokens
    ours_fin = variant.thinking_tokens[~variant.truncated]
    theirs_fin = baseline.thinking_tokens[~baseline.truncated]
    return Inflation(
        median_all=ratio(ours_all, theirs_all, "median"),
        mean_all=ratio(ours_all, theirs_all, "mean"),
        median_finished=ratio(ours_fin, theirs_fin, "median"),
        mean_finished=ratio(ours_fin, theirs_fin, "mean"),
    )


def truncation_explains(
    delta: float, truncation_delta: float, baseline_finished: float, finished: float
) -> tuple[bool, float]:
    """Whether an accuracy loss is mostly truncation (the module docstring's rule), and its cost.

    Returns (explained, truncation_cost) with the cost as a fraction of accuracy.
    """
    if any(np.isnan(x) for x in (delta, truncation_delta, baseline_finished)):
        return False, float("nan")
    cost = max(0.0, truncation_delta) * baseline_finished
    loss = -delta
    if loss <= 0 or truncation_delta <= 0:
        return False, cost
    holds = not np.isnan(finished) and finished >= baseline_finished - loss / 2
    return bool(cost >= loss / 2 and holds), cost


def compare_pair(
    results: Results,
    variant: str,
    baseline: str,
    task: str,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Comparison:
    """Compare `variant` with `baseline` on `task` (both must have rows in `results`)."""
    ours, theirs = results.select(variant, task), results.select(baseline, task)
    for name, rows in ((variant, ours), (baseline, theirs)):
        if len(rows) == 0:
            raise QuantscopeError(f"no results for variant {name!r} on task {task!r}: evaluate it first")
    delta, low, high, paired = paired_delta(ours, theirs, n_boot=n_boot, seed=seed)
    trunc, base_trunc = float(ours.truncated.mean()), float(theirs.truncated.mean())
    finished = _finished_accuracy(ours)
    base_finished = _finished_accuracy(theirs)
    explained, cost = truncation_explains(delta, trunc - base_trunc, base_finished, finished)
    significant = bool(paired > 0 and (low > 0 or high < 0))
    return Comparison(
        variant=variant,
        baseline=baseline,
        task=task,
        paired_items=paired,
        accuracy=_accuracy(ours),
        baseline_accuracy=_accuracy(theirs),
        delta=delta,
        delta_ci_low=low,
        delta_ci_high=high,
        significant=significant,
        truncation_rate=trunc,
        baseline_truncation_rate=base_trunc,
        truncation_delta=trunc - base_trunc,
        accuracy_finished=finished,
        baseline_accuracy_finished=base_finished,
        truncation_cost=cost,
        explained_by_truncation=explained,
        inflation=thinking_inflation(ours, theirs),
        verdict=_verdict(delta, significant, explained),
    )


def _accuracy(results: Results) -> float:
    scores = item_scores(results)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def _finished_accuracy(results: Results) -> float:
    finished = ~results.truncated
    return float(results.correct[finished].mean()) if finished.any() else float("nan")


def _verdict(delta: float, significant: bool, explained: bool) -> str:
    if explained and delta < 0:
        return VERDICT_TRUNCATION
    if not significant:
        return VERDICT_SAME
    return VERDICT_WORSE if delta < 0 else VERDICT_BETTER


# ---- over a store -------------------------------------------------------------------------


def variant_memory(variant: Variant) -> tuple[int | None, str | None]:
    """A variant's weight memory in bytes and where it came from.

    The store's `memory_bytes` when set (the runner records the checkpoint's weight files, or the
    footprint the caller gave), else the quantscope manifest's tensor bytes in `model_path`, else
    the size of its `*.safetensors` files; (None, None) when none of them is available.
    """
    if variant.memory_bytes is not None:
        return int(variant.memory_bytes), "store"
    path = Path(variant.model_path).expanduser()
    manifest = path / "quantscope.json"
    if manifest.is_file():
        try:
            return int(json.loads(manifest.read_text())["tensor_bytes"]), "manifest"
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a broken manifest is verify's business; fall back to the files
    files = list(path.glob("*.safetensors")) if path.is_dir() else []
    if files:
        return sum(f.stat().st_size for f in files), "files"
    return None, None


def choose_baseline(variants: Sequence[VariantInfo], requested: str | None = None) -> str:
    """The baseline's name: `requested`, else the only variant, else the one marked baseline, else a
    bf16/fp16 recipe, else the largest variant. QuantscopeError when `requested` is unknown or
    nothing qualifies."""
    names = [v.name for v in variants]
    if requested is not None:
        if requested not in names:
            raise QuantscopeError(
                f"--baseline {requested!r} is not in the store; variants: {', '.join(names)}"
            )
        return requested
    if not variants:
        raise QuantscopeError("the store holds no variants: run `quantscope eval` first")
    if len(variants) == 1:
        return variants[0].name
    for rule in (
        lambda v: v.is_baseline,
        lambda v: (v.recipe or "").lower() in BASELINE_RECIPES or v.name.lower() in BASELINE_RECIPES,
    ):
        marked = [v for v in variants if rule(v)]
        if marked:
            return marked[0].name
    sized = [v for v in variants if v.memory_bytes is not None]
    if sized:
        return max(sized, key=lambda v: v.memory_bytes or 0).name
    raise QuantscopeError(
        "cannot tell which variant is the baseline: pass --baseline NAME (or evaluate one with --baseline)"
    )


def analyze(
    store: Store,
    baseline: str | None = None,
    *,
    tasks: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Analysis:
    """Read the store once and compare every variant with the baseline on every task.

    `baseline` defaults to `choose_baseline`'s pick; `tasks` restricts the tasks analysed. Budget
    curves of one task share one grid (`default_budgets` of the smallest cap among its variants).
    """
    results = load_results(store)
    if tasks is not None:
        unknown = sorted(set(tasks) - set(results.task.tolist()))
        if unknown:
            raise QuantscopeError(f"no results for task(s) {unknown} in {store.path}")
        results = results.take(np.isin(results.task, list(tasks)))
    if len(results) == 0:
        raise QuantscopeError(
            f"{store.path} holds no results yet: run `quantscope eval` (or `quantscope demo`)"
        )
    present = set(results.variant.tolist())
    infos = [_info(v) for v in store.variants() if v.name in present]
    base = choose_baseline(infos, baseline)
    infos.sort(key=lambda v: (v.name != base, -(v.memory_bytes or 0), v.name))
    task_names = tuple(sorted(set(results.task.tolist())))
    budgets = {t: default_budgets(int(results.max_tokens[results.task == t].min())) for t in task_names}
    metrics, comparisons = [], []
    for task in task_names:
        for info in infos:
            rows = results.select(info.name, task)
            if len(rows) == 0:
                continue
            metrics.append(summarize(rows, budgets=budgets[task], n_boot=n_boot, seed=seed))
            if info.name != base and len(results.select(base, task)):
                comparisons.append(compare_pair(results, info.name, base, task, n_boot=n_boot, seed=seed))
    return Analysis(
        baseline=base,
        tasks=task_names,
        variants=tuple(infos),
        metrics=tuple(metrics),
        comparisons=tuple(comparisons),
        budgets=budgets,
        results=results,
        n_boot=n_boot,
        seed=seed,
    )


def _info(variant: Variant) -> VariantInfo:
    memory, source = variant_memory(variant)
    return VariantInfo(
        name=variant.name,
        model_path=variant.model_path,
        recipe=variant.recipe,
        memory_bytes=memory,
        memory_source=source,
        is_baseline=variant.is_baseline,
    )


def budget_curves(analysis: Analysis, task: str) -> dict[str, BudgetCurve]:
    """Each variant's accuracy-at-budget curve on `task`, all on the task's shared grid."""
    return {m.variant: m.budget_curve for m in analysis.metrics if m.task == task}
