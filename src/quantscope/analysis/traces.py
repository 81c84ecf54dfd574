"""Why a variant thinks longer, read from the stored text alone (no judge model).

Per generation (`read_trace`), with the rules of `TraceRules`:

- loop: the generation ends in a repeated stretch, a block of words repeated back to back at least
  `loop_repeats` times and covering at least `loop_words` words of the tail (a block cut off by
  the cap counts). A truncated generation is "truncated while looping" when it loops, "truncated
  while progressing" otherwise.
- hesitations: occurrences of the hesitation markers ("wait", "but", "alternatively", ...: whole
  words or phrases, any case) in the thinking; reported per 1,000 thinking tokens.
- found but not committed (math tasks only: those whose task declares `answer_patterns`): the
  gold answer appears in the thinking in an answer pattern (a box, "the answer is X", a line
  ending "= X", plus the task's own) while the final answer is judged wrong or has none. Answers
  are compared as integers when both parse, else as text with spaces, `$` and `\\left/\\right`
  removed, so an equivalent form written differently is missed (the detector undercounts).
  `first_found` is where the first such match starts, as a fraction of the thinking's characters.

Over a (variant, task) (`TraceStats`) each rate is a mean over items of the item's mean over its
samples; against the baseline (`TraceComparison`) each difference is paired on the items both
ran, with a seeded bootstrap 95% CI over items. `false_found` estimates the found-detector's
false-positive rate: on the baseline's correct traces, how often it "finds" another item's gold
answer (one that differs from this item's), i.e. how often a pattern matches by coincidence.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from quantscope.analysis.metrics import DEFAULT_BOOTSTRAP
from quantscope.tasks.answers import parse_integer, strip_wrappers
from quantscope.util import pct, points, pts

if TYPE_CHECKING:
    from quantscope.analysis.compare import Analysis, Comparison
    from quantscope.analysis.levels import TaskLevels
    from quantscope.analysis.metrics import TokenStats
    from quantscope.store import Store

HESITATION_MARKERS = (
    "wait",
    "but",
    "alternatively",
    "hmm",
    "actually",
    "however",
    "let me check",
    "let me double-check",
    "let me verify",
    "on second thought",
)
"""English hesitation markers (the words published analyses of quantized reasoners single out)."""

ANSWER_PATTERNS = (
    r"\\boxed\{((?:[^{}]|\{[^{}]*\})+)\}",
    r"answer is[:\s]*(.+?)\s*(?:[.;]\s|[.;]?$)",
    r"=\s*([^=\n]+?)\s*$",
)
"""Where a math trace states an answer: a box, "the answer is X", a line ending "= X"."""


@dataclass(frozen=True)
class TraceRules:
    """What counts as a hesitation (`markers`, case-insensitive words or phrases), where a trace
    states an answer (`answer_patterns`, regexes with one group, applied per line in MULTILINE
    mode), and what counts as a loop (a block repeated `loop_repeats` times over `loop_words`
    words at least, blocks up to `max_period` words long)."""

    markers: tuple[str, ...] = HESITATION_MARKERS
    answer_patterns: tuple[str, ...] = ANSWER_PATTERNS
    loop_repeats: int = 3
    loop_words: int = 24
    max_period: int = 200

    def hesitation_regex(self) -> re.Pattern[str]:
        return _marker_regex(self.markers)

    def with_patterns(self, extra: Sequence[str]) -> TraceRules:
        """These rules plus a task's own answer patterns."""
        return replace(self, answer_patterns=(*self.answer_patterns, *extra))


