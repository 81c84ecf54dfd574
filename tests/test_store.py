"""The results store: schema, variants, crash-safe batches, resume keys (export: tests/test_export.py)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from quantscope.errors import QuantscopeError
from quantscope.store.database import DB_NAME, SCHEMA_VERSION, Store
from quantscope.store.rows import ResultRow, RunRecord, Variant
from tests.old_schemas import SCHEMA_V5


def make_run(spec_hash: str = "h1", variant: str = "v", task: str = "t") -> RunRecord:
    return RunRecord(
        spec_hash=spec_hash,
        variant=variant,
        task=task,
        engine="transformers",
        model_path="/models/v",
        thinking_mode=True,
        temperature=0.6,
        top_p=0.95,
        top_k=20,
        max_tokens=64,
        seed=7,
        spec_json="{}",
        created=1.0,
    )


def make_row(item: str, sample: int = 0, variant: str = "v", task: str = "t", **fields: object) -> ResultRow:
    row = ResultRow(
        variant=variant,
        task=task,
        item_id=item,
        sample=sample,
        spec_hash="h1",
        seed=7 + sample,
        target="42",
        text="think</think>\\boxed{42}",
        thinking="think",
        answer="\\boxed{42}",
        completion_tokens=10,
        thinking_tokens=6,
        answer_tokens=4,
        finish_reason="stop",
        seconds=0.5,
        correct=True,
        extracted="42",
        created=2.0,
    )
    return replace(row, **fields)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(tmp_path / "project") as opened:
        opened.put_variant(Variant("v", "/models/v", memory_bytes=1000, recipe="w4a16"))
        opened.record_run(make_run())
        yield opened


def test_open_creates_a_wal_database_with_the_schema_version(tmp_path: Path) -> None:
    with Store(tmp_path / "p") as store:
        assert store.path == tmp_path / "p" / DB_NAME
    db = sqlite3.connect(tmp_path / "p" / DB_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert {"variants", "runs", "results", "results_full"} <= tables


def test_a_db_path_is_used_as_is(tmp_path: Path) -> None:
    with Store(tmp_path / "x" / "mine.db") as store:
        assert store.path == tmp_path / "x" / "mine.db"
    assert (tmp_path / "x" / "mine.db").is_file()


def test_a_newer_schema_or_a_foreign_database_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "new").close()
    db = sqlite3.connect(tmp_path / "new" / DB_NAME)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(QuantscopeError, match="newer"):
        Store(tmp_path / "new")
    foreign = tmp_path / "other.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(QuantscopeError, match="not a quantscope store"):
        Store(foreign)


def test_variants_update_without_losing_known_fields(store: Store) -> None:
    store.put_variant(Variant("v", "/models/v"))  # a resume that knows less keeps what is stored
    assert store.variant("v") == Variant("v", "/models/v", memory_bytes=1000, recipe="w4a16")
    store.put_variant(Variant("base", "/models/base", is_baseline=True))
    store.put_variant(Variant("v", "/models/v", memory_bytes=900, is_baseline=True))
    assert store.variant("v") == Variant("v", "/models/v", 900, "w4a16", True)
    store.set_baseline("base")
    assert [v.name for v in store.variants() if v.is_baseline] == ["base"]
    assert store.variant("missing") is None


def test_a_variant_name_cannot_move_to_another_model(store: Store) -> None:
    with pytest.raises(QuantscopeError, match="another --variant name"):
        store.put_variant(Variant("v", "/models/other"))
    with pytest.raises(QuantscopeError, match="no variant"):
        store.set_baseline("nope")


def test_runs_round_trip(store: Store) -> None:
    assert store.run("h1") == make_run()
    store.record_run(replace(make_run(), max_tokens=1))  # same hash: the first record stays
    assert store.run("h1").max_tokens == 64
    assert store.run("absent") is None


def test_rows_are_written_once_and_resume_keys_list_them(store: Store) -> None:
    assert store.write_results([make_row("a", 0), make_row("a", 1), make_row("b", 0)]) == 3
    assert store.write_results([make_row("a", 1), make_row("c", 0)]) == 1  # (a, 1) is already there
    assert store.count() == 4
    assert store.count(variant="v", task="t") == 4
    assert store.count(task="other") == 0
    assert store.done_keys("v", "t") == {("a", 0), ("a", 1), ("b", 0), ("c", 0)}
    assert store.spec_hashes("v", "t") == {"h1"}
    assert store.pairs() == [("v", "t")]
    assert store.write_results([]) == 0


def test_a_failing_batch_leaves_nothing_behind(store: Store) -> None:
    store.write_results([make_row("a")])
    bad = make_row("z", text=None)  # NOT NULL violated in the middle of the batch
    with pytest.raises(sqlite3.IntegrityError):
        store.write_results([make_row("b"), bad, make_row("c")])
    assert store.count() == 1
    assert store.write_results([make_row("b")]) == 1  # the store is usable afterwards


def test_rows_survive_reopening_and_join_their_run_and_variant(store: Store, tmp_path: Path) -> None:
    store.write_results([make_row("a", correct=False, extracted=None, finish_reason="length")])
    with Store(tmp_path / "project") as again:
        (row,) = again.rows()
    assert row["item_id"] == "a" and row["correct"] == 0 and row["extracted"] is None
    assert row["finish_reason"] == "length" and row["max_tokens"] == 64 and row["memory_bytes"] == 1000
    assert row["engine"] == "transformers" and row["recipe"] == "w4a16" and row["thinking"] == "think"


def test_columns_read_numbers_but_not_text(store: Store) -> None:
    store.write_results([make_row("b", completion_tokens=3), make_row("a", completion_tokens=5)])
    columns = store.columns(["item_id", "completion_tokens", "max_tokens"])
    assert columns == {"item_id": ["a", "b"], "completion_tokens": [5, 3], "max_tokens": [64, 64]}
    assert store.columns(["sample"], task="none") == {"sample": []}
    with pytest.raises(QuantscopeError, match="unknown result columns"):
        store.columns(["text"])


# The schema quantscope 0.1 wrote (version 1), to check that such a store still opens and resumes.
SCHEMA_V1 = """
CREATE TABLE variants (name TEXT PRIMARY KEY, model_path TEXT NOT NULL, memory_bytes INTEGER, recipe TEXT,
    is_baseline INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
CREATE TABLE runs (spec_hash TEXT PRIMARY KEY, variant TEXT NOT NULL REFERENCES variants(name),
    task TEXT NOT NULL, engine TEXT NOT NULL, model_path TEXT NOT NULL, thinking_mode INTEGER NOT NULL,
    temperature REAL NOT NULL, top_p REAL NOT NULL, top_k INTEGER NOT NULL, max_tokens INTEGER NOT NULL,
    seed INTEGER NOT NULL, spec_json TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE results (variant TEXT NOT NULL, task TEXT NOT NULL, item_id TEXT NOT NULL,
    sample INTEGER NOT NULL, spec_hash TEXT NOT NULL REFERENCES runs(spec_hash), seed INTEGER,
    target TEXT NOT NULL, text TEXT NOT NULL, thinking TEXT NOT NULL, answer TEXT NOT NULL,
    completion_tokens INTEGER NOT NULL,
    thinking_tokens INTEGER NOT NULL, answer_tokens INTEGER NOT NULL, finish_reason TEXT NOT NULL,
    seconds REAL NOT NULL, correct INTEGER NOT NULL, extracted TEXT, created REAL NOT NULL,
    UNIQUE (variant, task, item_id, sample));
CREATE VIEW results_full AS
SELECT r.variant, r.task, r.item_id, r.sample, r.seed, r.target, r.text, r.thinking, r.answer,
       r.completion_tokens, r.thinking_tokens, r.answer_tokens, r.finish_reason, r.seconds,
       r.correct, r.extracted, r.created, r.spec_hash,
       u.engine, u.model_path, u.thinking_mode, u.temperature, u.top_p, u.top_k, u.max_tokens,
       v.memory_bytes, v.recipe, v.is_baseline
FROM results r JOIN runs u ON u.spec_hash = r.spec_hash JOIN variants v ON v.name = r.variant;
PRAGMA user_version = 1;
"""


def write_v1_store(directory: Path) -> Path:
    """A schema-1 store holding one variant, one run and two rows, as quantscope 0.1 wrote them."""
    directory.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(directory / DB_NAME)
    db.executescript(SCHEMA_V1)
    db.execute("INSERT INTO variants VALUES ('v', '/models/v', 1000, 'w4a16', 1, 1.0)")
    run = ("h1", "v", "t", "transformers", "/models/v", 1, 0.6, 0.95, 20, 64, 7, "{}", 1.0)
    db.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(run))})", run)
    for item in ("a", "b"):
        row = ("v", "t", item, 0, "h1", 7, "42", "x", "x", "y", 10, 6, 4, "stop", 0.5, 1, "42", 2.0)
        db.execute(f"INSERT INTO results VALUES ({', '.join('?' * len(row))})", row)
    db.commit()
    db.close()
    return directory


def test_a_schema_1_store_is_migrated_in_place_keeping_every_row(tmp_path: Path) -> None:
    directory = write_v1_store(tmp_path / "old")
    with Store.existing(directory) as store:
        assert store.count() == 2 and store.done_keys("v", "t") == {("a", 0), ("b", 0)}
        (variant,) = store.variants()
        assert (variant.memory_bytes, variant.memory_source, variant.is_baseline) == (1000, None, True)
        run = store.run("h1")
        assert run is not None and run.max_tokens == 64 and run.settings_json is None
        assert {row["prompt_sha"] for row in store.rows()} == {None}
        store.write_results([make_row("c", spec_hash="h1", prompt_sha="abc")])
        assert store.count() == 3 and store.failures() == []
        # v3: the forced-answer table exists, empty, and takes rows
        from quantscope.store.rows import ForcedRow

        assert store.forced() == []
        forced = ForcedRow("v", "t", "a", 0, 8, "42", "42", 3, "stop", True, "42", 3.0)
        assert store.write_forced([forced, forced]) == 1 and store.forced() == [forced]
    db = sqlite3.connect(directory / DB_NAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_schema_5_store_gains_unknown_counts_and_inferred_finishes_keeping_rows_and_ids(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "v5"
    directory.mkdir()
    db = sqlite3.connect(directory / DB_NAME)
    db.executescript(SCHEMA_V5)
    db.execute("INSERT INTO variants VALUES ('v', '/models/v', 1000, NULL, 1, 1.0, NULL)")
    run = ("h1", "v", "t", "transformers", "/models/v", 1, 0.6, 0.95, 20, 64, 7, "{}", 1.0, None, None)
    db.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(run))})", run)
    for id_, item in ((11, "a"), (40, "b")):  # ids with gaps: the texts and signals point at them
        row = (id_, "v", "t", item, 0, "h1", 7, "42", 10, 6, 4, "stop", 0.5, 1, "42", 2.0, "p")
        db.execute(f"INSERT INTO results VALUES ({', '.join('?' * len(row))})", row)
        db.execute(
            "INSERT INTO texts VALUES (?, ?, 0, 5, NULL, 13, 4, NULL)", (id_, f"think</think>{item}42")
        )
        db.execute("INSERT INTO signals VALUES ('r1', ?, ?)", (id_, id_ + 1))
    db.commit()
    before = db.execute("SELECT * FROM results ORDER BY id").fetchall()
    db.close()

    with Store.existing(directory) as store:
        rows = {r["item_id"]: r for r in store.rows()}
        assert rows["a"]["text"] == "think</think>a42" and rows["b"]["thinking"] == "think"
        assert {r["finish_inferred"] for r in rows.values()} == {0}
        unknown = replace(make_row("c"), completion_tokens=None, thinking_tokens=None, answer_tokens=None)
        store.write_results([replace(unknown, finish_inferred=True)])
        store.record_run(replace(make_run("h2"), temperature=None, top_p=None, top_k=None, seed=None))
        assert store.run("h2").temperature is None and store.run("h1").temperature == 0.6
        numbers = store.columns(["completion_tokens", "finish_inferred"])
        assert numbers == {"completion_tokens": [10, 10, None], "finish_inferred": [0, 0, 1]}
    db = sqlite3.connect(directory / DB_NAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    after = db.execute("SELECT * FROM results WHERE id IN (11, 40) ORDER BY id").fetchall()
    assert [r[:12] + r[13:] for r in after] == before  # every v5 value kept, finish_inferred 0 added
    assert db.execute("SELECT id, loop_period FROM signals ORDER BY id").fetchall() == [(11, 12), (40, 41)]
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_failures_are_recorded_replaced_and_cleared_by_a_success(store: Store) -> None:
    from quantscope.store.rows import Failure

    store.write_failures([Failure("v", "t", "x", 0, "h1", "HTTP 400: too long", 1, 1.0)])
    store.write_failures([Failure("v", "t", "x", 0, "h1", "HTTP 400: still too long", 2, 2.0)])
    (failure,) = store.failures()
    assert (failure.error, failure.attempts) == ("HTTP 400: still too long", 2)
    store.write_results([make_row("x")])
    assert store.failures() == []
    store.write_failures([Failure("v", "t", "x", 0, "h1", "late failure of a stored key", 1, 3.0)])
    assert store.failures() == []  # a key already stored is not a failure


def test_each_items_level_is_kept_per_task_and_a_rewrite_replaces_it(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert store.strata("math500") is None
        store.write_strata("math500", "level", {"a": "1", "b": "5"})
        store.write_strata("synthetic", "level", {"a": "6"})
        store.write_strata("math500", "level", {"b": "4"})
        assert store.strata("math500") == ("level", {"a": "1", "b": "4"})
        assert store.strata("synthetic") == ("level", {"a": "6"})


def test_a_schema_5_import_reads_its_unknowns_as_null_after_migration(tmp_path: Path) -> None:
    """v5's importer stored an unrecorded setting as -1 and an uncounted generation as 0 tokens, or
    as 0 thinking tokens beside a counted completion (the columns could not be NULL); migrated,
    those are NULL, as v6's importer writes them. A counted imported row, one that did not think,
    and a native run keep their values."""
    directory = tmp_path / "v5"
    directory.mkdir()
    db = sqlite3.connect(directory / DB_NAME)
    db.executescript(SCHEMA_V5)
    db.execute("INSERT INTO variants VALUES ('v', '/models/v', 1000, NULL, 1, 1.0, NULL)")
    imported = ("h1", "v", "t", "import:json", "/models/v", 1, -1.0, -1.0, -1, 64, -1, "{}", 1.0, None, None)
    native = ("h2", "v", "u", "transformers", "/models/v", 1, 0.6, 0.95, 20, 64, 7, "{}", 1.0, None, None)
    for run in (imported, native):
        db.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(run))})", run)
    rows = [  # id, task, run, counts, the thinking's length in the text
        (1, "t", "h1", (0, 0, 0), 5),  # nothing counted
        (2, "t", "h1", (9, 5, 4), 5),  # counted
        (3, "u", "h2", (0, 0, 0), 5),  # native
        (4, "t", "h1", (9, 0, 9), 5),  # the completion counted, its thinking not
        (5, "t", "h1", (3, 0, 3), 0),  # counted, and it did not think
    ]
    for id_, task, spec, counts, thought in rows:
        row = (id_, "v", task, f"i{id_}", 0, spec, 7, "42", *counts, "stop", 0.5, 1, "42", 2.0, "p")
        db.execute(f"INSERT INTO results VALUES ({', '.join('?' * len(row))})", row)
        db.execute(
            "INSERT INTO texts VALUES (?, ?, 0, ?, NULL, 13, 2, NULL)", (id_, "think</think>42", thought)
        )
    db.commit()
    db.close()

    with Store.existing(directory) as store:
        assert store.run("h1").temperature is None and store.run("h1").top_p is None
        assert store.run("h1").top_k is None and store.run("h1").seed is None
        assert store.run("h2").temperature == 0.6 and store.run("h2").seed == 7
        counts = store.columns(["completion_tokens", "thinking_tokens", "answer_tokens"])
    assert counts == {  # ids 1, 2, 4, 5 (task t), then 3 (task u)
        "completion_tokens": [None, 9, None, 3, 0],
        "thinking_tokens": [None, 5, None, 0, 0],
        "answer_tokens": [None, 4, None, 3, 0],
    }
