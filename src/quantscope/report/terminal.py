"""Rich tables for the terminal: the comparison with the baseline and the recommendation."""

from __future__ import annotations

import math

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from quantscope.analysis.compare import Analysis, Comparison
from quantscope.analysis.recommend import Recommendation
from quantscope.recipe import format_size


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}%"


def _pts(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:+.1f}"


def _ratio(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}×"


def _delta(c: Comparison | None) -> Text:
    if c is None:
        return Text("baseline", style="dim")
    style = "" if not c.significant else ("red" if c.delta < 0 else "green")
    mark = "*" if c.significant else ""
    return Text(f"{_pts(c.delta)}{mark} [{_pts(c.delta_ci_low)}, {_pts(c.delta_ci_high)}]", style=style)


def _verdict(c: Comparison | None) -> Text:
    if c is None:
        return Text("reference", style="dim")
    style = {"significantly worse": "red", "significantly better": "green"}.get(c.verdict, "")
    return Text(c.verdict, style="yellow" if c.explained_by_truncation else style)


def comparison_table(analysis: Analysis) -> Table:
    """Per task and variant: memory, accuracy with its CI, the paired delta against the baseline
    (* = significant), truncation and its delta, accuracy among finished samples, thinking
    inflation (median, all / finished samples) and the verdict."""
    single = len(analysis.tasks) == 1
    title = f"vs baseline {analysis.baseline}" + (f" on {analysis.tasks[0]}" if single else "")
    table = Table(title=title, title_justify="left")
    for name in ("variant",) if single else ("task", "variant"):
        table.add_column(name)
    for name in ("memory", "accuracy [95% CI]", "Δ pts [95% CI]", "truncated (Δ)", "acc finished", "think ×"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    for task in analysis.tasks:
        for info in analysis.variants:
            m = analysis.metric(info.name, task)
            if m is None:
                continue
            c = analysis.comparison(info.name, task)
            trunc = _pct(m.truncation_rate) + ("" if c is None else f" ({_pts(c.truncation_delta)})")
            think = (
                "1.00×"
                if c is None
                else f"{_ratio(c.inflation.median_all)}/{_ratio(c.inflation.median_finished)}"
            )
            table.add_row(
                *(() if single else (task,)),
                Text(info.name, style="bold" if c is None else ""),
                "?" if info.memory_bytes is None else format_size(info.memory_bytes),
                f"{_pct(m.accuracy)} [{_pct(m.ci_low)}, {_pct(m.ci_high)}]",
                _delta(c),
                trunc,
                _pct(m.accuracy_finished),
                think,
                _verdict(c),
            )
        table.add_section()
    return table


def recommendation_panel(rec: Recommendation) -> Panel:
    """The pick in one line, every other variant with why it lost, and the rule."""
    table = Table(box=None, pad_edge=False)
    for name, justify in (("variant", "left"), ("memory", "right"), ("accuracy", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name, justify in (("truncated", "right"), ("fits", "center"), ("why", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in rec.candidates:
        picked = rec.pick is not None and c.variant == rec.pick.variant
        table.add_row(
            Text(c.variant + (" ★" if picked else ""), style="bold green" if picked else ""),
            "?" if c.memory_bytes is None else format_size(c.memory_bytes),
            _pct(c.accuracy),
            _pct(c.truncation_rate),
            "yes" if c.fits else Text("no", style="red"),
            c.reason,
        )
    headline = Text(rec.summary(), style="bold" if rec.pick else "bold red")
    rule = Text(f"Rule: {rec.rule}", style="dim")
    return Panel(Group(headline, Text(""), table, Text(""), rule), title="recommendation", title_align="left")
