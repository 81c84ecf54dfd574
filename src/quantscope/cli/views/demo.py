"""Rich views of `quantscope demo`: every variant of the demo in one table, then what the demo's
report found, as `compare` and `recommend` show it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from quantscope.cli.views.analysis import comparison_table, finding_lines, level_table, recommendation_panel
from quantscope.util import format_size

if TYPE_CHECKING:
    from quantscope.demo import DemoResult


def demo_variants_table(result: DemoResult) -> Group:
    """Each demo recipe's fate (status, predicted and exported size, quantize time), then why any
    recipe was skipped."""
    table = Table(title="variants", title_justify="left")
    for name in ("recipe", "status", "predicted", "exported", "quantize s"):
        table.add_column(name, justify="left" if name in ("recipe", "status") else "right")
    for variant in result.variants:
        exported = "–" if variant.memory_bytes is None else format_size(variant.memory_bytes)
        seconds = f"{variant.seconds:.0f}" if variant.seconds else "–"
        recipe = Text(variant.preset) + (Text(" (illustration)", style="dim") if variant.illustration else "")
        table.add_row(recipe, variant.status, format_size(variant.predicted_bytes), exported, seconds)
    skipped = [
        Text.from_markup(f"[yellow]skipped {v.preset}:[/] {v.detail}")
        for v in result.variants
        if v.status == "failed"
    ]
    shown = [v.preset for v in result.variants if v.illustration]
    note = [
        Text(f"{', '.join(shown)}: harsher than any deployed recipe, run to show the mechanism", style="dim")
    ]
    return Group(table, *skipped, *(note if shown else []))


def demo_views(result: DemoResult, width: int | None = None) -> list[RenderableType]:
    """`demo`, printed one after another: the variants, the findings in words, the comparison, one
    table per task with levels, and the recommendation."""
    report = result.report
    study = report.study
    return [
        demo_variants_table(result),
        finding_lines(study.findings),
        comparison_table(study.analysis, width=width),
        *(level_table(task, study.analysis.baseline) for task in study.levels),
        recommendation_panel(report.recommendation, width=width),
    ]


def demo_paths(result: DemoResult) -> str:
    """The demo's last line: where its report and store are, and how long it took."""
    return f"report: {result.report.path}   store: {result.store_dir}   ({result.seconds:.0f} s)"
