"""Rich views of a sweep: the dry run's estimate and the finished sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from quantscope.sweep import SweepResult
    from quantscope.sweep.estimate import SweepEstimate


def sweep_estimate_table(estimate: SweepEstimate) -> Group:
    """`sweep --dry-run`: every job, its state, rows stored of expected, GPUs, tokens per sample,
    decode rate and GPU-hours (notes numbered below the table), then the total."""
    table = Table(title=f"sweep jobs (GPU-hours on {estimate.gpu})", title_justify="left")
    table.add_column("job", overflow="fold", ratio=3)
    table.add_column("state")
    for name in ("rows", "GPUs", "tok/sample", "decode tok/s", "GPU-h"):
        table.add_column(name, justify="right")
    notes: dict[str, int] = {}
    for job in estimate.jobs:
        rows = "–" if job.rows_expected is None else f"{job.rows_stored or 0:,}/{job.rows_expected:,}"
        hours = "–" if job.gpu_hours is None else f"{job.gpu_hours:,.2f}"
        if job.note:
            hours += f" [{notes.setdefault(job.note, len(notes) + 1)}]"
        table.add_row(
            job.job,
            job.state,
            rows if job.kind == "eval" else "–",
            f"{job.gpus:g}",
            "–" if job.tokens_per_sample is None else f"{job.tokens_per_sample:,.0f}",
            "–" if job.decode_tokens_per_s is None else f"{job.decode_tokens_per_s:,.0f}",
            hours,
        )
    lines = [Text(f"[{n}] {note}") for note, n in notes.items()]
    total = Text(
        f"at least {estimate.gpu_hours:,.1f} GPU-hours of evaluation (a bandwidth roofline: real decoding "
        f"is slower); {estimate.unestimated} job(s) to run are not estimated",
        style="bold",
    )
    return Group(table, *lines, total)


def sweep_result_table(result: SweepResult) -> Table:
    """A finished sweep run: every job, how it ended, rows generated now, tokens and seconds."""
    style = {"done": "green", "finished before": "dim", "failed": "red", "blocked": "yellow"}
    table = Table(title=f"sweep {result.sweep.name} ({result.seconds:.0f} s)", title_justify="left")
    table.add_column("job", overflow="fold", ratio=3)
    table.add_column("state")
    for name in ("rows now", "tokens", "seconds"):
        table.add_column(name, justify="right")
    table.add_column("detail", overflow="fold")
    for job in result.jobs:
        table.add_row(
            job.job,
            Text(job.state, style=style.get(job.state, "")),
            f"{job.generated:,}",
            f"{job.tokens:,}",
            f"{job.seconds:.0f}",
            job.detail,
        )
    return table
