"""The comparison level by level: where on a benchmark's difficulty scale quantization costs.

A task with levels (`Task.stratify`: MATH-500's `level`, the toy task's `level`) records each
item's level in the store when it runs (`Store.strata`). `level_report(store, analysis)` splits
every (variant, task) of an `Analysis` by level and, on each level's items alone, computes the
variant's metrics and its paired comparison with the baseline (`compare.compare_pair`, the same
rule as the whole task: accuracy delta with its verdict, truncation rates, the truncation rule),
plus the truncation-rate difference (per item, the fraction of its samples cut at the cap) with
the same paired Student-t test over the level's items (`decide.decide`). A level has fewer items
than its task, so its CIs are wider: a level undecided where the task is decided says "not enough
items at this level", not "no effect".

Every flag of the report's level tables (a red cell: worse at that level; a star: truncation
changed) is one test of one family, Holm-corrected over all of them (`decide.in_family`), so with
nothing different the chance that any cell is flagged stays at 5% (uncorrected, at least one false
flag showed in half such reports); `LevelReport.tests` says how many tests the family holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from quantscope.analysis.compare import compare_pair, with_decision
from quantscope.analysis.decide import Decision, Delta, decide, in_family, paired_items
from quantscope.analysis.metrics import Results, summarize

if TYPE_CHECKING:
    from quantscope.analysis.compare import Analysis, Comparison
    from quantscope.analysis.metrics import TaskMetrics
    from quantscope.store.database import Store


@dataclass(frozen=True)
class Shift(Delta):
    """The truncation rate's change on a level's items: a `Delta` of rates (fractions, means over
    items) and the test behind it (`decision`, corrected over the report's family of level flags)."""

    decision: Decision

    @property
    def significant(self) -> bool:
        """The difference test rejects after Holm's correction over the level tables' flags."""
        return self.decision.significant


@dataclass(frozen=True)
class LevelResult:
    """One variant on one level of a task: its metrics on the level's items and, for a variant
    other than the baseline, its comparison with the baseline there and the paired truncation
    difference (fractions; None for the baseline itself)."""

    variant: str
    level: str
    metrics: TaskMetrics
    comparison: Comparison | None
    truncation: Shift | None


@dataclass(frozen=True)
class TaskLevels:
    """A task's results by level: `key` names the level field ("level"), `levels` lists the
    levels in order (numeric when every level is a number) and `results` holds one entry per
    (level, variant), levels in that order, variants in the analysis' order."""

    task: str
    key: str
    levels: tuple[str, ...]
    results: tuple[LevelResult, ...]
    tests: int = 0
    """The level flags (red cells and stars) of the whole report, the family Holm corrects over."""

    def result(self, variant: str, level: str) -> LevelResult | None:
        """The entry of `variant` on `level`, if it ran items of that level."""
        return next((r for r in self.results if r.variant == variant and r.level == level), None)


def level_report(store: Store, analysis: Analysis) -> tuple[TaskLevels, ...]:
    """Every analysed task that has recorded levels (two or more), split by level, its flags
    corrected as one family over all of them."""
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
    return _as_family(report)


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
                truncation = _shift(ours, on_level.select(analysis.baseline))
            results.append(LevelResult(name, level, metrics, comparison, truncation))
    return tuple(results)


def _shift(ours: Results, theirs: Results) -> Shift:
    """The paired difference of per-item truncation fractions, tested as accuracy is."""
    pairs = paired_items(replace(ours, correct=ours.truncated), replace(theirs, correct=theirs.truncated))
    d = decide([pairs])
    mean, other = (float(x.mean()) if len(pairs) else float("nan") for x in (pairs.mean, pairs.other_mean))
    return Shift(mean, other, d.delta, d.ci95[0], d.ci95[1], len(pairs), d)


def _as_family(report: Sequence[TaskLevels]) -> tuple[TaskLevels, ...]:
    """Every red-cell and star test of `report` Holm-corrected as one family."""
    flagged = [(t, i) for t, task in enumerate(report) for i, r in enumerate(task.results) if r.comparison]
    tests = [report[t].results[i] for t, i in flagged]
    corrected = in_family(
        [r.comparison.decision for r in tests if r.comparison]
        + [r.truncation.decision for r in tests if r.truncation]
    )
    accuracy, truncation = corrected[: len(tests)], corrected[len(tests) :]
    results = [list(task.results) for task in report]
    for (t, i), acc, cut in zip(flagged, accuracy, truncation, strict=True):
        r = results[t][i]
        if r.comparison is not None and r.truncation is not None:
            results[t][i] = replace(
                r, comparison=with_decision(r.comparison, acc), truncation=replace(r.truncation, decision=cut)
            )
    size = sum(not np.isnan(d.p_value) for d in corrected)
    return tuple(
        replace(task, results=tuple(rows), tests=size) for task, rows in zip(report, results, strict=True)
    )


def levels_note(levels: Sequence[TaskLevels]) -> str:
    """What a red cell or a star means over the report's level tables: the family and its size."""
    tests = levels[0].tests if levels else 0
    return (
        f"Red cells and stars: Holm's step-down over the {tests} level tests of this report keeps the chance "
        "of any false one at 5% (family-wise)."
    )


def _ordered(levels: Sequence[str]) -> tuple[str, ...]:
    """Levels in numeric order when every level is a number ("2" before "10"), else as text."""
    try:
        return tuple(sorted(levels, key=float))
    except ValueError:
        return tuple(sorted(levels))
