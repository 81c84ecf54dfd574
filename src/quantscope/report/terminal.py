"""Every terminal renderer: rich tables and panels for each command's result, and nothing else.

Each function takes a library record (an Anatomy, a Plan, a VerifyReport, an Analysis, a
SensitivityProfile…) and returns a rich renderable; the CLI only prints them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Column, Table
from rich.text import Text

from quantscope.checkpoint.anatomy import DTYPE_BITS
from quantscope.util import format_count, format_size, pct, points, pts, ratio, short_size

if TYPE_CHECKING:
    from pathlib import Path

    from quantscope.analysis.compare import Analysis, Comparison, VariantInfo
    from quantscope.analysis.levels import LevelResult, TaskLevels
    from quantscope.analysis.metrics import TaskMetrics
    from quantscope.analysis.recommend import Recommendation
    from quantscope.analysis.traces import Delta, TraceReport
    from quantscope.checkpoint.anatomy import Anatomy
    from quantscope.checkpoint.contents import Contents
    from quantscope.demo import DemoResult
    from quantscope.evaluate.runner import RunSummary
    from quantscope.evaluate.until_decided import AdaptiveSummary
    from quantscope.plan.derive import DerivedRecipe, LikePlan
    from quantscope.plan.recipe import Footprint, Plan, Recipe
    from quantscope.plan.serving import ServingPlan
    from quantscope.quantize import QuantizeResult, VerifyReport
    from quantscope.sensitivity.profiler import ProfileRun
    from quantscope.sensitivity.records import SensitivityProfile
    from quantscope.sensitivity.search import SearchResult
    from quantscope.sweep import SweepResult
    from quantscope.sweep.estimate import SweepEstimate


_VERDICT_STYLE = {"better": "green", "worse": "red", "worse: mostly truncation": "yellow", "undecided": "dim"}


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
        shown + (" (allowed mismatch)" if c.mismatches else ""), style=_VERDICT_STYLE.get(c.verdict, "")
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


# ---- eval ------------------------------------------------------------------------------------


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
            str(m.max_tokens),
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
                f"{m.max_tokens:,}-token cap, so accuracy at this cap understates the model "
                f"({pct(m.accuracy_finished)} among finished); raise --max-tokens, or read the budget "
                "curves in the report",
                style="yellow",
            )
            for m in metrics
            if m.truncation_rate > CAP_WARNING
        )
    )


# ---- inspect / plan ----------------------------------------------------------------------------


def anatomy_view(contents: Contents, with_tensors: bool = False) -> Group:
    """A checkpoint's anatomy: a header line, the label set against the contents, the layer kinds,
    the groups table (stored formats, logical params, bytes, bits per weight), every tensor when
    asked, and the tensors no rule recognised."""
    anatomy = contents.anatomy
    parts: list[RenderableType] = [
        Text.from_markup(
            f"[bold]{anatomy.source}[/]  model_type={anatomy.model_type}  tensors={len(anatomy.tensors)}  "
            f"params={format_count(contents.params)}  size={format_size(anatomy.total_bytes)}  "
            f"fused sets={len(anatomy.fused_sets)}"
        ),
        Text(contents.summary()),
    ]
    if contents.unrecognised:
        parts.append(
            Text(
                f"{len(contents.unrecognised)} modules in no layout quantscope reads (counted as stored): "
                + "; ".join(contents.unrecognised[:3]),
                "yellow",
            )
        )
    derived = anatomy.config.get("quantscope_derived")
    if isinstance(derived, dict):
        parts.append(
            Text(f"derived from the config alone (no weights read): {_derived_note(derived)}", "yellow")
        )
    kinds = anatomy.layer_types
    if kinds:
        layers = sum(kinds.values())
        parts.append(Text(f"{layers} layers: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())))
    parts.append(_groups_table(contents))
    if with_tensors:
        parts.append(_tensors_table(anatomy))
    if anatomy.unknown:
        parts.append(
            Text(f"{len(anatomy.unknown)} tensors match no group (counted under 'other'):", "yellow")
        )
        parts += [Text(f"  {t.name}  {t.dtype} {list(t.shape)}") for t in anatomy.unknown[:50]]
    return Group(*parts)


def _derived_note(derived: dict) -> str:
    defaults = derived.get("defaults") or {}
    listed = ", ".join(f"{key}={value}" for key, value in defaults.items())
    note = f"defaults used for keys the config lacks: {listed}" if listed else "every key was in the config"
    differ = (derived.get("quantization") or {}).get("hf_quant_config_disagrees")
    if differ is not None:
        note += (
            "; the hf_quant_config.json beside it declares the same formats"
            if not differ
            else "; the hf_quant_config.json beside it declares otherwise (vLLM reads config.json): "
            + "; ".join(differ)
        )
    return note


def _stored_as(contents: Contents, group: str) -> str:
    """Format labels by share of the group's linear parameters, e.g. "INT4 g128 97%, BF16 3%";
    the dtypes for groups without linear weights (norms, embeddings)."""
    formats = contents.groups[group].formats
    total = sum(p for p, _ in formats.values())
    if not total:
        dtypes = {t.dtype for t in contents.anatomy.tensors if t.group == group}
        return ", ".join(sorted(d if d in DTYPE_BITS else f"GGUF {d}" for d in dtypes))
    ranked = sorted(formats.items(), key=lambda item: -item[1][0])
    return ", ".join(
        label if len(ranked) == 1 else f"{label} {_share(p / total)}" for label, (p, _) in ranked
    )


def _share(fraction: float) -> str:
    return "<1%" if 0 < fraction < 0.005 else f"{fraction:.0%}"


def _groups_table(contents: Contents) -> Table:
    # Group names never wrap (scripts grep for them); the formats column wraps instead.
    table = Table(
        Column("group", no_wrap=True),
        "tensors",
        "params",
        "bytes",
        "bits/weight",
        "declared as" if contents.declared_in else "stored as",
        title="Anatomy by group",
    )
    members = contents.anatomy.by_group()
    for group, stored in contents.groups.items():
        table.add_row(
            group,
            str(len(members[group])),
            f"{stored.params:,}",
            format_size(stored.nbytes),
            f"{stored.bits_per_weight:.2f}",
            _stored_as(contents, group),
        )
    table.add_row(
        "total",
        str(len(contents.anatomy.tensors)),
        f"{contents.params:,}",
        format_size(contents.nbytes),
        f"{contents.bits_per_weight:.2f}",
        contents.label,
        style="bold",
    )
    return table


def contents_side_by_side(checkpoints: Sequence[Contents]) -> Group:
    """`inspect A B …`: per group each checkpoint's size, bits per weight and stored formats, then
    each checkpoint's label line."""
    table = Table(Column("group", no_wrap=True), title="Side by side")
    for index in range(1, len(checkpoints) + 1):
        table.add_column(f"[{index}] size", justify="right")
        table.add_column(f"[{index}] bits/w", justify="right")
        table.add_column(f"[{index}] stored as")
    groups = list(dict.fromkeys(g for c in checkpoints for g in c.groups))
    for group in groups:
        row = [group]
        for contents in checkpoints:
            stored = contents.groups.get(group)
            row += (
                [format_size(stored.nbytes), f"{stored.bits_per_weight:.2f}", _stored_as(contents, group)]
                if stored
                else ["-", "-", "-"]
            )
        table.add_row(*row)
    total = ["total"]
    for contents in checkpoints:
        total += [format_size(contents.nbytes), f"{contents.bits_per_weight:.2f}", contents.label]
    table.add_row(*total, style="bold")
    lines = [Text(f"[{i}] {c.anatomy.source}: {c.summary()}") for i, c in enumerate(checkpoints, start=1)]
    return Group(table, *lines)