@lru_cache(maxsize=16)
def _marker_regex(markers: tuple[str, ...]) -> re.Pattern[str]:
    words = sorted(markers, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class TraceSignals:
    """What one generation shows: `loop_words` (the repeated tail's length in words, 0 when it
    does not loop), `hesitations` (markers in the thinking), and for math tasks `found` (the gold
    answer appears in an answer pattern of the thinking; None for other tasks) with `first_found`
    (fraction of the thinking's characters before the first such match; None when not found)."""

    loops: bool
    loop_words: int
    hesitations: int
    found: bool | None
    first_found: float | None


def repeated_tail(words: Sequence[str], max_period: int = 200) -> tuple[int, int]:
    """The longest tail of `words` made of one block repeated back to back: (its length in
    words, the block's length); (0, 0) for none. A final block cut short still counts."""
    best, best_period = 0, 0
    n = len(words)
    for period in range(1, min(max_period, n // 2) + 1):
        run = 0
        while run < n - period and words[n - 1 - run] == words[n - 1 - run - period]:
            run += 1
        length = run + period
        if run >= period and length > best:
            best, best_period = length, period
    return best, best_period


def read_trace(
    thinking: str, text: str, target: str | None, rules: TraceRules, *, math: bool
) -> TraceSignals:
    """The signals of one generation (`text` is all of it, `thinking` its thinking part);
    `target` the gold answer, used on math tasks only."""
    length, period = repeated_tail(text.split(), rules.max_period)
    loops = period > 0 and length >= rules.loop_words and length >= rules.loop_repeats * period
    hesitations = len(rules.hesitation_regex().findall(thinking))
    found, first = (None, None)
    if math and target is not None:
        position = first_statement_of(thinking, target, rules.answer_patterns)
        found = position is not None
        first = position / max(len(thinking), 1) if position is not None else None
    return TraceSignals(loops, length if loops else 0, hesitations, found, first)


def first_statement_of(thinking: str, target: str, patterns: Sequence[str]) -> int | None:
    """Where the first answer pattern of `thinking` stating `target` starts (characters), or None."""
    gold = _normal(target)
    starts = [
        match.start()
        for pattern in patterns
        for match in re.finditer(pattern, thinking, re.MULTILINE | re.IGNORECASE)
        if _same(_normal(match.group(1)), gold)
    ]
    return min(starts) if starts else None


def _normal(answer: str) -> str:
    text = answer
    for noise in ("\\left", "\\right", "$", " ", "\\!", "\\,"):
        text = text.replace(noise, "")
    return strip_wrappers(text)


def _same(candidate: str, gold: str) -> bool:
    if not candidate:
        return False
    ours, theirs = parse_integer(candidate), parse_integer(gold)
    if ours is not None and theirs is not None and candidate.lstrip("+-").isdigit():
        return ours == theirs
    return candidate == gold


# ---- over a store ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceRow:
    """One stored generation as this module reads it."""

    variant: str
    task: str
    item_id: str
    target: str
    thinking: str
    text: str
    thinking_tokens: int
    truncated: bool
    correct: bool


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
) -> TraceReport:
    """Read every row (one pass; rows may stream from the store) and compare each variant with
    `baseline`. `task_patterns` maps a task to its own answer patterns (None or absent: not a math
    task, no found-but-not-committed)."""
    rules = rules or TraceRules()
    task_patterns = task_patterns or {}
    per_task_rules = {t: rules.with_patterns(p) for t, p in task_patterns.items() if p is not None}
    signals: dict[tuple[str, str], _Signals] = defaultdict(_Signals)
    for row in rows:
        task_rules = per_task_rules.get(row.task)
        read = read_trace(
            row.thinking, row.text, row.target, task_rules or rules, math=task_rules is not None
        )
        column = signals[(row.variant, row.task)]
        column.item.append(row.item_id)
        column.target.append(row.target)
        keep = task_rules is not None and row.correct and row.variant == baseline  # for false_found
        column.thinking.append(row.thinking if keep else "")
        column.loops.append(read.loops)
        column.truncated.append(row.truncated)
        column.correct.append(row.correct)
        column.per_k.append(1000 * read.hesitations / row.thinking_tokens if row.thinking_tokens else np.nan)
        column.found.append(read.found)
        column.first.append(read.first_found)
    stats = []
    for (variant, task), column in sorted(signals.items()):
        false = (
            _false_found(column, per_task_rules[task])
            if variant == baseline and task in per_task_rules
            else None
        )
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
        name: paired_delta(
            _item_means(ours.item, mine[name]), _item_means(theirs.item, base[name]), n_boot, seed
        )
        for name in mine
    }
    committed = deltas["not_committed"]
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
    )


