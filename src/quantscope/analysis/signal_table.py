"""The trace signals, declared once: what each one counts in a generation, the column it is stored
in, and how it is compared with the baseline and shown.

A generation's text is read once: `signal_batch` turns judged rows into their stored signals when
the eval writer commits them (`evaluate.runner`), and `ensure_signals` computes them for rows
stored without them (a store written before, or rules changed, e.g. `--markers`), in committed
batches, so an interrupted pass resumes where it stopped. Signals are keyed by a `rules_version`:
a hash of the task's `TraceRules`, whether it is a math task, and this table, so a change to any of
them recomputes, and nothing else does. `analysis.traces` reads the stored numbers (`STORED`) and
compares each `COMPARED` signal; it never reads the text table, except the few baseline traces the
false-found estimate checks (`DECOY_COLUMNS`), themselves stored once computed.

Adding a signal: a `Stored` record (how it is counted from `read_trace`'s result), a `Compared`
record (how its per-row value follows from the stored ones, and whether the finding names it), and
its field in `traces.TraceStats` / `traces.TraceComparison` (the records the views show).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing import current_process, get_context
from typing import TYPE_CHECKING, Any

import numpy as np

from quantscope.analysis.signals import TraceRules, TraceSignals, read_trace
from quantscope.store.rows import ResultRow, SignalBatch, SignalRow

if TYPE_CHECKING:
    from quantscope.store.database import Store

DETECTORS_REVISION = 1
"""Bump when a detector in `analysis.signals` changes what it finds: stored signals recompute."""


@dataclass(frozen=True)
class Stored:
    """A number stored per generation: its `column` and SQL type (INTEGER or REAL; NULL where
    it does not apply) and how it is counted from `read_trace`'s signals and the thinking."""

    column: str
    sql: str
    count: Callable[[TraceSignals, str], int | float | None]
    doc: str


@dataclass(frozen=True)
class Compared:
    """A signal compared with the baseline: `name` (the field of `TraceStats` and
    `TraceComparison`), its per-row value from the stored columns (NaN where it does not apply),
    and, when the finding names it once it moved significantly, its `label` and whether it is a
    rate per 1,000 thinking tokens (`per_k`) or a share in percentage points."""

    name: str
    per_row: Callable[[Frame], np.ndarray]
    label: str | None = None
    per_k: bool = False


@dataclass(frozen=True)
class Frame:
    """The rows of one (variant, task) as arrays: the stored signals by column and what every row
    holds (truncated, correct, thinking tokens)."""

    stored: Mapping[str, np.ndarray]
    truncated: np.ndarray
    correct: np.ndarray
    thinking_tokens: np.ndarray

    @property
    def loops(self) -> np.ndarray:
        return self.stored["loop_period"] > 0


def _found(frame: Frame) -> np.ndarray:
    return frame.stored["found"].astype(float)  # NULL (not math) read as NaN


def _per_k(frame: Frame) -> np.ndarray:
    tokens = frame.thinking_tokens.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tokens > 0, 1000 * frame.stored["hesitations"].astype(float) / tokens, np.nan)


def _optional(value: bool | None) -> int | None:
    return None if value is None else int(value)


STORED: tuple[Stored, ...] = (
    Stored("loop_chars", "INTEGER", lambda s, _: s.loop_chars, "the repeated tail's length (characters)"),
    Stored("loop_period", "INTEGER", lambda s, _: s.loop_period, "its block's length; 0: no loop"),
    Stored("hesitations", "INTEGER", lambda s, _: s.hesitations, "hesitations in the thinking"),
    Stored("found", "INTEGER", lambda s, _: _optional(s.found), "gold stated as a conclusion (math)"),
    Stored("first_found", "REAL", lambda s, _: s.first_found, "share of the thinking before it"),
    Stored("thinking_chars", "INTEGER", lambda _, thinking: len(thinking), "the thinking's length"),
)