def _tensors_table(anatomy: Anatomy) -> Table:
    table = Table("tensor", "group", "dtype", "shape", "bytes", title="Tensors")
    for tensor in anatomy.tensors:
        table.add_row(tensor.name, tensor.group, tensor.dtype, str(list(tensor.shape)), f"{tensor.nbytes:,}")
    return table


def plan_table(plan: Plan) -> Table:
    """Every recipe's predicted size, its ratio to the original, what stays 16-bit, and the budget fit."""
    anatomy, budget = plan.anatomy, plan.budget_bytes
    title = f"Predicted size of {anatomy.source} (original {format_size(anatomy.total_bytes)})"
    if plan.source is not None:
        held = plan.source
        how = f"declared in {held.declared_in}" if held.declared_in else "as stored"
        title = (
            f"Predicted size of {anatomy.source}, planned as its unquantized model "
            f"({format_size(anatomy.total_bytes)}); the checkpoint itself: labelled {held.label}, "
            f"{format_size(held.nbytes)} {how}"
        )
    columns = ["recipe", "scheme", "size", "vs original", "linear layers kept 16-bit"]
    table = Table(*columns, *(["fits " + format_size(budget)] if budget is not None else []), title=title)
    for recipe, footprint in zip(plan.recipes, plan.footprints, strict=True):
        row = [
            recipe.name,
            recipe.scheme,
            format_size(footprint.total_bytes),
            f"{footprint.ratio:.1%}",
            _kept_summary(recipe, footprint),
        ]
        if budget is not None:
            row.append("[green]yes[/]" if footprint.fits(budget) else "[red]no[/]")
        table.add_row(*row)
    return table


