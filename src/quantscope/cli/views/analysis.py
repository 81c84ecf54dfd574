"""Rich views of the analysis: the comparison, trace, level and recommendation tables and notes."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from quantscope.util import format_size, json_ready, pct, points, pts, ratio, short_size

if TYPE_CHECKING:
    from quantscope.analysis.compare import Analysis, Comparison, VariantInfo
    from quantscope.analysis.decide import Delta
    from quantscope.analysis.levels import LevelResult, TaskLevels
    from quantscope.analysis.metrics import TaskMetrics
    from quantscope.analysis.recommend import Recommendation
    from quantscope.analysis.study import Study
    from quantscope.analysis.traces import TraceReport


VERDICT_STYLE = {"better": "green", "worse": "red", "worse: mostly truncation": "yellow", "undecided": "dim"}


def _delta(c: Comparison | None) -> Text:
    if c is None:
        return Text("baseline", style="dim")
    style = "" if not c.significant else ("red" if c.delta < 0 else "green")
    mark = "*" if c.significant else ""
    return Text(f"{pts(c.delta)}{mark} [{pts(c.delta_ci_low)}, {pts(c.delta_ci_high)}]", style=style)


def _verdict(c: Comparison | None, short: bool = False) -> Text:
    """The verdict cell; `short` for narrow tables ("worse: trunc.", the note under says why)."""
    if c is None:
        return Text("reference", style="dim")
    shown = "worse: trunc." if short and c.verdict == "worse: mostly truncation" else c.verdict
    return Text(
        shown + (" (allowed mismatch)" if c.mismatches else ""), style=VERDICT_STYLE.get(c.verdict, "")
    )


def _items(c: Comparison | None, m: TaskMetrics) -> str:
    if c is None or c.paired_items == c.baseline_items == c.items:
        return str(m.n_items)
    return f"{c.paired_items} of {c.baseline_items}"


WIDE = 120
"""Terminal columns from which tables show every column; narrower ones get a compact layout."""


def comparison_table(analysis: Analysis, width: int | None = None) -> Table:
    """Per task and variant: memory, items compared, accuracy (the baseline's own with its CI; a
    variant's on the items it shares with the baseline), the paired delta with its 95% CI (* =
    significant after Holm's correction over the table), truncation and its delta, accuracy among
    finished samples, thinking inflation (median of all samples, Kaplan–Meier with cut generations
    censored / median of finished samples) and the verdict at the analysis's margin. Under `WIDE`
    columns (`width`),
    the compact layout keeps memory, accuracy, the delta and its CI, truncation, the median
    thinking ratio and the verdict."""
    if width is not None and width < WIDE:
        return _compact_comparison(analysis)
    single = len(analysis.tasks) == 1
    title = f"vs baseline {analysis.baseline}" + (f" on {analysis.tasks[0]}" if single else "")
    title += f" (equivalence margin ±{100 * analysis.margin:.0f} pts)"
    table = Table(title=title, title_justify="left")
    for name in ("variant",) if single else ("task", "variant"):
        table.add_column(name)
    for name in ("memory", "items", "accuracy", "Δ pts [95% CI]", "truncated (Δ)", "acc finished", "think ×"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    last = _last_variant_of_each_task(analysis)
    for task, info, m, c in _compared(analysis):
        trunc = pct(m.truncation_rate if c is None else c.truncation_rate)
        trunc += "" if c is None else f" ({pts(c.truncation_delta)})"
        think = (
            "1.00×" if c is None else f"{ratio(c.inflation.median_all)}/{ratio(c.inflation.median_finished)}"
        )
        accuracy = f"{pct(m.accuracy)} [{pct(m.ci_low)}, {pct(m.ci_high)}]" if c is None else pct(c.accuracy)
        table.add_row(
            *(() if single else (task,)),
            Text(info.name, style="bold" if c is None else ""),
            "?" if info.memory_bytes is None else format_size(info.memory_bytes),
            _items(c, m),
            accuracy,
            _delta(c),
            trunc,
            pct(m.accuracy_finished if c is None else c.accuracy_finished),
            think,
            _verdict(c),
            end_section=info.name == last[task],
        )
    return table


def _compared(analysis: Analysis) -> Iterator[tuple[str, VariantInfo, TaskMetrics, Comparison | None]]:
    """(task, variant, its metrics, its comparison or None for the baseline), in table order."""
    for task in analysis.tasks:
        for info in analysis.variants:
            m = analysis.metric(info.name, task)
            if m is not None:
                yield task, info, m, analysis.comparison(info.name, task)


def _last_variant_of_each_task(analysis: Analysis) -> dict[str, str]:
    return {task: info.name for task, info, _, _ in _compared(analysis)}


def _compact_comparison(analysis: Analysis) -> Table:
    single = len(analysis.tasks) == 1
    title = f"vs {analysis.baseline}" + (f" on {analysis.tasks[0]}" if single else "")
    table = Table(
        title=title + f", margin ±{100 * analysis.margin:.0f} pts",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for name in ("variant",) if single else ("task", "variant"):
        table.add_column(name)
    for name in ("mem", "acc", "Δ pts [95% CI]", "cut (Δ)", "think"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("verdict")
    for task, info, m, c in _compared(analysis):
        cut = (
            pct(m.truncation_rate, 0)
            if c is None
            else f"{pct(c.truncation_rate, 0)} {pts(c.truncation_delta)}"
        )
        table.add_row(
            *(() if single else (task,)),
            Text(info.name, style="bold" if c is None else ""),
            "?" if info.memory_bytes is None else short_size(info.memory_bytes),
            pct(m.accuracy if c is None else c.accuracy),
            _delta(c),
            cut,
            "1.00×" if c is None else ratio(c.inflation.median_all),
            _verdict(c, short=True),
        )
    return table


def trace_table(report: TraceReport, width: int | None = None) -> Table:
    """Why variants think differently, per task and variant (`analysis.traces`): loops, truncated
    while looping / while progressing, hesitation markers per 1,000 thinking tokens, found the
    answer but did not give it (math tasks), and where it was first found; each variant's cell
    adds its paired delta vs the baseline with the 95% CI over items (* = it excludes 0). Under
    `WIDE` columns a variant's cells show its delta alone (the baseline's row, the values)."""
    if width is not None and width < WIDE:
        return _compact_traces(report)
    table = Table(title=f"why thinking differs, vs baseline {report.baseline}", title_justify="left")
    for name in ("task", "variant"):
        table.add_column(name)
    for name in ("loops", "cut, looping", "cut, progressing", "hesitations /1k", "found, not given"):
        table.add_column(name, justify="right")
    table.add_column("1st found", justify="right")
    comparisons = {(c.variant, c.task): c for c in report.comparisons}
    for stat in sorted(report.stats, key=lambda s: (s.task, s.variant != report.baseline, s.variant)):
        c = comparisons.get((stat.variant, stat.task))
        table.add_row(
            stat.task,
            Text(stat.variant, style="bold" if c is None else ""),
            _signal(stat.loop_rate, None if c is None else c.loop_rate),
            _signal(stat.truncated_looping, None if c is None else c.truncated_looping),
            _signal(stat.truncated_progressing, None if c is None else c.truncated_progressing),
            _signal(stat.hesitations_per_k, None if c is None else c.hesitations_per_k, rate=True),
            _signal(stat.not_committed, None if c is None else c.not_committed),
            pct(stat.first_found, 0),
        )
    return table


def _compact_traces(report: TraceReport) -> Table:
    table = Table(
        title=f"why thinking differs (Δ vs {report.baseline}, * = 95% CI excludes 0)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for name in ("task", "variant"):
        table.add_column(name)
    for name in ("loops", "cut: loop / prog", "hesit./1k", "not given", "1st found"):
        table.add_column(name, justify="right", no_wrap=True)
    comparisons = {(c.variant, c.task): c for c in report.comparisons}
    for stat in sorted(report.stats, key=lambda s: (s.task, s.variant != report.baseline, s.variant)):
        c = comparisons.get((stat.variant, stat.task))
        if c is None:
            cells = [
                pct(stat.loop_rate),
                f"{pct(stat.truncated_looping)} / {pct(stat.truncated_progressing)}",
            ]
            cells += [points(stat.hesitations_per_k, rate=True), pct(stat.not_committed)]
        else:
            cells = [
                _shift(c.loop_rate),
                f"{_shift(c.truncated_looping)} / {_shift(c.truncated_progressing)}",
            ]
            cells += [_shift(c.hesitations_per_k, rate=True), _shift(c.not_committed)]
        table.add_row(
            stat.task, Text(stat.variant, style="bold" if c is None else ""), *cells, pct(stat.first_found, 0)
        )
    return table


def _shift(delta: Delta | None, *, rate: bool = False) -> str:
    """A delta alone: percentage points (or markers per 1,000 tokens when `rate`), * if significant."""
    if delta is None or delta.items == 0:
        return "–"
    return points(delta.delta, rate=rate, signed=True) + ("*" if delta.significant else "")


def _signal(value: float, delta: Delta | None, *, rate: bool = False) -> Text:
    """A signal's value, and under a variant its delta [95% CI] (percentage points, or markers
    per 1,000 tokens when `rate`), starred when the CI excludes 0."""
    shown = points(value, rate=True) if rate else pct(value)
    if delta is None or delta.items == 0:
        return Text(shown)
    star = "*" if delta.significant else ""
    ci = f"[{points(delta.ci_low, rate=rate)}, {points(delta.ci_high, rate=rate)}]"
    cell = f"{shown} {points(delta.delta, rate=rate, signed=True)}{star} {ci}"
    return Text(cell, style="yellow" if delta.significant and delta.delta > 0 else "")


def level_table(levels: TaskLevels, baseline: str) -> Table:
    """One task by level (`analysis.levels`): a row per variant, a column per level, each cell
    "accuracy / cut" in percent; red where the variant is significantly worse than the baseline
    on that level's items, * where its truncation rate differs (paired t-test over the items),
    both Holm-corrected over every level test of the report (the caption says how many)."""
    table = Table(
        title=f"{levels.task} by {levels.key}: accuracy % / cut at the cap %",
        title_justify="left",
        caption=(
            f"red: worse than {baseline} on that {levels.key}; * truncation changed (Holm over the "
            f"report's {levels.tests} level tests: any false flag at most 5%)"
        ),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("variant")
    for level in levels.levels:
        # numbered levels read as "L1".."L6" (the key's initial); named ones as themselves
        table.add_column(f"{levels.key[:1].upper()}{level}" if level.isdigit() else level, justify="right")
    for name in dict.fromkeys(r.variant for r in levels.results):
        cells = [_level_cell(levels.result(name, level)) for level in levels.levels]
        table.add_row(Text(name, style="bold" if name == baseline else ""), *cells)
    return table


def _level_cell(result: LevelResult | None) -> Text:
    if result is None:
        return Text("–", style="dim")
    m, c, cut = result.metrics, result.comparison, result.truncation
    star = "*" if cut is not None and cut.significant else ""
    cell = f"{100 * m.accuracy:.0f}/{100 * m.truncation_rate:.0f}{star}"
    worse = c is not None and c.verdict in ("worse", "worse: mostly truncation")
    return Text(cell, style="red" if worse else "")


def finding_lines(findings: Sequence[str]) -> Text:
    """The findings in words (`analysis.traces.thinking_findings`), one per line."""
    text = Text()
    for line in findings:
        variant, _, rest = line.partition(": ")
        text.append(f"{variant}: ", style="bold")
        text.append(rest + "\n", style="dim" if rest.startswith("no significant effect") else "")
    return text


def _markers(markers: Sequence[str], shown: int = 4) -> str:
    more = len(markers) - shown
    return ", ".join(markers[:shown]) + (f" and {more} more markers" if more > 0 else "")


def trace_notes(report: TraceReport) -> Text:
    """What the trace signals mean, and the found-detector's coincidence rate on the baseline."""
    false = [
        f"{s.task} {pct(s.false_found)}"
        for s in report.stats
        if s.variant == report.baseline and s.false_found is not None
    ]
    lines = [
        f"loops: the generation ends in a block repeated ≥{report.rules.loop_repeats} times "
        f"(≥{report.rules.loop_chars} characters, cut anywhere); cut: hit the cap; "
        f"hesitations: {_markers(report.rules.markers)} opening a sentence or clause (a run once) "
        "per 1,000 thinking tokens; found, not given: the gold answer stated as a conclusion in "
        "the thinking (a box, 'the answer is', a sentence opening 'So/Thus/Therefore'), the final "
        "answer wrong (math tasks); 1st found: median position of that statement in the thinking. "
        "Δ [95% CI over items], paired.",
    ]
    if false:
        lines.append(
            "found-detector false positives (another item's answer 'found' in the baseline's "
            "correct traces): " + ", ".join(false)
        )
    return Text("\n".join(lines), style="dim")


