"""Trace signals stored beside the text (issue 31): the numbers `compare` reads from the store equal
a direct recomputation from the stored text, whether the signals were stored at commit time or
computed later, under the default rules or changed ones; and a v4 store migrates in place, killed
or not, losing nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from quantscope.analysis.compare import analyze
from quantscope.analysis.signal_table import (
    COLUMNS,
    STORED,
    ensure_signals,
    rules_for,
    signal_batch,
    stored_table,
)
from quantscope.analysis.signals import TraceRules, read_trace
from quantscope.analysis.traces import (
    TraceReport,
    TraceRow,
    read_traces,
    task_trace_patterns,
    thinking_findings,
    trace_report,
)
from quantscope.store.database import DB_NAME, PENDING_TABLE, Store
from quantscope.store.rows import ResultRow, RunRecord, Variant
from tests.old_schemas import SCHEMA_V4

TASK = "synthetic"  # the bundled math task: found-not-given applies
PROGRESS = " ".join(f"step {i}: add {i} to the total, giving {i * (i + 1) // 2}." for i in range(1, 30))
LOOP = " So we need to recompute the sum again from the start."


def _generation(variant: str, item: int, sample: int) -> tuple[str, str, str, bool, bool]:
    """(text, thinking, answer, truncated, correct) of one generation: the quantized variant loops
    and is cut on a third of its items, hesitates, and states the gold answer without giving it on
    another third; the baseline is mostly right. Every item has its own gold answer (item + 10)."""
    gold = str(item + 10)
    kind = (item + sample) % 3 if variant == "int4" else (3 if item % 7 else 2)
    if kind == 0:  # loops until the cap cuts it
        thinking = PROGRESS + " Wait, let me check." + LOOP * (10 + item % 4)
        return "<think>\n" + thinking, thinking, "", True, False
    if kind == 1:  # found, not given
        thinking = f"Hmm, 6 and 4.\nSo the answer is {gold}.\nBut wait, maybe it is {item + 11}. " + PROGRESS
        return (
            f"{thinking}\n</think>\n\n\\boxed{{{item + 11}}}",
            thinking,
            f"\\boxed{{{item + 11}}}",
            False,
            False,
        )
    if kind == 2:  # wrong without ever stating the gold
        thinking = "Alternatively, " + PROGRESS + f"\nThus the total = {item + 99}."
        return f"{thinking}</think>\\boxed{{{item + 99}}}", thinking, f"\\boxed{{{item + 99}}}", False, False
    thinking = PROGRESS + f"\nTherefore the result is {gold}."  # right, stated once
    return f"{thinking}</think>  \\boxed{{{gold}}}", thinking, f"\\boxed{{{gold}}}", False, True


def _rows(variant: str, items: int, k: int) -> list[ResultRow]:
    rows = []
    for item in range(items):
        for sample in range(k):
            text, thinking, answer, truncated, correct = _generation(variant, item, sample)
            tokens = 300 if truncated else 120 + 7 * item % 50
            rows.append(
                ResultRow(
                    variant,
                    TASK,
                    f"i{item:03d}",
                    sample,
                    f"{variant}-run",
                    sample,
                    str(item + 10),
                    text,
                    thinking,
                    answer,
                    tokens,
                    tokens if truncated else tokens - 12,
                    0 if truncated else 12,
                    "length" if truncated else "stop",
                    0.5,
                    correct,
                    None if truncated else answer[7:-1],
                    1.0,
                    f"sha-{item}",
                )
            )
    return rows


def _write_study(store: Store, *, with_signals: bool, items: int = 30, k: int = 2) -> None:
    for variant, baseline in (("bf16", True), ("int4", False)):
        store.put_variant(Variant(variant, f"/models/{variant}", 1000 if baseline else 400, None, baseline))
        store.record_run(
            RunRecord(
                f"{variant}-run",
                variant,
                TASK,
                "transformers",
                f"/models/{variant}",
                True,
                0.6,
                0.95,
                20,
                300,
                0,
                "{}",
                0.0,
            )
        )
        rows = _rows(variant, items, k)
        for start in range(0, len(rows), 16):  # batches, as the eval writer commits them
            batch = rows[start : start + 16]
            store.write_results(batch, signal_batch(batch) if with_signals else None)


def _from_text(store: Store, rules: TraceRules | None = None) -> TraceReport:
    """The report recomputed from every stored text (what `trace_report` read before issue 31)."""
    answers, hesitations = task_trace_patterns(TASK)
    rows = (
        TraceRow(
            row["variant"],
            row["task"],
            str(row["item_id"]),
            row["target"],
            row["thinking"],
            row["text"],
            int(row["thinking_tokens"]),
            row["finish_reason"] == "length",
            bool(row["correct"]),
            int(row["answer_tokens"]),
        )
        for row in store.traces()
    )
    return read_traces(rows, "bf16", rules, {TASK: answers}, task_hesitations={TASK: hesitations})


def _same(a: TraceReport, b: TraceReport) -> None:
    assert repr(a) == repr(b)  # repr: NaN equals NaN, every float to its last digit


@pytest.mark.parametrize("with_signals", [True, False], ids=["stored-at-commit", "computed-later"])
def test_the_stored_numbers_give_the_report_recomputed_from_the_text(
    tmp_path: Path, with_signals: bool
) -> None:
    with Store(tmp_path) as store:
        _write_study(store, with_signals=with_signals)
        direct = _from_text(store)
        stats = {(s.variant, s.task): s for s in direct.stats}
        # the study holds what the test is about: loops, truncation, found-not-given, decoys
        assert stats[("int4", TASK)].truncated_looping > 0.2 and stats[("int4", TASK)].not_committed > 0.2
        assert stats[("bf16", TASK)].false_found is not None
        notes: list[str] = []
        stored = trace_report(store, "bf16", progress=lambda done, total, note: notes.append(note))
        _same(stored, direct)
        assert bool(notes) != with_signals  # a pass over the text only when the commit stored none
        again = trace_report(store, "bf16", progress=lambda *a: pytest.fail("signals recomputed"))
        _same(again, direct)  # the second time from the stored numbers and stored decoys alone
        analysis = analyze(store)
        assert thinking_findings(analysis, stored) == thinking_findings(analysis, direct)
        assert any("loops +" in line for line in thinking_findings(analysis, stored))


def test_each_stored_signal_is_read_trace_of_its_row(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        _write_study(store, with_signals=True, items=12)
        rules = rules_for([TASK])
        table = stored_table(store, rules)
        texts = {(r["variant"], str(r["item_id"]), r["sample"]): r for r in store.traces()}
    answers, hesitations = task_trace_patterns(TASK)
    own = TraceRules().with_patterns(answers or (), hesitations)
    for i in range(len(table["variant"])):
        row = texts[(table["variant"][i], table["item_id"][i], table["sample"][i])]
        signals = read_trace(row["thinking"], row["text"], row["target"], own, math=True)
        expected = [s.count(signals, row["thinking"]) for s in STORED]
        assert [table[s.column][i] for s in STORED] == pytest.approx(expected, nan_ok=True)


def test_the_pass_on_worker_processes_stores_what_one_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older store's one-time pass spread over processes (bounded batches in flight) stores the
    same values, every row once, as reading each generation in this process."""
    monkeypatch.setattr("quantscope.analysis.signal_table.SIGNAL_BATCH", 10)
    rules = rules_for([TASK])
    tables = []
    for workers in (1, 2):
        with Store(tmp_path / f"w{workers}") as store:
            _write_study(store, with_signals=False)
            assert ensure_signals(store, rules, workers=workers) == 120
            assert store.unsigned_count({TASK: rules[TASK].version}) == 0
            tables.append(stored_table(store, rules))
    assert tables[0] == tables[1] and len(tables[0]["variant"]) == 120


