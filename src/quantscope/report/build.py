"""Build the report: analyse a store, recommend, pick examples, and write the HTML file.

`build_report(store_dir, out)` analyses the store (`quantscope.analysis.compare.analyze`),
recommends a variant (`quantscope.analysis.recommend.recommend`), reads the traces and the levels
(`analysis.traces`, `analysis.levels`), picks example generations and writes the HTML report atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantscope.analysis.compare import Analysis, analyze
from quantscope.analysis.decide import DEFAULT_MARGIN
from quantscope.analysis.levels import TaskLevels, level_report
from quantscope.analysis.recommend import Recommendation, recommend
from quantscope.analysis.signal_table import Progress
from quantscope.analysis.traces import TraceReport, TraceRules, trace_report
from quantscope.plan.serving import GpuBudget
from quantscope.report.html import Example, render, select_examples
from quantscope.store.database import Store
from quantscope.util import write_atomic


@dataclass(frozen=True)
class ReportResult:
    """A written report: its path, size in bytes, and the analysis and recommendation it shows."""

    path: Path
    nbytes: int
    analysis: Analysis
    recommendation: Recommendation
    examples: dict[str, list[Example]]
    traces: TraceReport | None = None
    levels: tuple[TaskLevels, ...] = ()


def build_report(
    store_dir: str | Path,
    out: str | Path,
    *,
    baseline: str | None = None,
    budget_bytes: int | None = None,
    examples_per_variant: int = 3,
    title: str = "quantscope report",
    margin: float = DEFAULT_MARGIN,
    allow_mismatch: bool = False,
    gpu: GpuBudget | None = None,
    model_config: Mapping[str, Any] | None = None,
    rules: TraceRules | None = None,
    progress: Progress | None = None,
) -> ReportResult:
    """Analyse the store at `store_dir` (equivalence `margin`, a fraction; see `analyze` for
    `allow_mismatch`), recommend for `budget_bytes` (bytes, None = no limit) and write the HTML
    report to `out` (temp file + rename); with `gpu`, the recommendation is for that GPU and shows
    each variant's capacity and throughput there (`model_config`: the model's config, default found
    from the variants' checkpoints); `rules` set the trace signals (hesitation markers; default
    `TraceRules()`; `progress` follows a first pass computing them, `signal_table.Progress`).
    QuantscopeError when the store is missing or empty."""
    with Store.existing(store_dir) as store:
        analysis = analyze(store, baseline, margin=margin, allow_mismatch=allow_mismatch)
        examples = select_examples(store, analysis, examples_per_variant)
        traces = trace_report(store, analysis.baseline, rules, tasks=analysis.tasks, progress=progress)
        levels = level_report(store, analysis)
        path = store.path
    recommendation = recommend(analysis, budget_bytes, gpu=gpu, config=model_config)
    page = render(
        analysis, recommendation, examples, title=title, source=str(path), traces=traces, levels=levels
    )
    written = write_atomic(out, page)
    return ReportResult(written, written.stat().st_size, analysis, recommendation, examples, traces, levels)