def comparison_notes(analysis: Analysis) -> Group:
    """Under the comparison table: what would decide each undecided comparison, the truncation
    findings and their rule, mismatches that were allowed, and what the error rates mean."""
    from quantscope.analysis.compare import TRUNCATION_RULE
    from quantscope.analysis.decide import family_note

    lines: list[RenderableType] = []
    for c in analysis.comparisons:
        needed = c.decision.samples_needed
        if needed is not None:
            lines.append(Text(f"{c.variant} on {c.task}: undecided — {needed.reason}.", style="dim"))
        if c.explained_by_truncation:
            lines.append(
                Text.from_markup(
                    f"[yellow]{c.variant} on {c.task}: accuracy loss mostly explained by truncation[/] "
                    f"({100 * c.accuracy_finished:.1f}% correct among finished vs "
                    f"{100 * c.baseline_accuracy_finished:.1f}% for {c.baseline}); try a larger --max-tokens."
                )
            )
        if c.mismatches:
            lines.append(
                Text(f"{c.variant} on {c.task}: compared despite {'; '.join(c.mismatches)}", "yellow")
            )
        if c.unknown_settings:
            lines.append(
                Text(
                    f"{c.variant} on {c.task}: rests on unknown settings ({', '.join(c.unknown_settings)}): "
                    "the sources did not record them, so the two sides may differ there",
                    "yellow",
                )
            )
    if any(c.explained_by_truncation for c in analysis.comparisons):
        lines.append(Text(TRUNCATION_RULE[0].upper() + TRUNCATION_RULE[1:] + ".", style="dim"))
    if analysis.comparisons:
        lines.append(Text(family_note(len(analysis.comparisons), analysis.margin), style="dim"))
    return Group(*lines)


