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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from quantscope.analysis.decide import Delta, seeded_resampled_means
from quantscope.analysis.metrics import DEFAULT_BOOTSTRAP
from quantscope.analysis.signal_table import (
    COLUMNS,
    COMPARED,
    DECOY_COLUMNS,
    RESULT_COLUMNS,
    SIGNAL_BATCH,
    Frame,
    Progress,
    TaskRules,
    ensure_signals,
    rules_for,
    stored_table,
    task_trace_patterns,
)
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
from quantscope.store.rows import SignalBatch, SignalRow
from quantscope.util import pct, points, pts

if TYPE_CHECKING:
    from quantscope.analysis.compare import Analysis, Comparison
    from quantscope.analysis.levels import TaskLevels
    from quantscope.store.database import Store

__all__ = [
    "HESITATION_MARKERS",
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
    "task_trace_patterns",
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
    """Per-row signals of one (variant, task), column by column: what every row holds, and the
    stored signals (`signal_table.COLUMNS`) by column."""

    item: list[str] = field(default_factory=list)
    sample: list[int] = field(default_factory=list)
    target: list[str] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    """Thinking tokens per row, NaN where unknown (an import without counts)."""
    censored: list[bool] = field(default_factory=list)
    stored: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    thinking: list[str] = field(default_factory=list)
    """Read from text only: the thinking of the baseline's correct math rows (false_found), else ""."""
    _index: tuple[np.ndarray, np.ndarray] | None = None

    def item_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct item ids, each row's position among them), computed once."""
        if self._index is None or self._index[1].size != len(self.item):
            ids, inverse = np.unique(np.array(self.item, dtype=str), return_inverse=True)
            self._index = (ids, inverse.reshape(-1))
        return self._index

    def counted(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(item ids, thinking tokens, censored) of the rows whose counts are known."""
        tokens = np.array(self.tokens, dtype=np.float64)
        known = ~np.isnan(tokens)
        items = [item for item, k in zip(self.item, known, strict=True) if k]
        return items, tokens[known], np.array(self.censored, dtype=bool)[known]


@dataclass(frozen=True)
class TraceStats:
    """One (variant, task): rates are fractions of samples (means over items of item means)."""

    variant: str
    task: str
    samples: int
    loop_rate: float
    """Generations that loop."""
    truncated_looping: float
    """Generations cut at the cap while looping."""
    truncated_progressing: float
    """Generations cut at the cap while not looping."""
    hesitations_per_k: float
    """Hesitation markers per 1,000 thinking tokens."""
    not_committed: float
    """Samples that found the answer and did not give it (NaN for tasks that are not math)."""
    first_found: float
    """Median position of the first correct statement (fraction of the thinking)."""
    false_found: float | None = None
    """The found-detector's false-positive rate (the baseline only; see the module docstring)."""


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
    math = {t: p for t, p in (task_patterns or {}).items() if p is not None}
    hesitations = task_hesitations or {}

    def patterns(task: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        return (tuple(math[task]) if task in math else None), tuple(hesitations.get(task, ()))

    per_task: dict[str, TaskRules] = {}
    table: dict[str, list[Any]] = defaultdict(list)  # the columns `stored_table` reads from a store
    thinking: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row.task not in per_task:
            per_task.update(rules_for([row.task], rules, patterns))
        task = per_task[row.task]
        numbers = {"sample": 0, "finish_reason": "length" if row.truncated else "stop", **asdict(row)}
        for name in RESULT_COLUMNS:
            table[name].append(numbers[name])
        for (name, _), value in zip(COLUMNS, task.read(row.thinking, row.text, row.target), strict=True):
            table[name].append(value)
        keep = task.math and row.correct and row.variant == baseline  # for false_found
        thinking[(row.variant, row.task)].append(row.thinking if keep else "")
    signals = _signals_of(table)
    for key, column in signals.items():
        column.thinking = thinking[key]

    def fired(
        key: tuple[str, str], column: _Signals, decoy: Mapping[str, str], rows: list[int]
    ) -> list[bool]:
        rules = per_task[key[1]].rules
        return [
            first_statement_of(column.thinking[i], decoy[column.item[i]], rules) is not None for i in rows
        ]

    return _report(signals, baseline, rules or TraceRules(), per_task, n_boot, seed, fired)


FalseFound = Callable[[tuple[str, str], "_Signals", Mapping[str, str], list[int]], list[bool]]
"""Whether each of the rows (indices) of a (variant, task) "finds" its item's decoy answer."""


def _report(
    signals: Mapping[tuple[str, str], _Signals],
    baseline: str,
    rules: TraceRules,
    per_task: Mapping[str, TaskRules],
    n_boot: int,
    seed: int,
    fired: FalseFound,
) -> TraceReport:
    """Stats for every (variant, task) and each variant's comparison with `baseline`."""
    stats = []
    for (variant, task), column in sorted(signals.items()):
        math = per_task[task].math
        false = _false_found((variant, task), column, fired) if variant == baseline and math else None
        stats.append(_stats(variant, task, column, false))
    comparisons = [
        _compare(variant, baseline, task, column, signals[(baseline, task)], n_boot, seed)
        for (variant, task), column in sorted(signals.items())
        if variant != baseline and (baseline, task) in signals
    ]
    return TraceReport(baseline, rules, tuple(stats), tuple(comparisons))


def _frame(column: _Signals) -> Frame:
    decoys = {name for name, _ in DECOY_COLUMNS}
    stored = {
        name: np.array(values, dtype=float)  # None (NULL: does not apply) becomes NaN
        for name, values in column.stored.items()
        if name not in decoys
    }
    truncated, correct = np.array(column.truncated, dtype=bool), np.array(column.correct, dtype=bool)
    return Frame(stored, truncated, correct, np.array(column.tokens, dtype=np.float64))


def _columns(column: _Signals) -> dict[str, np.ndarray]:
    """Per-row values of each compared signal (NaN where it does not apply)."""
    frame = _frame(column)
    return {signal.name: signal.per_row(frame) for signal in COMPARED}


ItemMeans = tuple[np.ndarray, np.ndarray]
"""(item ids, sorted; each one's mean over its samples), for the items with a value."""


def _item_means(column: _Signals, values: np.ndarray) -> ItemMeans:
    """Each item's mean of `values` (one per row of `column`), NaN rows left out; items with no
    value at all are absent. Vectorised: a study holds ~10^5 rows per variant."""
    ids, inverse = column.item_index()
    ok = ~np.isnan(values)
    counts = np.bincount(inverse[ok], minlength=ids.size)
    sums = np.bincount(inverse[ok], weights=values[ok], minlength=ids.size)
    have = counts > 0
    return ids[have], sums[have] / counts[have]


def _stats(variant: str, task: str, column: _Signals, false_found: float | None) -> TraceStats:
    means = {name: _item_means(column, values) for name, values in _columns(column).items()}
    first = [f for f in column.stored["first_found"] if f is not None]

    def mean(name: str) -> float:
        return float(means[name][1].mean()) if means[name][1].size else float("nan")

    shown = {f.name for f in fields(TraceStats)}
    return TraceStats(
        variant=variant,
        task=task,
        samples=len(column.item),
        **{name: mean(name) for name in means if name in shown},
        first_found=float(np.median(first)) if first else float("nan"),
        false_found=false_found,
    )


def _compare(
    variant: str, baseline: str, task: str, ours: _Signals, theirs: _Signals, n_boot: int, seed: int
) -> TraceComparison:
    mine, base = _columns(ours), _columns(theirs)
    deltas = {
        name: item_delta(_item_means(ours, mine[name]), _item_means(theirs, base[name]), n_boot, seed)
        for name in mine
    }
    committed = deltas.pop("not_committed")
    thinking = paired_thinking(ours.counted(), theirs.counted(), n_boot, seed)
    return TraceComparison(
        variant=variant,
        baseline=baseline,
        task=task,
        **deltas,
        not_committed=committed if committed.items else None,
        thinking=thinking if thinking.items else None,
    )


def item_delta(ours: ItemMeans, theirs: ItemMeans, n_boot: int, seed: int) -> Delta:
    """Mean of per-item differences over the items both sides have (in sorted id order), with a
    bootstrap 95% CI over items (`decide.resampled_means`, the resampler `compare.paired_delta` uses)."""
    shared, mine, other = np.intersect1d(ours[0], theirs[0], assume_unique=True, return_indices=True)
    if not shared.size:
        nan = float("nan")
        return Delta(nan, nan, nan, nan, nan, 0)
    a, b = ours[1][mine], theirs[1][other]
    diff = a - b
    boot = seeded_resampled_means(diff, n_boot, seed)
    low, high = np.percentile(boot, [2.5, 97.5])
    return Delta(
        float(a.mean()), float(b.mean()), float(diff.mean()), float(low), float(high), int(shared.size)
    )


def _decoys(column: _Signals) -> dict[str, str]:
    """Each item's decoy: the next item's gold answer (in stored order) that differs from its own."""
    targets = list(dict.fromkeys(zip(column.item, column.target, strict=True)))
    decoy = {}
    for index, (item, target) in enumerate(targets):
        for step in range(1, len(targets)):
            other = targets[(index + step) % len(targets)][1]
            if normal_answer(other) != normal_answer(target):
                decoy[item] = other
                break
    return decoy


def _false_found(key: tuple[str, str], column: _Signals, fired: FalseFound) -> float | None:
    """The found-detector's coincidence rate on correct traces: another item's gold answer
    (the next item, in stored order, whose answer differs) "found" in this trace."""
    if len(set(zip(column.item, column.target, strict=True))) < 2:
        return None
    decoy = _decoys(column)
    chars = column.stored["thinking_chars"]
    rows = [
        i
        for i, (item, correct) in enumerate(zip(column.item, column.correct, strict=True))
        if correct and chars[i] and item in decoy
    ]
    found = fired(key, column, decoy, rows)
    return float(np.mean(found)) if found else None


def trace_report(
    store: Store,
    baseline: str,
    rules: TraceRules | None = None,
    tasks: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    progress: Progress | None = None,
) -> TraceReport:
    """The report `read_traces` gives on every row of `store` (of `tasks`, when given), read from
    the signals stored beside the text (`signal_table`): those the store lacks for these rules are
    computed first, once (`progress` follows that pass)."""
    names = tasks if tasks is not None else sorted({task for _, task in store.pairs()})
    per_task = rules_for(names, rules)
    ensure_signals(store, per_task, progress)
    signals = _signals_of(stored_table(store, per_task))

    def fired(
        key: tuple[str, str], column: _Signals, decoy: Mapping[str, str], rows: list[int]
    ) -> list[bool]:
        return _stored_decoys(store, key, column, per_task[key[1]], decoy, rows)

    return _report(signals, baseline, rules or TraceRules(), per_task, n_boot, seed, fired)


def _signals_of(table: Mapping[str, list[Any]]) -> dict[tuple[str, str], _Signals]:
    """The stored table (or the same columns read from text) split into each (variant, task)'s
    `_Signals`, column by column (numpy slices, not a Python loop over rows: a study holds ~10^5
    of them). The one place that says what an unknown count (NaN) and a censored length (cut with
    no answer tokens) are."""
    if not table.get("variant"):
        return {}
    arrays = {name: np.asarray(values, dtype=object) for name, values in table.items()}
    variant, task = arrays["variant"], arrays["task"]
    out = {}
    for key in dict.fromkeys(zip(table["variant"], table["task"], strict=True)):
        rows = np.flatnonzero((variant == key[0]) & (task == key[1]))

        def column(name: str, rows: np.ndarray = rows) -> list[Any]:
            return arrays[name][rows].tolist()

        truncated = arrays["finish_reason"][rows] == "length"
        thinking = [np.nan if n is None else float(n) for n in column("thinking_tokens")]
        answer = arrays["answer_tokens"][rows]
        out[key] = _Signals(
            item=[str(i) for i in column("item_id")],
            sample=[int(j) for j in column("sample")],
            target=column("target"),
            truncated=truncated.tolist(),
            correct=[bool(c) for c in column("correct")],
            tokens=thinking,
            censored=(truncated & (answer == 0)).tolist(),
            stored=defaultdict(list, {name: column(name) for name, _ in COLUMNS}),
        )
    return out


def _stored_decoys(
    store: Store,
    key: tuple[str, str],
    column: _Signals,
    rules: TaskRules,
    decoy: Mapping[str, str],
    rows: list[int],
) -> list[bool]:
    """Whether each row "finds" its decoy: as stored when its decoy is the one stored with it, else
    read from its thinking (fetched by key) and stored for next time."""
    stale = [i for i in rows if column.stored["decoy"][i] != decoy[column.item[i]]]
    for start in range(0, len(stale), SIGNAL_BATCH):  # a batch of thinking in memory at a time
        chunk = stale[start : start + SIGNAL_BATCH]
        keys = [(*key, column.item[i], column.sample[i]) for i in chunk]
        texts = store.generations(keys, columns=("thinking",))
        update = []
        for i, row_key in zip(chunk, keys, strict=True):
            found = int(
                first_statement_of(texts[row_key]["thinking"], decoy[column.item[i]], rules.rules) is not None
            )
            column.stored["decoy"][i], column.stored["decoy_found"][i] = decoy[column.item[i]], found
            update.append(SignalRow(row_key, rules.version, (decoy[column.item[i]], found)))
        store.write_signals(SignalBatch(DECOY_COLUMNS, tuple(update)))
    return [bool(column.stored["decoy_found"][i]) for i in rows]


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
    named = [(s.label, getattr(t, s.name), s.per_k) for s in COMPARED if s.label]
    signals = [
        f"{name} {points(delta.delta, rate=rate, signed=True)}{'/1k tokens' if rate else ' pts'}"
        for name, delta, rate in named
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