UNGUARDED_SCRIPT = """
import sys
from quantscope.analysis import signal_table
from quantscope.store.database import Store

signal_table.SIGNAL_BATCH = 10
with Store(sys.argv[1]) as store:
    print("read", signal_table.ensure_signals(store, signal_table.rules_for(["synthetic"]), workers=2))
"""


def test_a_script_without_a_main_guard_still_gets_every_signal_once(tmp_path: Path) -> None:
    """A user's script calling the API at top level (no `if __name__ == "__main__":`): spawned
    workers re-run it and cannot start (as with any Python multiprocessing); the pass says why
    and reads on one process instead of failing, and the re-run never touches the store."""
    with Store(tmp_path / "store") as store:
        _write_study(store, with_signals=False)
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["read 120"]  # printed once: no worker ran the script to its end
    assert 'if __name__ == "__main__":' in done.stderr
    with Store(tmp_path / "store") as store:
        rules = rules_for([TASK])
        assert store.unsigned_count({TASK: rules[TASK].version}) == 0
        assert len(stored_table(store, rules)["variant"]) == 120


def test_changed_markers_recompute_once_and_keep_the_default_signals(tmp_path: Path) -> None:
    rules = TraceRules(markers=("hmm", "alternatively"))
    with Store(tmp_path) as store:
        _write_study(store, with_signals=True)
        notes: list[str] = []
        _same(
            trace_report(store, "bf16", rules, progress=lambda d, t, note: notes.append(note)),
            _from_text(store, rules),
        )
        assert "other rules" in notes[0] and notes[0].startswith(
            "reading the trace signals of 120 generations"
        )
        assert store.unsigned_count({TASK: rules_for([TASK])[TASK].version}) == 0  # the defaults stay


def test_an_interrupted_signal_pass_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quantscope.analysis.signal_table.SIGNAL_BATCH", 25)
    rules = rules_for([TASK])
    versions = {TASK: rules[TASK].version}

    def stop_after_two(done: int, total: int, note: str) -> None:
        if done >= 50:
            raise KeyboardInterrupt

    with Store(tmp_path) as store:
        _write_study(store, with_signals=False)
        with pytest.raises(KeyboardInterrupt):
            ensure_signals(store, rules, stop_after_two)
        assert store.unsigned_count(versions) == 120 - 50  # two batches committed
        assert ensure_signals(store, rules) == 70 and store.unsigned_count(versions) == 0
        _same(trace_report(store, "bf16"), _from_text(store))