COMPARED: tuple[Compared, ...] = (
    Compared("loop_rate", lambda f: f.loops.astype(float), "loops"),
    Compared("truncated_looping", lambda f: (f.loops & f.truncated).astype(float)),
    Compared("truncated_progressing", lambda f: (~f.loops & f.truncated).astype(float)),
    Compared("truncated", lambda f: f.truncated.astype(float)),
    Compared("hesitations_per_k", _per_k, "hesitations", per_k=True),
    Compared(
        "not_committed",
        lambda f: np.where(np.isnan(_found(f)), np.nan, _found(f) * (~f.correct)),
        "found-not-given",
    ),
)

DECOY_COLUMNS = (("decoy", "TEXT"), ("decoy_found", "INTEGER"))
"""For the false-found estimate (`traces`): the other item's answer looked for in this correct
baseline trace, and whether it was "found"; filled when first needed, kept while the decoy holds."""

COLUMNS: tuple[tuple[str, str], ...] = (*((s.column, s.sql) for s in STORED), *DECOY_COLUMNS)
"""Every signal column, (name, SQL type)."""


@dataclass(frozen=True)
class TaskRules:
    """The rules a task's generations are read with: the `TraceRules` (with the task's own
    patterns) and whether found-not-given applies (`math`)."""

    rules: TraceRules
    math: bool

    @property
    def version(self) -> str:
        """A stable hash of these rules and of the signal table (16 hex digits)."""
        return _version(self.rules, self.math)

    def read(self, thinking: str, text: str, target: str | None) -> tuple[int | float | None, ...]:
        """One generation's stored values, in `STORED` order, then NULL decoy columns."""
        signals = read_trace(thinking, text, target, self.rules, math=self.math)
        return (*(s.count(signals, thinking) for s in STORED), None, None)