def paired_delta(ours: Mapping[str, float], theirs: Mapping[str, float], n_boot: int, seed: int) -> Delta:
    """Mean of per-item differences over the items in both maps, with a bootstrap 95% CI over items."""
    shared = sorted(set(ours) & set(theirs))
    if not shared:
        nan = float("nan")
        return Delta(nan, nan, nan, nan, nan, 0)
    a = np.array([ours[i] for i in shared])
    b = np.array([theirs[i] for i in shared])
    diff = a - b
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
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
            if _normal(other) != _normal(target):
                decoy[item] = other
                break
    fired = [
        first_statement_of(thinking, decoy[item], rules.answer_patterns) is not None
        for item, thinking, correct in zip(column.item, column.thinking, column.correct, strict=True)
        if correct and thinking and item in decoy
    ]
    return float(np.mean(fired)) if fired else None


def task_answer_patterns(task: str) -> tuple[str, ...] | None:
    """A stored task's own answer patterns (None: not a math task, or a task this install lacks)."""
    from quantscope.errors import QuantscopeError
    from quantscope.tasks.registry import task_class

    try:
        return getattr(task_class(task), "answer_patterns", None)
    except QuantscopeError:
        return None


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
                )

    names = tasks if tasks is not None else sorted({task for _, task in store.pairs()})
    patterns = {task: task_answer_patterns(task) for task in names}
    return read_traces(rows(), baseline, rules, patterns, n_boot, seed)


def thinking_findings(
    analysis: Analysis, report: TraceReport, levels: Sequence[TaskLevels] = ()
) -> tuple[str, ...]:
    """The finding for each (variant, task) in words: how its thinking and truncation moved
    against the baseline (p90 thinking tokens, the truncation rate with its paired 95% CI), what
    the accuracy did, the level where truncation rose most when it rose significantly there
    (`levels`, from `analysis.levels`), and which trace signals moved significantly; or that
    nothing did at this sample size (never "no effect": an undecided comparison may still hide one)."""
    traces = {(c.variant, c.task): c for c in report.comparisons}
    by_task = {task.task: task for task in levels}
    lines = []
    for c in analysis.comparisons:
        t = traces.get((c.variant, c.task))
        ours, theirs = analysis.metric(c.variant, c.task), analysis.metric(c.baseline, c.task)
        if t is not None and ours is not None and theirs is not None:
            level = _most_truncated_level(by_task.get(c.task), c.variant)
            finding = _finding(c, t, ours.thinking_tokens, theirs.thinking_tokens, level)
            lines.append(f"{c.variant} on {c.task}: {finding}")
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


def _finding(
    c: Comparison, t: TraceComparison, ours: TokenStats, theirs: TokenStats, level: str | None = None
) -> str:
    p90 = "–" if not theirs.p90 else f"{100 * (ours.p90 / theirs.p90 - 1):+.0f}%"
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
    if not (t.truncated.significant or c.significant or signals or level):
        sample = f"{c.paired_items} items; p90 thinking {p90}, {accuracy}"
        return f"no significant effect at this sample size ({sample})"
    cut = t.truncated
    truncation = f"truncation {pct(cut.baseline)} → {pct(cut.value)}"
    truncation += " (significant)" if cut.significant else " (not significant)"
    parts = [f"p90 thinking {p90}", truncation, *([level] if level else []), accuracy]
    if c.explained_by_truncation:
        parts.append("loss explained by truncation")
    return "; ".join(parts + signals)
