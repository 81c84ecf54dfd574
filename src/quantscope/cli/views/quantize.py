"""Rich views of quantize and verify."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from quantscope.util import format_size

if TYPE_CHECKING:
    from quantscope.quantize import QuantizeResult, VerifyReport


def quantize_summary(result: QuantizeResult) -> Text:
    """One line: where the checkpoint went, its recipe and format, what stayed 16-bit, time and memory."""
    manifest = result.manifest
    return Text.from_markup(
        f"[bold green]wrote[/] {result.directory}  recipe={manifest.recipe.name}  "
        f"format={manifest.export_format}  "
        f"kept 16-bit={len(manifest.kept)}/{len(manifest.assignment)} linear modules  "
        f"time={manifest.wall_seconds:.1f}s  peak RSS={format_size(manifest.peak_rss_bytes)}"
    )


_STATUS_STYLE = {"PASS": "bold green", "FAIL": "bold red", "INCOMPLETE": "bold yellow"}


def verify_table(report: VerifyReport) -> Table:
    """PASS / FAIL / INCOMPLETE (naming what was skipped), then every check with its detail, the
    sizes, the sample and the notes."""
    title = Text(report.status, _STATUS_STYLE[report.status]) + Text(f" {report.directory}")
    if report.status == "INCOMPLETE":
        title += Text(f"\n{report.verdict.removeprefix('INCOMPLETE ')}", "yellow")
    table = Table("check", "result", "detail", title=title, title_justify="left")
    for check in report.checks:
        mark = "[yellow]skip[/]" if check.skipped else ("[green]ok[/]" if check.ok else "[red]FAIL[/]")
        table.add_row(check.name, mark, check.detail)
    sizes = f"tensors {format_size(report.tensor_bytes)}, files {format_size(report.file_bytes)}"
    table.add_row(
        "size", "", f"{sizes}; predicted {format_size(report.predicted_bytes)} ({report.size_error:+.3%})"
    )
    if report.sample:
        table.add_row("sample", "", repr(report.sample))
    for warning in report.warnings:
        table.add_row("note", "", warning)
    return table