def recommendation_panel(rec: Recommendation, width: int | None = None) -> Panel:
    """The pick in one line, every other variant with why it lost, and the rule; on a GPU budget
    also each variant's capacity and throughput there. Under `WIDE` columns the candidates and
    their capacity are two narrow tables (the accuracy and truncation are in the comparison)."""
    from quantscope.analysis.capacity import CAPACITY_COLUMNS, capacity_cells

    if width is not None and width < WIDE:
        tables: list[RenderableType] = [_compact_candidates(rec)]
        tables += [Text(""), _compact_capacity(rec)] if rec.gpu is not None else []
        return _recommendation(rec, Group(*tables))
    table = Table(box=None, pad_edge=False)
    for name, justify in (
        ("variant", "left"),
        ("memory", "right"),
        ("accuracy", "right"),
        ("Δ pts", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    serving = rec.gpu is not None
    table.add_column("truncated", justify="right")
    for name in CAPACITY_COLUMNS if serving else ():
        table.add_column(name, justify="right")
    for name, justify in (("fits", "center"), ("why", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in rec.candidates:
        table.add_row(
            _candidate_name(rec, c.variant),
            "?" if c.memory_bytes is None else format_size(c.memory_bytes),
            pct(c.accuracy),
            "–" if c.variant == rec.baseline else pts(c.delta),
            pct(c.truncation_rate),
            *(capacity_cells(c.serving) if serving else ()),
            "yes" if c.fits else Text("no", style="red"),
            c.reason,
        )
    return _recommendation(rec, table)


def _recommendation(rec: Recommendation, body: RenderableType) -> Panel:
    """The panel around the candidates: the pick in one line first, the rule (and the capacity
    note on a GPU) under them."""
    from quantscope.analysis.capacity import CAPACITY_NOTE

    headline = Text(
        rec.summary(), style="bold" if rec.pick and rec.decided else "bold yellow" if rec.pick else "bold red"
    )
    rule = Text(f"Rule: {rec.rule}", style="dim")
    parts: list[RenderableType] = [headline, Text(""), body, Text(""), rule]
    if rec.gpu is not None:
        parts.append(Text(CAPACITY_NOTE, style="dim"))
    return Panel(Group(*parts), title="recommendation", title_align="left")


def _candidate_name(rec: Recommendation, variant: str) -> Text:
    picked = rec.pick is not None and variant == rec.pick.variant
    return Text(variant + (" ★" if picked else ""), style="bold green" if picked else "")


def _compact_candidates(rec: Recommendation) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ("variant", "mem", "Δ pts", "fits", "why"):
        table.add_column(name, justify="right" if name in ("mem", "Δ pts") else "left")
    for c in rec.candidates:
        table.add_row(
            _candidate_name(rec, c.variant),
            "?" if c.memory_bytes is None else short_size(c.memory_bytes),
            "–" if c.variant == rec.baseline else pts(c.delta),
            "yes" if c.fits else Text("no", style="red"),
            c.reason,
        )
    return table


def _compact_capacity(rec: Recommendation) -> Table:
    """Each candidate on the GPU: the capacity columns but the token lengths (one per line)."""
    from quantscope.analysis.capacity import CAPACITY_COLUMNS, capacity_cells

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title="on the GPU",
                  title_justify="left")  # fmt: skip
    table.add_column("variant")
    for name in CAPACITY_COLUMNS[1:]:
        table.add_column(name, justify="right")
    for c in rec.candidates:
        table.add_row(_candidate_name(rec, c.variant), *capacity_cells(c.serving)[1:])
    return table


def comparison_views(study: Study, width: int | None = None) -> list[RenderableType]:
    """`compare`, printed one after another: the findings in words, the comparison table and its
    notes, one table per task with levels, then the trace table and its notes."""
    analysis = study.analysis
    return [
        finding_lines(study.findings),
        comparison_table(analysis, width=width),
        comparison_notes(analysis),
        *(level_table(task, analysis.baseline) for task in study.levels),
        trace_table(study.traces, width=width),
        trace_notes(study.traces),
    ]


def comparison_json(study: Study) -> str:
    """`compare --json`: the analysis, with the traces and the levels beside it."""
    extra = {"traces": asdict(study.traces), "levels": [asdict(task) for task in study.levels]}
    return json.dumps({**study.analysis.to_dict(), **json_ready(extra)})
