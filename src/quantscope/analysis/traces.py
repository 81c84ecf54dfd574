"""Why a variant thinks longer, read from the stored text alone (no judge model).

Per generation, `signals.read_trace` finds loops, hesitations and (math tasks) where the gold
answer was first stated as a conclusion; the rules and their measured precision and recall are
in `analysis.signals`. A truncated generation is "truncated while looping" when it loops,
"truncated while progressing" otherwise. "Found but not committed": the gold answer was stated
as a conclusion in the thinking while the final answer is judged wrong or has none.

Over a (variant, task) (`TraceStats`) each rate is a mean over items of the item's mean over its
samples; against the baseline (`TraceComparison`) each difference is paired on the items both
ran, with a seeded bootstrap 95% CI over items, and so is the thinking length: the Kaplan–Meier
median thinking tokens of each side on those items, generations cut while thinking censored
(`analysis.thinking`), never a percentile that the cap pins on both sides. `false_found`
estimates the found-detector's false-positive rate: on the baseline's correct traces, how often
it "finds" another item's gold answer (one that differs from this item's), i.e. how often a
statement matches by coincidence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from quantscope.analysis.decide import resampled_means
from quantscope.analysis.metrics import DEFAULT_BOOTSTRAP
from quantscope.analysis.signals import (
    HESITATION_MARKERS,
    TraceRules,
    TraceSignals,
    first_statement_of,
    normal_answer,
    read_trace,
    repeated_tail,
)
from quantscope.analysis.thinking import ThinkingChange, paired_thinking
from quantscope.util import pct, points, pts

if TYPE_CHECKING:
    from quantscope.analysis.compare import Analysis, Comparison
    from quantscope.analysis.levels import TaskLevels
    from quantscope.store.database import Store

__all__ = [
    "HESITATION_MARKERS",
    "Delta",
    "TraceComparison",
    "TraceReport",
    "TraceRow",
    "TraceRules",
    "TraceSignals",
    "TraceStats",
    "first_statement_of",
    "item_delta",
    "read_trace",
    "read_traces",
    "repeated_tail",
    "thinking_findings",
    "trace_report",
]


# ---- over a store ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceRow:
    """One stored generation as this module reads it. `answer_tokens` (completion minus thinking
    tokens, the `</think>` tag included) tells a generation cut while thinking (0) from one cut
    in its answer; 0 by default, so a truncated row counts as cut while thinking."""

    variant: str
    task: str
    item_id: str
    target: str
    thinking: str
    text: str
    thinking_tokens: int
    truncated: bool
    correct: bool
    answer_tokens: int = 0


@dataclass
class _Signals:
    """Per-row signals of one (variant, task), column by column."""

    item: list[str] = field(default_factory=list)
    target: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    loops: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    per_k: list[float] = field(default_factory=list)
    found: list[bool | None] = field(default_factory=list)
    first: list[float | None] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    censored: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class TraceStats:
    """One (variant, task): rates are fractions of samples (means over items of item means);
    `hesitations_per_k` markers per 1,000 thinking tokens; `not_committed` the share of samples
    that found the answer and did not give it (NaN for tasks that are not math); `first_found`
    the median position of the first correct statement (fraction of the thinking)."""

    variant: str
    task: str
    samples: int
    loop_rate: float
    truncated_looping: float
    truncated_progressing: float
    hesitations_per_k: float
    not_committed: float
    first_found: float
    false_found: float | None = None


@dataclass(frozen=True)
class Delta:
    """variant - baseline over the items both ran, with a paired bootstrap 95% CI over items."""

    value: float
    baseline: float
    delta: float
    ci_low: float
    ci_high: float
    items: int

    @property
    def significant(self) -> bool:
        return bool(self.ci_low > 0 or self.ci_high < 0)


@dataclass(frozen=True)
class TraceComparison:
    """A variant's trace signals against the baseline's on one task (see the module docstring)."""

    variant: str
    baseline: str
    task: str
    loop_rate: Delta
    truncated_looping: Delta
    truncated_progressing: Delta
    hesitations_per_k: Delta
    not_committed: Delta | None
    truncated: Delta
    """The truncation rate (looping or not), so the finding can say whether it moved."""
    thinking: ThinkingChange | None = None
    """Kaplan–Meier median thinking tokens of both sides on the shared items (`analysis.thinking`)."""


@dataclass(frozen=True)
class TraceReport:
    """Every (variant, task)'s `TraceStats` and every variant's `TraceComparison` with the baseline."""

    baseline: str
    rules: TraceRules
    stats: tuple[TraceStats, ...]
    comparisons: tuple[TraceComparison, ...]

    def stat(self, variant: str, task: str) -> TraceStats | None:
        return next((s for s in self.stats if s.variant == variant and s.task == task), None)


def read_traces(
    rows: Iterable[TraceRow],
    baseline: str,
    rules: TraceRules | None = None,
    task_patterns: Mapping[str, Sequence[str] | None] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    task_hesitations: Mapping[str, Sequence[str]] | None = None,
) -> TraceReport:
    """Read every row (one pass; rows may stream from the store) and compare each variant with
    `baseline`. `task_patterns` maps a task to its own answer patterns (None or absent: not a math
    task, no found-but-not-committed); `task_hesitations` to its own hesitation patterns."""
    rules = rules or TraceRules()
    math = {t: p for t, p in (task_patterns or {}).items() if p is not None}
    hesitations = task_hesitations or {}
    per_task = {
        t: rules.with_patterns(math.get(t, ()), hesitations.get(t, ())) for t in {*math, *hesitations}
    }
    signals: dict[tuple[str, str], _Signals] = defaultdict(_Signals)
    for row in rows:
        task_rules = per_task.get(row.task, rules)
        is_math = row.task in math
        read = read_trace(row.thinking, row.text, row.target, task_rules, math=is_math)
        column = signals[(row.variant, row.task)]
        column.item.append(row.item_id)
        column.target.append(row.target)
        keep = is_math and row.correct and row.variant == baseline  # for false_found
        column.thinking.append(row.thinking if keep else "")
        column.loops.append(read.loops)
        column.truncated.append(row.truncated)
        column.correct.append(row.correct)
        column.per_k.append(1000 * read.hesitations / row.thinking_tokens if row.thinking_tokens else np.nan)
        column.found.append(read.found)
        column.first.append(read.first_found)
        column.tokens.append(row.thinking_tokens)
        column.censored.append(row.truncated and row.answer_tokens == 0)
    stats = []
    for (variant, task), column in sorted(signals.items()):
        false = _false_found(column, per_task[task]) if variant == baseline and task in math else None
        stats.append(_stats(variant, task, column, false))
    comparisons = [
        _compare(variant, baseline, task, column, signals[(baseline, task)], n_boot, seed)
        for (variant, task), column in sorted(signals.items())
        if variant != baseline and (baseline, task) in signals
    ]
    return TraceReport(baseline, rules, tuple(stats), tuple(comparisons))


def _columns(column: _Signals) -> dict[str, np.ndarray]:
    """Per-row values of each signal (NaN where it does not apply)."""
    loops, truncated = np.array(column.loops), np.array(column.truncated)
    correct = np.array(column.correct)
    found = np.array([np.nan if f is None else float(f) for f in column.found])
    return {
        "loop_rate": loops.astype(float),
        "truncated_looping": (loops & truncated).astype(float),
        "truncated_progressing": (~loops & truncated).astype(float),
        "truncated": truncated.astype(float),
        "hesitations_per_k": np.array(column.per_k, dtype=float),
        "not_committed": np.where(np.isnan(found), np.nan, found * (~correct)),
    }


def _item_means(items: Sequence[str], values: np.ndarray) -> dict[str, float]:
    by_item: dict[str, list[float]] = defaultdict(list)
    for item, value in zip(items, values, strict=True):
        if not np.isnan(value):
            by_item[item].append(float(value))
    return {item: float(np.mean(v)) for item, v in by_item.items()}


def _stats(variant: str, task: str, column: _Signals, false_found: float | None) -> TraceStats:
    means = {name: _item_means(column.item, values) for name, values in _columns(column).items()}
    first = [f for f in column.first if f is not None]

    def mean(name: str) -> float:
        return float(np.mean(list(means[name].values()))) if means[name] else float("nan")

    return TraceStats(
        variant=variant,
        task=task,
        samples=len(column.item),
        loop_rate=mean("loop_rate"),
        truncated_looping=mean("truncated_looping"),
        truncated_progressing=mean("truncated_progressing"),
        hesitations_per_k=mean("hesitations_per_k"),
        not_committed=mean("not_committed"),
        first_found=float(np.median(first)) if first else float("nan"),
        false_found=false_found,
    )


def _compare(
    variant: str, baseline: str, task: str, ours: _Signals, theirs: _Signals, n_boot: int, seed: int
) -> TraceComparison:
    mine, base = _columns(ours), _columns(theirs)
    deltas = {
        name: item_delta(
            _item_means(ours.item, mine[name]), _item_means(theirs.item, base[name]), n_boot, seed
        )
        for name in mine
    }
    committed = deltas["not_committed"]
    thinking = paired_thinking(
        (ours.item, np.array(ours.tokens), np.array(ours.censored)),
        (theirs.item, np.array(theirs.tokens), np.array(theirs.censored)),
        n_boot,
        seed,
    )
    return TraceComparison(
        variant=variant,
        baseline=baseline,
        task=task,
        loop_rate=deltas["loop_rate"],
        truncated_looping=deltas["truncated_looping"],
        truncated_progressing=deltas["truncated_progressing"],
        hesitations_per_k=deltas["hesitations_per_k"],
        not_committed=committed if committed.items else None,
        truncated=deltas["truncated"],
        thinking=thinking if thinking.items else None,
    )


def item_delta(ours: Mapping[str, float], theirs: Mapping[str, float], n_boot: int, seed: int) -> Delta:
    """Mean of per-item differences over the items in both maps, with a bootstrap 95% CI over items
    (`decide.resampled_means`, the resampler `compare.paired_delta` uses)."""
    shared = sorted(set(ours) & set(theirs))
    if not shared:
        nan = float("nan")
        return Delta(nan, nan, nan, nan, nan, 0)
    a = np.array([ours[i] for i in shared])
    b = np.array([theirs[i] for i in shared])
    diff = a - b
    boot = resampled_means(diff, n_boot, np.random.default_rng(seed))
    low, high = np.percentile(boot, [2.5, 97.5])
    return Delta(float(a.mean()), float(b.mean()), float(diff.mean()), float(low), float(high), len(shared))


def _false_found(column: _Signals, rules: TraceRules) -> float | None:
    """The found-detector's coincidence rate on correct traces: another item's gold answer
    (the next item, in stored order, whose answer differs) "found" in this trace."""
    targets = list(dict.fromkeys(zip(column.item, column.target, strict=True)))
    if len(targets) < 2:
        return None
    decoy = {}
    for index, (item, target) in enumerate(targets):
        for step in range(1, len(targets)):
            other = targets[(index + step) % len(targets)][1]
            if normal_answer(other) != normal_answer(target):
                decoy[item] = other
                break
    fired = [
        first_statement_of(thinking, decoy[item], rules) is not None
        for item, thinking, correct in zip(column.item, column.thinking, column.correct, strict=True)
        if correct and thinking and item in decoy
    ]
    return float(np.mean(fired)) if fired else None


def task_trace_patterns(task: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """A stored task's own (answer patterns, hesitation patterns): answer patterns None for a task
    that is not math (or that this install lacks)."""
    from quantscope.errors import QuantscopeError
    from quantscope.tasks.registry import task_class

    try:
        kind = task_class(task)
    except QuantscopeError:
        return None, ()
    return kind.answer_patterns, tuple(kind.hesitation_patterns)


def trace_report(
    store: Store,
    baseline: str,
    rules: TraceRules | None = None,
    tasks: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> TraceReport:
    """`read_traces` over every row of `store` (of `tasks`, when given), streamed."""

    def rows() -> Iterator[TraceRow]:
        for row in store.traces():
            if tasks is None or row["task"] in tasks:
                yield TraceRow(
                    variant=row["variant"],
                    task=row["task"],
                    item_id=str(row["item_id"]),
                    target=row["target"],
                    thinking=row["thinking"],
                    text=row["text"],
                    thinking_tokens=int(row["thinking_tokens"]),
                    truncated=row["finish_reason"] == "length",
                    correct=bool(row["correct"]),
                    answer_tokens=int(row["answer_tokens"]),
                )

    names = tasks if tasks is not None else sorted({task for _, task in store.pairs()})
    patterns = {task: task_trace_patterns(task) for task in names}
    answers = {task: found for task, (found, _) in patterns.items()}
    hesitations = {task: own for task, (_, own) in patterns.items() if own}
    return read_traces(rows(), baseline, rules, answers, n_boot, seed, hesitations)


def thinking_findings(
    analysis: Analysis, report: TraceReport, levels: Sequence[TaskLevels] = ()
) -> tuple[str, ...]:
    """The finding for each (variant, task) in words: how its thinking and truncation moved
    against the baseline on the items both ran (the Kaplan–Meier median thinking tokens, cut
    generations censored, with the ratio's paired 95% CI; the truncation rate with its), what
    the accuracy did, the level where truncation rose most when it rose significantly there
    (`levels`, from `analysis.levels`), and which trace signals moved significantly; or that
    nothing did at this sample size (never "no effect": an undecided comparison may still hide one)."""
    traces = {(c.variant, c.task): c for c in report.comparisons}
    by_task = {task.task: task for task in levels}
    lines = []
    for c in analysis.comparisons:
        t = traces.get((c.variant, c.task))
        if t is not None:
            level = _most_truncated_level(by_task.get(c.task), c.variant)
            lines.append(f"{c.variant} on {c.task}: {_finding(c, t, level)}")
    return tuple(lines)


def _most_truncated_level(levels: TaskLevels | None, variant: str) -> str | None:
    """Where `variant`'s truncation rose most, in words, among the levels where it rose significantly."""
    risen = [
        r
        for r in (levels.results if levels else ())
        if r.variant == variant and r.truncation and r.truncation.significant and r.truncation.delta > 0
    ]
    if levels is None or not risen:
        return None
    worst = max(risen, key=lambda r: r.truncation.delta if r.truncation else 0.0)
    cut, c = worst.truncation, worst.comparison
    if cut is None or c is None:  # never: a level compared with the baseline has both
        return None
    return (
        f"on {levels.key} {worst.level}: truncation {pct(cut.baseline)} → {pct(cut.value)} (significant), "
        f"accuracy {pts(c.delta)} pts"
    )


def _finding(c: Comparison, t: TraceComparison, level: str | None = None) -> str:
    thinking = thinking_words(t.thinking)
    accuracy = f"accuracy {pts(c.delta)} pts [{pts(c.delta_ci_low)}, {pts(c.delta_ci_high)}], {c.verdict}"
    signals = [
        f"{name} {points(delta.delta, rate=rate, signed=True)}{'/1k tokens' if rate else ' pts'}"
        for name, delta, rate in (
            ("loops", t.loop_rate, False),
            ("hesitations", t.hesitations_per_k, True),
            ("found-not-given", t.not_committed, False),
        )
        if delta is not None and delta.significant
    ]
    longer = t.thinking is not None and t.thinking.significant
    if not (t.truncated.significant or c.significant or signals or level or longer):
        sample = f"{c.paired_items} items; {thinking}, {accuracy}"
        return f"no significant effect at this sample size ({sample})"
    cut = t.truncated
    truncation = f"truncation {pct(cut.baseline)} → {pct(cut.value)}"
    truncation += " (significant)" if cut.significant else " (not significant)"
    parts = [thinking, truncation, *([level] if level else []), accuracy]
    if c.explained_by_truncation:
        parts.append("loss explained by truncation")
    return "; ".join(parts + signals)


def thinking_words(change: ThinkingChange | None) -> str:
    """The median thinking change in words: "median thinking 1,204 → 1,530 tokens (+27% [+10%,
    +45%])", or which side has half or more of its generations cut (the median beyond the cap)."""
    if change is None:
        return "median thinking –"
    ours, theirs = change.value, change.baseline
    if ours.identified and theirs.identified:
        ci = (
            f"[{_change(change.ci_low)}, {_change(change.ci_high)}]"
            if not np.isnan(change.ci_low)
            else "no CI"
        )
        return (
            f"median thinking {theirs.median:,.0f} → {ours.median:,.0f} tokens ({_change(change.ratio)} {ci})"
        )
    if theirs.identified:
        return f"median thinking {theirs.median:,.0f} → over {ours.longest:,.0f} tokens (half or more cut)"
    if ours.identified:
        over = f"over {theirs.longest:,.0f}"
        return f"median thinking {over} → {ours.median:,.0f} tokens (baseline half or more cut)"
    return "median thinking over the cap on both sides (half or more cut)"


def _change(ratio: float) -> str:
    """A ratio as a signed percent change ("+27%"); an unbounded one as "+∞"."""
    return "+∞" if np.isinf(ratio) else f"{100 * (ratio - 1):+.0f}%"