@lru_cache(maxsize=64)
def _version(rules: TraceRules, math: bool) -> str:
    described = {
        "rules": asdict(rules),
        "math": math,
        "columns": COLUMNS,
        "revision": DETECTORS_REVISION,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


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


def rules_for(
    tasks: Iterable[str],
    rules: TraceRules | None = None,
    patterns: Callable[[str], tuple[tuple[str, ...] | None, tuple[str, ...]]] = task_trace_patterns,
) -> dict[str, TaskRules]:
    """Each task's rules: `rules` (default `TraceRules()`) plus the task's own patterns."""
    base = rules or TraceRules()
    out = {}
    for task in tasks:
        answers, hesitations = patterns(task)
        with_own = (
            base.with_patterns(answers or (), hesitations) if answers is not None or hesitations else base
        )
        out[task] = TaskRules(with_own, answers is not None)
    return out


def signal_batch(rows: Sequence[ResultRow], rules: TraceRules | None = None) -> SignalBatch:
    """The stored signals of judged rows (their task's default rules), for `Store.write_results`."""
    by_task = rules_for(sorted({row.task for row in rows}), rules)
    signals = []
    for row in rows:
        task = by_task[row.task]
        key = (row.variant, row.task, row.item_id, row.sample)
        signals.append(SignalRow(key, task.version, task.read(row.thinking, row.text, row.target)))
    return SignalBatch(COLUMNS, tuple(signals))


SIGNAL_BATCH = 256
"""Generations whose signals are computed and committed together by `ensure_signals`."""

Progress = Callable[[int, int, str], None]
"""`progress(done, total, note)`: called once with done = 0 and a one-line note saying why
signals are computed, then after each committed batch."""


def ensure_signals(
    store: Store, rules: Mapping[str, TaskRules], progress: Progress | None = None, workers: int | None = None
) -> int:
    """Compute and store the signals the store lacks for `rules` (task -> its rules), batch by
    batch (each committed: an interrupted pass resumes); returns how many rows were read.

    Reading a generation is CPU-bound (~4 ms per 50 KB), so a pass over more than a few batches
    runs on `workers` processes (default: the CPUs this process may use); the store is read and
    written here only, batches in flight bounded, so memory stays flat."""
    _refuse_in_a_starting_worker()
    store.declare_signals(COLUMNS)
    versions = {task: r.version for task, r in rules.items()}
    missing = store.unsigned_count(versions)
    if not missing:
        return 0
    if progress is not None:
        other = store.signal_versions() - set(versions.values())
        why = (
            "their stored signals came from other rules (--markers, or another quantscope)"
            if other
            else ("the store holds none (written by an older quantscope or an import)")
        )
        progress(0, missing, f"reading the trace signals of {missing:,} generations once: {why}")
    workers = workers if workers is not None else min(_usable_cpus(), MAX_SIGNAL_WORKERS)
    if workers >= 2 and missing > 4 * SIGNAL_BATCH:
        try:  # spawn: a clean interpreter per worker (the parent holds an open SQLite connection)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                batches = store.unsigned(versions, SIGNAL_BATCH)
                return _write_all(store, _in_order(pool, batches, rules, 2 * workers), missing, progress)
        except BrokenProcessPool:
            print(NO_WORKERS, file=sys.stderr)
    left = store.unsigned_count(versions)  # what the workers did is committed: read the rest here
    read = (_read_batch(batch, rules) for batch in store.unsigned(versions, SIGNAL_BATCH))
    return missing - left + _write_all(store, read, missing, progress, done=missing - left)


MAX_SIGNAL_WORKERS = 8
"""Worker processes of a signal pass at the most: the parent writes every batch alone, so more
workers than it can keep fed only hold memory (~150 MB each: an interpreter with numpy)."""

NO_WORKERS = (
    "quantscope: the trace-signal pass lost its worker processes, so it reads the rest on one "
    "process (slower). The usual cause: a script that calls quantscope without "
    'if __name__ == "__main__":, which any Python multiprocessing requires '
    "(docs.python.org/3/library/multiprocessing.html, 'Safe importing of main module'); else a "
    "worker ran out of memory."
)


def _refuse_in_a_starting_worker() -> None:
    """End, quietly, a spawned worker that is re-running an unguarded script's top level, before
    its pass reads or writes a signal (what the script did before calling quantscope, the worker
    has repeated); the parent says why and reads on its own (`NO_WORKERS`). The
    flag is the one multiprocessing itself checks (multiprocessing/spawn.py,
    `_check_not_importing_main`, which would raise a long RuntimeError in every worker)."""
    if getattr(current_process(), "_inheriting", False):
        raise SystemExit(1)


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one: not macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _read_batch(batch: list[dict[str, Any]], rules: Mapping[str, TaskRules]) -> SignalBatch:
    """One batch's signals (`Store.unsigned` rows: key, thinking, text, target)."""
    out = []
    for row in batch:
        task = rules[row["key"][1]]
        out.append(
            SignalRow(row["key"], task.version, task.read(row["thinking"], row["text"], row["target"]))
        )
    return SignalBatch(COLUMNS, tuple(out))


def _in_order(
    pool: ProcessPoolExecutor,
    batches: Iterable[list[dict[str, Any]]],
    rules: Mapping[str, TaskRules],
    ahead: int,
) -> Iterator[SignalBatch]:
    """Each batch read by the pool, in submission order, with at most `ahead` in flight."""
    pending: deque[Future[SignalBatch]] = deque()
    for batch in batches:
        pending.append(pool.submit(_read_batch, batch, dict(rules)))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _write_all(
    store: Store, read: Iterable[SignalBatch], missing: int, progress: Progress | None, done: int = 0
) -> int:
    """Write each batch as it comes; returns how many rows this call wrote (`done`: rows already
    written by an earlier attempt, for the progress figure)."""
    start = done
    for signals in read:
        store.write_signals(signals)
        done += len(signals.rows)
        if progress is not None:
            progress(done, missing, "")
    return done - start


RESULT_COLUMNS = ("variant", "task", "item_id", "sample", "target", "thinking_tokens", "answer_tokens")
RESULT_COLUMNS += ("finish_reason", "correct")


def stored_table(store: Store, rules: Mapping[str, TaskRules]) -> dict[str, list[Any]]:
    """Every row of the tasks in `rules`: its `RESULT_COLUMNS` and stored signal columns (after
    `ensure_signals`), ordered by key within each task."""
    versions = {task: r.version for task, r in rules.items()}
    return store.signal_table(versions, [name for name, _ in COLUMNS], RESULT_COLUMNS)


__all__ = [
    "COLUMNS",
    "COMPARED",
    "DECOY_COLUMNS",
    "STORED",
    "Compared",
    "Frame",
    "Stored",
    "TaskRules",
    "ensure_signals",
    "rules_for",
    "signal_batch",
    "stored_table",
    "task_trace_patterns",
]