# ---- migration v4 -> v5 ---------------------------------------------------------------------

V4_COLUMNS = (
    "variant, task, item_id, sample, spec_hash, seed, target, text, thinking, answer, completion_tokens, "
    "thinking_tokens, answer_tokens, finish_reason, seconds, correct, extracted, created, prompt_sha"
)


def _write_v4(directory: Path, items: int) -> list[tuple]:
    """A version-4 store of the study (2 variants × `items` × 2 samples), plus rows whose thinking
    is not a part of the text, which hold a NUL or whose text is empty; returns its rows."""
    directory.mkdir(parents=True)
    db = sqlite3.connect(directory / DB_NAME)
    db.executescript(SCHEMA_V4)
    for variant in ("bf16", "int4"):
        db.execute(
            "INSERT INTO variants VALUES (?, ?, 1000, NULL, ?, 0.0, NULL)",
            (variant, f"/m/{variant}", variant == "bf16"),
        )
        run = (
            f"{variant}-run",
            variant,
            TASK,
            "transformers",
            f"/m/{variant}",
            1,
            0.6,
            0.95,
            20,
            300,
            0,
            "{}",
            0.0,
        )
        db.execute(f"INSERT INTO runs VALUES ({', '.join('?' * 13)}, NULL, NULL)", run)
        rows = _rows(variant, items, 2)
        odd = [
            ("odd0", "<think>a  b</think>c", "a b", "c"),  # an engine that normalised the thinking
            ("odd1", "x\x00y</think>z", "x\x00y", "z"),
            ("odd2", "", "", ""),
        ]
        for item, text, thinking, answer in odd:
            rows.append(
                ResultRow(
                    variant,
                    TASK,
                    item,
                    0,
                    f"{variant}-run",
                    0,
                    "7",
                    text,
                    thinking,
                    answer,
                    5,
                    3,
                    2,
                    "stop",
                    0.1,
                    False,
                    None,
                    1.0,
                )
            )
        db.executemany(
            f"INSERT INTO results ({V4_COLUMNS}) VALUES ({', '.join('?' * 19)})",
            [tuple(getattr(r, c.strip()) for c in V4_COLUMNS.split(",")) for r in rows],
        )
    db.commit()
    original = db.execute(
        f"SELECT {V4_COLUMNS} FROM results ORDER BY variant, task, item_id, sample"
    ).fetchall()
    db.close()
    return original


CHILD = """
import os, sys, time
from quantscope.store import database
database.MIGRATION_BATCH = 100
copy = database._copy_batch
def announced(db):
    moved = copy(db)
    print("batch", moved, flush=True)
    time.sleep(60)  # killed here, between two committed batches
    return moved
database._copy_batch = announced
database.Store(sys.argv[1])
"""


def test_a_migration_killed_partway_finishes_on_the_next_open_losing_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("quantscope.store.database.MIGRATION_NOTE_ROWS", 1000)  # say how it goes
    directory = tmp_path / "v4"
    original = _write_v4(directory, items=750)  # 3,006 rows
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().split() == ["batch", "100"]
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    db = sqlite3.connect(directory / DB_NAME)  # half-migrated: a v5 store with the rest still to copy
    left = db.execute(f"SELECT count(*) FROM {PENDING_TABLE}").fetchone()[0]
    moved = db.execute("SELECT count(*) FROM results").fetchone()[0]
    db.close()
    assert (moved, left) == (100, len(original) - 100)
    with Store.existing(directory) as store:
        names = [c.strip() for c in V4_COLUMNS.split(",")]
        said = capsys.readouterr().err.splitlines()
        assert said[0].endswith(f"copying {len(original) - 100:,} results (resumable)")
        assert said[-1].startswith(f"  done: {len(original) - 100:,} results in") and len(said) >= 5
        migrated = [tuple(row[c] for c in names) for row in store.rows()]
        assert migrated == original
        assert store.count() == len(original)
        rules = rules_for([TASK])
        assert ensure_signals(store, rules) == len(original)
        assert store.unsigned_count({TASK: rules[TASK].version}) == 0
        direct = _from_text(store)
        _same(trace_report(store, "bf16"), direct)
    db = sqlite3.connect(directory / DB_NAME)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert PENDING_TABLE not in tables and {"results", "texts", "signals"} <= tables
    spans = db.execute("SELECT count(*) FROM texts WHERE thinking IS NULL AND answer IS NULL").fetchone()[0]
    assert spans == len(original) - 4  # stored once, as spans, but for the odd rows (odd2's are spans)
    assert {c for c, _ in COLUMNS} <= {r[1] for r in db.execute("PRAGMA table_info(signals)")}
