"""The comparison level by level: where on a benchmark's difficulty scale quantization costs.

A task with levels (`Task.stratify`: MATH-500's `level`, the toy task's `level`) records each
item's level in the store when it runs (`Store.strata`). `level_report(store, analysis)` splits
every (variant, task) of an `Analysis` by level and, on each level's items alone, computes the
variant's metrics and its paired comparison with the baseline (`compare.compare_pair`, the same
rule as the whole task: accuracy delta with its verdict, truncation rates, the truncation rule),
plus the truncation-rate difference with a paired bootstrap 95% CI over the level's items
(`traces.paired_delta`). A level has fewer items than its task, so its CIs are wider: a level
undecided where the task is decided says "not enough items at this level", not "no effect".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from quantscope.analysis.compare import compare_pair
from quantscope.analysis.metrics import Results, summarize
from quantscope.analysis.traces import Delta, paired_delta

if TYPE_CHECKING:
    from quantscope.analysis.compare import Analysis, Comparison
    from quantscope.analysis.metrics import TaskMetrics
    from quantscope.store import Store


@dataclass(frozen=True)
class LevelResult:
    """One variant on one level of a task: its metrics on the level's items and, for a variant
    other than the baseline, its comparison with the baseline there and the paired truncation
    difference (fractions; None for the baseline itself)."""

    variant: str
    level: str
    metrics: TaskMetrics
    comparison: Comparison | None
    truncation: Delta | None


@dataclass(frozen=True)
class TaskLevels:
    """A task's results by level: `key` names the level field ("level"), `levels` lists the
    levels in order (numeric when every level is a number) and `results` holds one entry per
    (level, variant), levels in that order, variants in the analysis' order."""

    task: str
    key: str
    levels: tuple[str, ...]
    results: tuple[LevelResult, ...]

    def result(self, variant: str, level: str) -> LevelResult | None:
        """The entry of `variant` on `level`, if it ran items of that level."""
        return next((r for r in self.results if r.variant == variant and r.level == level), None)


def level_report(store: Store, analysis: Analysis) -> tuple[TaskLevels, ...]:
    """Every analysed task that has recorded levels (two or more), split by level."""
    report = []
    for task in analysis.tasks:
        recorded = store.strata(task)
        if recorded is None:
            continue
        key, strata = recorded
        rows = analysis.results.select(task=task)
        level_of = np.array([strata.get(str(item), "") for item in rows.item_id], dtype=object)
        levels = _ordered(sorted({str(level) for level in level_of if level}))
        if len(levels) > 1:
            report.append(TaskLevels(task, key, levels, _split(analysis, task, rows, level_of, levels)))
    return tuple(report)


def _split(
    analysis: Analysis, task: str, rows: Results, level_of: np.ndarray, levels: Sequence[str]
) -> tuple[LevelResult, ...]:
    results = []
    names = [v.name for v in analysis.variants]
    for level in levels:
        on_level = rows.take(level_of == level)
        for name in names:
            ours = on_level.select(name)
            if len(ours) == 0:
                continue
            metrics = summarize(ours, n_boot=analysis.n_boot, seed=analysis.seed)
            compared = name != analysis.baseline and len(on_level.select(analysis.baseline)) > 0
            comparison = truncation = None
            if compared:
                comparison = compare_pair(
                    on_level, name, analysis.baseline, task, n_boot=analysis.n_boot, seed=analysis.seed,
                    margin=analysis.margin,
                )  # fmt: skip
                truncation = paired_delta(
                    _truncated_by_item(ours),
                    _truncated_by_item(on_level.select(analysis.baseline)),
                    analysis.n_boot,
                    analysis.seed,
                )
            results.append(LevelResult(name, level, metrics, comparison, truncation))
    return tuple(results)


def _truncated_by_item(rows: Results) -> dict[str, float]:
    """item id -> the fraction of its samples cut off at the cap."""
    flags: dict[str, list[bool]] = {}
    for item, truncated in zip(rows.item_id.astype(str), rows.truncated, strict=True):
        flags.setdefault(item, []).append(bool(truncated))
    return {item: float(np.mean(values)) for item, values in flags.items()}


def _ordered(levels: Sequence[str]) -> tuple[str, ...]:
    """Levels in numeric order when every level is a number ("2" before "10"), else as text."""
    try:
        return tuple(sorted(levels, key=float))
    except ValueError:
        return tuple(sorted(levels))