def serving_table(plan: Plan, serving: ServingPlan) -> Table:
    """`plan --gpu`: per recipe, the weights per GPU, the KV pool left, bytes per token and per
    sequence, the sequences that fit at the context, and the decode roofline."""
    options = serving.options
    kv = "KV" if options.kv_dtype == "auto" else f"{options.kv_dtype} KV"
    title = (
        f"{plan.anatomy.source} on {serving.gpu_name} ({format_size(serving.gpu_bytes)} per GPU, "
        f"tp={options.tp}, {options.context:,}-token context, {kv}, "
        f"{options.gpu_memory_utilization:.0%} for vLLM)"
    )
    columns = [
        "recipe",
        "weights/GPU",
        "KV pool",
        "KV/token",
        "state/seq",
        "seqs at context",
        "decode ≤ tok/s",
    ]
    table = Table(*columns, title=title, caption=_serving_caption(serving))
    for row in serving.recipes:
        held = row.capacity
        fits = f"{held.max_concurrency:.1f}" if held.fits else "[red]does not fit[/]"
        table.add_row(
            row.recipe,
            format_size(held.weight_bytes),
            format_size(held.kv_pool_bytes) if held.kv_pool_bytes > 0 else "[red]none[/]",
            short_size(held.layout.kv_bytes_per_token),
            short_size(held.layout.state_bytes_per_sequence) if held.layout.state_bytes_per_sequence else "–",
            fits,
            f"{row.roofline.tokens_per_s:,.0f} @{row.roofline.batch}" if row.roofline else "–",
        )
    return table


def _serving_caption(serving: ServingPlan) -> str:
    if not serving.recipes:
        return ""
    first = serving.recipes[0].capacity
    return (
        f"engine reserve ≈ {format_size(first.reserve.total_bytes)} (estimated); KV paging as vLLM 0.32 "
        f"computes it (block {first.layout.block_size} tokens); "
        "decode tok/s @batch: memory-bandwidth upper bound at the batch that fits (≤ 256), sequences half "
        "the context long"
    )


