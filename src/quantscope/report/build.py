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

from quantscope.analysis.compare import Analysis
from quantscope.analysis.decide import DEFAULT_MARGIN
from quantscope.analysis.levels import TaskLevels
from quantscope.analysis.recommend import Recommendation, recommend
from quantscope.analysis.signal_table import Progress
from quantscope.analysis.signals import TraceRules
from quantscope.analysis.study import Study, read_study
from quantscope.analysis.traces import TraceReport
from quantscope.plan.serving import GpuBudget
from quantscope.report.html import Example, render, select_examples
from quantscope.store.database import Store
from quantscope.util import write_atomic


@dataclass(frozen=True)
class ReportResult:
    """A written report: its path, size in bytes, the study and the recommendation it shows, and
    the example generations per variant."""

    path: Path
    nbytes: int
    study: Study
    recommendation: Recommendation
    examples: dict[str, list[Example]]

    @property
    def analysis(self) -> Analysis:
        """The study's verdicts."""
        return self.study.analysis

    @property
    def traces(self) -> TraceReport:
        """The study's trace signals."""
        return self.study.traces

    @property
    def levels(self) -> tuple[TaskLevels, ...]:
        """The study's per-level comparisons."""
        return self.study.levels


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
        study = read_study(
            store, baseline, margin=margin, allow_mismatch=allow_mismatch, rules=rules, progress=progress
        )
        examples = select_examples(store, study.analysis, examples_per_variant)
        path = store.path
    recommendation = recommend(study.analysis, budget_bytes, gpu=gpu, config=model_config)
    page = render(
        study.analysis, recommendation, examples, title=title, source=str(path), traces=study.traces,
        levels=study.levels,
    )  # fmt: skip
    written = write_atomic(out, page)
    return ReportResult(written, written.stat().st_size, study, recommendation, examples)
