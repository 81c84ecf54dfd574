"""Rich views of an eval run: per-variant metrics, cap warnings, what a run and sampling until decided did."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from quantscope.cli.views.analysis import VERDICT_STYLE
from quantscope.util import pct, pts

if TYPE_CHECKING:
    from quantscope.analysis.metrics import TaskMetrics
    from quantscope.evaluate.runner import RunSummary
    from quantscope.evaluate.until_decided import AdaptiveSummary


CAP_WARNING = 0.05
"""The truncation rate above which `eval` warns that the token cap binds."""


def metrics_table(metrics: Sequence[TaskMetrics], title: str) -> Table:
    """Per (variant, task): accuracy with its 95% CI, pass@k, maj@k, truncation, accuracy among
    finished samples, the median thinking tokens (Kaplan–Meier: generations cut while thinking
    censored; "≥N" once half are cut) and the mean answer tokens."""
    from quantscope.analysis.thinking import median_text

    table = Table(title=title)
    for name in ("variant", "task", "items", "k", "cap"):
        table.add_column(name, justify="left" if name in ("variant", "task") else "right")
    for name in (
        "accuracy [95% CI]",
        "pass@k",
        "maj@k",
        "truncated",
        "acc finished",
        "think tok median",
        "answer tok μ",
    ):
        table.add_column(name, justify="right")
    for m in metrics:
        table.add_row(
            m.variant,
            m.task,
            str(m.n_items),
            str(m.k),
            f"{m.max_tokens}" if m.max_tokens else "?",
            f"{pct(m.accuracy)} [{pct(m.ci_low)}–{pct(m.ci_high)}]",
            pct(m.pass_at_k),
            pct(m.maj_at_k),
            pct(m.truncation_rate),
            pct(m.accuracy_finished),
            median_text(m.thinking),
            f"{m.answer_tokens.mean:.0f}",
        )
    return table


def cap_warnings(metrics: Sequence[TaskMetrics]) -> Group:
    """A warning for every (variant, task) whose generations hit the token cap more than
    `CAP_WARNING` of the time: its accuracy at this cap understates the model."""
    return Group(
        *(
            Text(
                f"warning: {m.variant} on {m.task}: {pct(m.truncation_rate)} of generations hit the "
                f"{f'{m.max_tokens:,}-token ' if m.max_tokens else ''}cap, so accuracy at this cap "
                "understates the model "
                f"({pct(m.accuracy_finished)} among finished); raise --max-tokens, or read the budget "
                "curves in the report",
                style="yellow",
            )
            for m in metrics
            if m.truncation_rate > CAP_WARNING
        )
    )


def adaptive_lines(summary: AdaptiveSummary) -> Group:
    """What sampling until decided did: the looks taken, the generations added per side, and the
    final verdict per task (at the alpha its last look spent)."""
    looks = len(summary.rounds)
    lines = [
        Text(
            f"until decided against {summary.baseline}: {looks} look(s), {summary.added:,} more generations "
            f"for each side ({summary.rule})"
        )
    ]
    for task, d in summary.decisions.items():
        ci = f"[{pts(d.ci95[0])}, {pts(d.ci95[1])}] at alpha {d.alpha:.4f}"
        adjusted = summary.adjusted(task)
        corrected = "" if adjusted == d.delta else f"; {pts(adjusted)} corrected for stopping at the verdict"
        lines.append(
            Text(
                f"  {task}: {d.verdict} ({pts(d.delta)} pts, {ci}{corrected})",
                style=VERDICT_STYLE.get(d.verdict, ""),
            )
        )
    return Group(*lines)


def run_lines(summary: RunSummary) -> Group:
    """Per task of an eval run: generated now, already stored, failed, tokens and wall time."""
    lines = []
    for done in summary.tasks:
        line = Text(
            f"{done.task}: {done.generated} generated, {done.stored_before} already stored "
            f"({done.tokens:,} tokens in {done.seconds:.1f} s)"
        )
        if done.failed:
            line.append(
                f"; {done.failed} request(s) failed after retries, first: {done.first_failure}. "
                "They are recorded in the store; rerun the same command to retry them.",
                style="red",
            )
        lines.append(line)
    for forced in summary.forced:
        budgets = ", ".join(f"{b:,}" for b in forced.budgets)
        line = Text(f"{forced.task}: {forced.generated} forced answers generated (budgets {budgets})")
        if forced.skipped:
            line.append(
                f"; {forced.skipped} sample(s) not cut, their text does not re-tokenize to the engine's "
                f"tokens (first: {forced.skip_reason})",
                style="yellow",
            )
        if forced.failed:
            line.append(f"; {forced.failed} forced request(s) failed (rerun to retry)", style="red")
        lines.append(line)
    return Group(*lines)