def like_plan_view(like: LikePlan) -> Group:
    """`plan MODEL --like CHECKPOINT`: the derived recipe, its footprint on MODEL, and the self-check."""
    recipe = like.transferred.recipe
    rules = ", ".join(f"{o.pattern} -> {o.scheme}" for o in recipe.overrides[:8])
    more = f" (+{len(recipe.overrides) - 8} more)" if len(recipe.overrides) > 8 else ""
    lines: list[RenderableType] = [
        Text.from_markup(
            f"[bold]recipe of {like.self_footprint.source}[/]: scheme {recipe.scheme}; kept 16-bit: "
            f"{', '.join(recipe.keep_groups) or 'nothing beyond the fixed rules'}; "
            f"quantize_lm_head={recipe.quantize_lm_head}"
        ),
        Text(f"overrides: {rules}{more}" if rules else "overrides: none"),
    ]
    derived = like.derived
    if derived.reproduces:
        lines.append(Text("the recipe reproduces the checkpoint's stored format, module for module", "green"))
    else:
        lines.append(Text(f"{len(derived.mismatched)} modules differ, e.g. {derived.mismatched[0]}", "red"))
    if derived.unrepresentable:
        sample = next(iter(derived.unrepresentable.items()))
        lines.append(
            Text(
                f"{len(derived.unrepresentable)} weights are in formats no quantscope scheme stores "
                f"(e.g. {sample[0]}: {sample[1]}); counted as 16-bit",
                "yellow",
            )
        )
    if derived.approximate:
        sample = next(iter(derived.approximate.values()))
        lines.append(
            Text(
                f"{len(derived.approximate)} weights map onto a scheme with other scales or activations "
                f"(e.g. {sample})",
                "yellow",
            )
        )
    if like.transferred.dropped:
        lines.append(
            Text(
                f"rules that match nothing in {like.footprint.source}, dropped: "
                + "; ".join(like.transferred.dropped[:5]),
                "yellow",
            )
        )
    gap = like.self_footprint.total_bytes / like.checkpoint_bytes - 1 if like.checkpoint_bytes else 0.0
    why = (
        "packing, scales and the differences above"
        if not derived.reproduces or derived.unrepresentable
        else "the producer's packing and scales against AutoRound's"
    )
    lines.append(
        Text(
            f"self-check: on the checkpoint's own shapes the recipe predicts "
            f"{format_size(like.self_footprint.total_bytes)}; it stores {format_size(like.checkpoint_bytes)} "
            f"({gap:+.2%}: {why})"
        )
    )
    footprint = like.footprint
    table = Table("group", "bytes", "of which 16-bit", title=f"{recipe.name} on {footprint.source}")
    for group, nbytes in footprint.bytes_by_group.items():
        if nbytes:
            table.add_row(group, format_size(nbytes), format_size(footprint.kept_bytes_by_group[group]))
    table.add_row(
        "total", format_size(footprint.total_bytes), format_size(footprint.kept_bytes), style="bold"
    )
    return Group(
        *lines, table, Text(f"{footprint.ratio:.1%} of the original {format_size(footprint.original_bytes)}")
    )


def derived_recipe_line(derived: DerivedRecipe, out: Path) -> str:
    """`recipe from-checkpoint`: where the recipe went and whether it reproduces the checkpoint."""
    verdict = (
        "reproduces it module for module"
        if derived.reproduces
        else f"differs on {len(derived.mismatched)} modules (e.g. {derived.mismatched[0]})"
    )
    extra = (
        f"; {len(derived.unrepresentable)} weights in formats no scheme stores"
        if derived.unrepresentable
        else ""
    )
    rules = f"scheme {derived.recipe.scheme}, {len(derived.recipe.overrides)} overrides"
    return f"wrote {out}: {rules}; {verdict}{extra}"


def _kept_summary(recipe: Recipe, footprint: Footprint) -> str:
    if not recipe.format.is_quantized:
        return "all (unquantized)"
    kept = [(g, b) for g, b in footprint.kept_bytes_by_group.items() if b]
    return ", ".join(f"{group} {format_size(nbytes)}" for group, nbytes in kept) or "-"


# ---- quantize / verify -----------------------------------------------------------------------


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


# ---- profile ---------------------------------------------------------------------------------


def _kl(value: float) -> str:
    return f"{value:.1e}"


