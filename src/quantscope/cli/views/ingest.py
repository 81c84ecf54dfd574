"""The terminal view of `quantscope import`."""

from __future__ import annotations

from quantscope.ingest.importer import ImportSummary


def import_lines(summary: ImportSummary) -> str:
    """What an import did, and how each derived value was obtained, in a few lines."""
    lines = [
        f"{summary.variant} / {summary.task}: {summary.rows} generations read from {len(summary.files)} "
        f"{summary.format} file(s), {summary.added} new rows stored"
        + ("" if summary.added else " (all were stored already)"),
        f"  correctness: {summary.correct}",
        f"  tokens: {summary.tokens}",
    ]
    if summary.unknown_tokens:
        lines.append(f"  [yellow]{summary.unknown_tokens} rows without token counts[/yellow] (pass --model)")
    if summary.inferred_finish:
        lines.append(
            f"  finish reason inferred for {summary.inferred_finish} rows "
            "(cap reached or thinking never closed)"
        )
    if summary.unknown_settings:
        lines.append(
            f"  [yellow]settings unknown: {', '.join(summary.unknown_settings)}[/yellow] (declare them with "
            "the flags of the same names; comparisons say they rest on unknown settings)"
        )
    return "\n".join(lines)
