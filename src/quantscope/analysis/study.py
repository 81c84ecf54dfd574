"""One study: a store read once into everything the analysis commands show.

`read_study` runs the three reads every view of a comparison needs, in one place: the paired
verdicts against the baseline (`compare.analyze`), why thinking differs (`traces.trace_report`,
on the same tasks) and the same comparisons by difficulty level (`levels.level_report`). `compare`,
the HTML report and the demo take a `Study`; its `findings` are the sentences they lead with.
Like inspect_ai's `EvalLog`, it is the record of a whole evaluation, not of one step of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quantscope.analysis.compare import Analysis, analyze
from quantscope.analysis.decide import DEFAULT_MARGIN
from quantscope.analysis.levels import TaskLevels, level_report
from quantscope.analysis.signal_table import Progress
from quantscope.analysis.signals import TraceRules
from quantscope.analysis.traces import TraceReport, thinking_findings, trace_report
from quantscope.store.database import Store


@dataclass(frozen=True)
class Study:
    """A store's variants against its baseline: the verdicts (`analysis`), the trace signals per
    variant and task (`traces`) and the per-level comparisons of tasks with levels (`levels`)."""

    analysis: Analysis
    traces: TraceReport
    levels: tuple[TaskLevels, ...]

    @property
    def findings(self) -> tuple[str, ...]:
        """The finding per (variant, task) in words (`traces.thinking_findings`)."""
        return thinking_findings(self.analysis, self.traces, self.levels)


def read_study(
    store: Store,
    baseline: str | None = None,
    *,
    tasks: Sequence[str] | None = None,
    margin: float = DEFAULT_MARGIN,
    allow_mismatch: bool = False,
    settings_study: bool = False,
    rules: TraceRules | None = None,
    progress: Progress | None = None,
) -> Study:
    """Analyse `store` against `baseline` (default: the store's; see `compare.analyze` for
    `tasks`, `margin` (a fraction), `allow_mismatch` and `settings_study`), with the trace signals
    counted under `rules` (default `TraceRules()`) on the analysed tasks, read from the numbers
    stored beside the text (`progress` follows a first pass computing those the store lacks)."""
    analysis = analyze(
        store,
        baseline,
        tasks=tasks,
        margin=margin,
        allow_mismatch=allow_mismatch,
        settings_study=settings_study,
    )
    traces = trace_report(store, analysis.baseline, rules, tasks=analysis.tasks, progress=progress)
    return Study(analysis, traces, level_report(store, analysis))