def profile_view(run: ProfileRun) -> Group:
    """What `quantscope profile` found: where the profile went, the damage tables, what was not
    measured, and with a budget the searched recipe (and its measured KL)."""
    profile = run.profile
    parts: list[RenderableType] = []
    if run.profile_path is not None:
        parts.append(Text(f"profile written to {run.profile_path} ({profile.seconds:.1f} s)"))
    parts += profile_tables(profile)
    if profile.unmeasured:
        missing = ", ".join(profile.unmeasured)
        parts.append(Text(f"not measured (absent from the loaded model, kept 16-bit): {missing}"))
    if run.search is not None:
        found = run.search
        parts.append(search_table(found))
        parts.append(
            Text(
                f"recipe written to {run.recipe_path}: {format_size(found.total_bytes)} of a "
                f"{format_size(found.budget_bytes)} budget, predicted damage {found.predicted_damage:.3e} "
                f"({found.objective})"
            )
        )
    if run.measured is not None:
        by_position = ", ".join(
            f"{label} {kl:.2e}"
            for label, kl in zip(profile.bucket_labels(), run.measured.kl_by_bucket, strict=True)
        )
        parts.append(
            Text(f"measured KL of the searched recipe: {run.measured.kl:.3e} (by position: {by_position})")
        )
    return Group(*parts)


def profile_tables(profile: SensitivityProfile) -> tuple[Table, Table]:
    """(cost and damage per unit and scheme, damage by position for the main scheme)."""
    scheme = profile.scheme
    units = Table(title=f"Damage per unit: KL(original || quantized) in nats/token ({profile.data})")
    units.add_column("unit", no_wrap=True)
    for option in profile.schemes:
        units.add_column(f"{option} saves", justify="right")
        units.add_column(f"KL {option}", justify="right")
    units.add_column(f"top-1 {scheme}", justify="right")
    positions = Table(title=f"KL {scheme} by token position ({profile.n_sequences}x{profile.seq_len} tokens)")
    positions.add_column("unit", no_wrap=True)
    for label in profile.bucket_labels():
        positions.add_column(label, justify="right")
    positions.add_column("last/first", justify="right")
    for unit in profile.units:
        cells = [unit.name]
        for option in profile.schemes:
            cells += [short_size(unit.bytes_saved(option)), _kl(unit.damage_for(option).kl)]
        units.add_row(*cells, f"{unit.damage_for(scheme).top1_agreement:.3f}")
        positions.add_row(unit.name, *_position_cells(unit.damage_for(scheme).kl_by_bucket))
    for damage in profile.uniform:
        cells = [f"all at once ({damage.scheme})"]
        for option in profile.schemes:
            saved = sum(u.bytes_saved(option) for u in profile.units)
            cells += [short_size(saved), _kl(damage.kl)] if option == damage.scheme else ["", ""]
        top1 = f"{damage.top1_agreement:.3f}" if damage.scheme == scheme else ""
        units.add_row(*cells, top1, style="bold")
        if damage.scheme == scheme:
            positions.add_row("all at once", *_position_cells(damage.kl_by_bucket), style="bold")
    return units, positions


def _position_cells(by_bucket: tuple[float, ...]) -> list[str]:
    growth = f"{by_bucket[-1] / by_bucket[0]:.2f}x" if by_bucket[0] > 0 else "-"
    return [_kl(kl) for kl in by_bucket] + [growth]


def search_table(result: SearchResult) -> Table:
    """The searched recipe unit by unit: stored as, bytes, damage."""
    table = Table(title=f"Searched recipe {result.recipe.name}")
    table.add_column("unit")
    table.add_column("stored as")
    table.add_column("bytes", justify="right")
    table.add_column(f"damage ({result.objective})", justify="right")
    for choice in result.choices:
        table.add_row(choice.unit, choice.scheme, short_size(choice.bytes), _kl(choice.damage))
    return table


# ---- demo ------------------------------------------------------------------------------------


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
                style=_VERDICT_STYLE.get(d.verdict, ""),
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
