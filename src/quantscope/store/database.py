"""The results database: one SQLite file per project directory, the single source for all analysis.

`Store(directory)` (or `Store.open(directory)`) opens `directory/quantscope.db`, creating it and
its schema when missing. The database runs in WAL mode and every batch of results is written in
one transaction, so a run killed at any moment (even `kill -9`) leaves only whole batches
behind; the UNIQUE key on (variant, task, item_id, sample) makes a resumed run unable to write a
row twice.

Schema (version `SCHEMA_VERSION`, kept in `PRAGMA user_version`; a store of an earlier version is
migrated in place when opened, see `_MIGRATIONS`):

``variants`` — one row per evaluated model variant
    name TEXT PRIMARY KEY, model_path TEXT, memory_bytes INTEGER (weights, bytes; NULL when
    unknown), recipe TEXT (recipe name or NULL), is_baseline INTEGER (0/1), created REAL (unix
    seconds), memory_source TEXT (where memory_bytes came from; v2).

``runs`` — the generation settings rows were produced under, one row per spec hash
    spec_hash TEXT PRIMARY KEY (hash of everything that changes a generation), variant, task,
    engine, model_path, thinking_mode INTEGER (0/1), temperature REAL, top_p REAL, top_k INTEGER
    (0 = off), max_tokens INTEGER (the cap, tokens; for an import that recorded none, the longest
    completion counted, the largest budget its rows speak for, 0 when none was counted), seed
    INTEGER (base seed; sample j uses seed + j), spec_json TEXT (the full run spec), created REAL,
    settings_json TEXT (every output setting, `quantscope.store.settings`; v2, NULL for older
    runs), environment_json TEXT (library versions and device; v2). Temperature, top_p, top_k and
    seed are NULL when unknown (an import whose source kept none; v6).

``results`` — one row per (variant, task, item_id, sample), UNIQUE on those four columns; numbers
    and short strings only, so reading them never reads text (v5)
    id INTEGER PRIMARY KEY (the row's key in `texts` and `signals`), spec_hash (-> runs), seed
    INTEGER (this sample's seed), target TEXT (gold answer), completion_tokens / thinking_tokens /
    answer_tokens INTEGER (tokens; answer_tokens = completion_tokens - thinking_tokens, so it
    holds the `</think>` tag and end-of-turn token; NULL when unknown, v6: an imported file
    without counts and no tokenizer to count them), finish_reason TEXT ("stop" | "length"),
    finish_inferred INTEGER (1 when the finish reason was inferred rather than recorded: an
    import whose source kept none; v6), seconds REAL (request latency), correct INTEGER (0/1),
    extracted TEXT (the answer the judge read, NULL when none), created REAL, prompt_sha TEXT
    (hash of the item's prompt and target, so comparisons can check both sides saw the same
    item; v2, NULL for older rows).

``texts`` — each result's generated text, stored once (v5): id (-> results), text TEXT (the whole
    completion); its thinking (reasoning before `</think>`) and answer each as a span of `text`,
    thinking_at / answer_at (offset, characters) and thinking_len / answer_len (characters), or,
    when they are not a part of the text (an engine or import that rewrote them), given whole
    in thinking / answer with a NULL offset.

``signals`` — per-generation trace signals (v5), one row per (rules, id): rules TEXT (the version
    of the rules that produced them, `analysis.signal_table.TaskRules.version`), id (->
    results), then one column per signal, declared by `analysis.signal_table` (added when first
    written: a new signal needs no migration).

``failures`` — requests that failed after their retries, one row per key (v2): spec_hash,
    error TEXT, attempts INTEGER, created REAL; a later success removes the row.

``forced`` — forced answers (v3), one row per (variant, task, item_id, sample, budget): the
    stored sample's completion cut at `budget` completion tokens, its thinking closed, and at
    most N answer tokens generated after it (`quantscope.evaluate.forced`): text (what was generated
    after the cut), answer, answer_tokens, finish_reason, correct, extracted, created.

``items`` — each evaluated item's stratum (v4), one row per (task, item_id): stratum_key TEXT
    (the task's stratifying field, e.g. "level"; `Task.stratify`) and stratum TEXT (its value
    for this item, e.g. "5"), so analysis can report per level without loading the benchmark.

``results_full`` — a view: `results` joined with its text (`text`, `thinking`, `answer`, the
    columns v4 held inline), its `runs` row and its `variants` row; this is what `export` writes
    (`quantscope.store.export`).
    ``results_numbers`` — the same without the text, what `columns` reads.

Migrating v5 -> v6 rebuilds `results` and `runs` (numbers only, a few MB for 100k rows) to let
unknown values be NULL, in the one migration transaction; rows keep their ids. A v5 import's
unknowns (-1 settings, 0 token counts: the columns could not hold NULL) become NULL.
Migrating v4 -> v5 renames the old table `results_v4` and copies it `MIGRATION_BATCH` rows per
transaction, each batch deleted from the old table as it is copied: a kill at any point leaves a
store that opens, and the next open finishes the copy.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError
from quantscope.store.rows import Failure, ForcedRow, ResultRow, RunRecord, SignalBatch, Variant

SCHEMA_VERSION = 6
DB_NAME = "quantscope.db"
STORE_ENV = "QUANTSCOPE_STORE"

FORCED_TABLE = """
CREATE TABLE forced (
    variant TEXT NOT NULL,
    task TEXT NOT NULL,
    item_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    budget INTEGER NOT NULL,
    text TEXT NOT NULL,
    answer TEXT NOT NULL,
    answer_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    correct INTEGER NOT NULL,
    extracted TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (variant, task, item_id, sample, budget)
);
"""

FAILURES_TABLE = """
CREATE TABLE failures (
    variant TEXT NOT NULL,
    task TEXT NOT NULL,
    item_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    spec_hash TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (variant, task, item_id, sample)
);
"""

ITEMS_TABLE = """
CREATE TABLE items (
    task TEXT NOT NULL,
    item_id TEXT NOT NULL,
    stratum_key TEXT NOT NULL,
    stratum TEXT NOT NULL,
    PRIMARY KEY (task, item_id)
);
"""

TEXTS_TABLE = """
CREATE TABLE texts (
    id INTEGER PRIMARY KEY REFERENCES results(id),
    text TEXT NOT NULL,
    thinking_at INTEGER,
    thinking_len INTEGER,
    thinking TEXT,
    answer_at INTEGER,
    answer_len INTEGER,
    answer TEXT,
    CHECK (thinking IS NOT NULL OR thinking_at IS NOT NULL),
    CHECK (answer IS NOT NULL OR answer_at IS NOT NULL)
);
"""

SIGNALS_TABLE = """
CREATE TABLE signals (
    rules TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (rules, id)
) WITHOUT ROWID;
"""

_NUMBERS = """r.variant, r.task, r.item_id, r.sample, r.seed, r.target, {text}
       r.completion_tokens, r.thinking_tokens, r.answer_tokens, r.finish_reason, r.finish_inferred,
       r.seconds, r.correct, r.extracted, r.created, r.spec_hash, r.prompt_sha,
       u.engine, u.model_path, u.thinking_mode, u.temperature, u.top_p, u.top_k, u.max_tokens,
       v.memory_bytes, v.memory_source, v.recipe, v.is_baseline"""
_TEXT = """t.text,
       coalesce(t.thinking, substr(t.text, t.thinking_at + 1, t.thinking_len)) AS thinking,
       coalesce(t.answer, substr(t.text, t.answer_at + 1, t.answer_len)) AS answer,
      """
_JOINS = "JOIN runs u ON u.spec_hash = r.spec_hash JOIN variants v ON v.name = r.variant"
VIEWS = f"""CREATE VIEW results_numbers AS
SELECT {_NUMBERS.format(text="")}
FROM results r {_JOINS};
CREATE VIEW results_full AS
SELECT {_NUMBERS.format(text=_TEXT)}
FROM results r JOIN texts t ON t.id = r.id {_JOINS};
"""

_SCHEMA = f"""
CREATE TABLE variants (
    name TEXT PRIMARY KEY,
    model_path TEXT NOT NULL,
    memory_bytes INTEGER,
    recipe TEXT,
    is_baseline INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    memory_source TEXT
);
CREATE TABLE runs (
    spec_hash TEXT PRIMARY KEY,
    variant TEXT NOT NULL REFERENCES variants(name),
    task TEXT NOT NULL,
    engine TEXT NOT NULL,
    model_path TEXT NOT NULL,
    thinking_mode INTEGER NOT NULL,
    temperature REAL,
    top_p REAL,
    top_k INTEGER,
    max_tokens INTEGER NOT NULL,
    seed INTEGER,
    spec_json TEXT NOT NULL,
    created REAL NOT NULL,
    settings_json TEXT,
    environment_json TEXT
);
CREATE TABLE results (
    id INTEGER PRIMARY KEY,
    variant TEXT NOT NULL,
    task TEXT NOT NULL,
    item_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    spec_hash TEXT NOT NULL REFERENCES runs(spec_hash),
    seed INTEGER,
    target TEXT NOT NULL,
    completion_tokens INTEGER,
    thinking_tokens INTEGER,
    answer_tokens INTEGER,
    finish_reason TEXT NOT NULL,
    finish_inferred INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL,
    correct INTEGER NOT NULL,
    extracted TEXT,
    created REAL NOT NULL,
    prompt_sha TEXT,
    UNIQUE (variant, task, item_id, sample)
);
{TEXTS_TABLE}{SIGNALS_TABLE}{FAILURES_TABLE}{FORCED_TABLE}{ITEMS_TABLE}{VIEWS}"""

# Version 1 -> 2: where a variant's memory figure came from, the full output settings and the
# environment of each run, a fingerprint of each row's prompt and target (so comparisons can check
# that both sides saw the same item), and the failures table.
# 2 -> 3: the forced-answer table. 3 -> 4: each item's stratum (the items table).
_MIGRATIONS: dict[int, str] = {
    1: """
ALTER TABLE variants ADD COLUMN memory_source TEXT;
ALTER TABLE runs ADD COLUMN settings_json TEXT;
ALTER TABLE runs ADD COLUMN environment_json TEXT;
ALTER TABLE results ADD COLUMN prompt_sha TEXT;
"""
    + FAILURES_TABLE
    + """DROP VIEW results_full;
""",
    2: FORCED_TABLE + "DROP VIEW IF EXISTS results_full;\n",
    3: ITEMS_TABLE + "DROP VIEW IF EXISTS results_full;\n",
    # 4 -> 5: the text apart from the numbers. The old table is renamed and copied batch by batch
    # after this step (`Store._finish_migration`), so a kill leaves a store the next open finishes.
    4: "DROP VIEW IF EXISTS results_full;\nALTER TABLE results RENAME TO results_v4;\n"
    + _SCHEMA[_SCHEMA.index("CREATE TABLE results (") : _SCHEMA.index("CREATE TABLE failures")],
}


def _rebuilt(table: str, columns: str) -> str:
    """SQL that rebuilds `table` under its current definition in `_SCHEMA`, keeping `columns`
    (the generalized ALTER TABLE procedure of sqlite.org/lang_altertable.html: a constraint
    cannot be dropped in place)."""
    start = _SCHEMA.index(f"CREATE TABLE {table} (")
    ddl = _SCHEMA[start : _SCHEMA.index(");", start) + 2].replace(f"TABLE {table} (", f"TABLE {table}_new (")
    return (
        f"{ddl}\nINSERT INTO {table}_new ({columns}) SELECT {columns} FROM {table};\n"
        f"DROP TABLE {table};\nALTER TABLE {table}_new RENAME TO {table};\n"
    )


# v5's importer (the only writer of unknowns) stored an unrecorded setting as -1 and an uncounted
# generation as 0 tokens, or as 0 thinking tokens when only the completion was counted; no engine
# writes either (a generation holds at least its end token, a thinking text at least one token).
_V5_IMPORT_UNKNOWNS = """
UPDATE runs SET temperature = NULL WHERE temperature = -1 AND engine LIKE 'import:%';
UPDATE runs SET top_p = NULL WHERE top_p = -1 AND engine LIKE 'import:%';
UPDATE runs SET top_k = NULL WHERE top_k = -1 AND engine LIKE 'import:%';
UPDATE runs SET seed = NULL WHERE seed = -1 AND engine LIKE 'import:%';
UPDATE results SET completion_tokens = NULL, thinking_tokens = NULL, answer_tokens = NULL
    WHERE spec_hash IN (SELECT spec_hash FROM runs WHERE engine LIKE 'import:%')
    AND (completion_tokens = 0 OR (thinking_tokens = 0 AND id IN
        (SELECT id FROM texts WHERE coalesce(thinking_len, length(thinking)) > 0)));
"""
# 5 -> 6: unknown is NULL (an import's token counts and sampling settings), and whether a row's
# finish reason was inferred. Both tables hold numbers only since v5, so the copy is quick.
_MIGRATIONS[5] = (
    "DROP VIEW IF EXISTS results_full;\nDROP VIEW IF EXISTS results_numbers;\n"
    + _rebuilt(
        "runs",
        "spec_hash, variant, task, engine, model_path, thinking_mode, temperature, top_p, top_k, "
        "max_tokens, seed, spec_json, created, settings_json, environment_json",
    )
    + _rebuilt(
        "results",
        "id, variant, task, item_id, sample, spec_hash, seed, target, completion_tokens, thinking_tokens, "
        "answer_tokens, finish_reason, seconds, correct, extracted, created, prompt_sha",
    )
    + _V5_IMPORT_UNKNOWNS
)
PENDING_TABLE = "results_v4"
"""A v4 results table still being copied into the v5 tables (present only mid-migration)."""
MIGRATION_BATCH = 200
"""Rows copied per transaction when migrating v4 -> v5 (each holds its text: ~50-130 KB a row)."""

# Columns of `results_full` that analysis may read without touching the (large) text columns.
NUMERIC_COLUMNS = frozenset(
    {
        "sample",
        "seed",
        "completion_tokens",
        "thinking_tokens",
        "answer_tokens",
        "finish_inferred",
        "seconds",
        "correct",
        "created",
        "thinking_mode",
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "memory_bytes",
        "is_baseline",
    }
)
TEXT_KEY_COLUMNS = frozenset(
    {
        "variant",
        "task",
        "item_id",
        "finish_reason",
        "spec_hash",
        "engine",
        "recipe",
        "prompt_sha",
        "memory_source",
        "extracted",
    }
)


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_VARIANT_COLUMNS = tuple(f.name for f in fields(Variant))
_RUN_COLUMNS = tuple(f.name for f in fields(RunRecord))
_RESULT_COLUMNS = tuple(f.name for f in fields(ResultRow))
_FAILURE_COLUMNS = tuple(f.name for f in fields(Failure))
_FORCED_COLUMNS = tuple(f.name for f in fields(ForcedRow))


def default_store_dir() -> Path:
    """The store directory used when none is given: `$QUANTSCOPE_STORE`, else the current directory."""
    return Path(os.environ.get(STORE_ENV) or ".")


class Store:
    """The project's results database (`<directory>/quantscope.db`, SQLite in WAL mode).

    Open with `Store(directory)`; a path ending in `.db` is taken as the database file itself.
    Use as a context manager or call `close()`. One Store object belongs to one thread.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix != ".db":
            if path.exists() and not path.is_dir():
                raise QuantscopeError(
                    f"store {path} is a file, not a directory: pass a directory or a .db file"
                )
            path.mkdir(parents=True, exist_ok=True)
            path = path / DB_NAME
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            # isolation_level=None: we open and commit transactions ourselves, one per batch.
            self._db = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (not a power cut) and is much faster.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._ensure_schema()
        except (sqlite3.DatabaseError, QuantscopeError) as error:
            if hasattr(self, "_db"):
                self._db.close()
            if isinstance(error, QuantscopeError):
                raise
            raise QuantscopeError(f"cannot open the store {path}: {error}") from error

    @classmethod
    def open(cls, directory: str | Path) -> Store:
        """Open (creating when missing) the store of a project directory."""
        return cls(directory)

    @classmethod
    def existing(cls, path: str | Path) -> Store:
        """Open a store that must already exist (for reading); QuantscopeError when there is none."""
        path = Path(path)
        database = path if path.suffix == ".db" else path / DB_NAME
        if not database.is_file():
            raise QuantscopeError(
                f"no quantscope store at {path} (no {database.name}): run "
                f"`quantscope eval ... --store {path}` first, or pass the right --store"
            )
        return cls(path)

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_schema(self) -> None:
        if self._schema_version() != SCHEMA_VERSION:
            self._upgrade_schema()
        if self._has_table(PENDING_TABLE):
            self._finish_migration()

    def _upgrade_schema(self) -> None:
        # A table rebuild (5 -> 6) drops a table others reference: foreign keys stay off while it
        # runs and are checked before the commit (sqlite.org/lang_altertable.html, section 7).
        self._db.execute("PRAGMA foreign_keys=OFF")
        try:
            self._upgrade_schema_locked()
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    def _upgrade_schema_locked(self) -> None:
        # Check again under the write lock: two runs may open a fresh store at the same moment.
        with self._write():
            version = self._schema_version()
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise QuantscopeError(
                    f"store {self.path} has schema version {version}, newer than this quantscope "
                    f"({SCHEMA_VERSION}): upgrade quantscope"
                )
            if version == 0:
                self._create_schema()
            else:
                self._migrate(version)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _create_schema(self) -> None:
        tables = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        if tables:
            raise QuantscopeError(
                f"{self.path} is an SQLite file but not a quantscope store: use another directory"
            )
        _execute_script(self._db, _SCHEMA)

    def _migrate(self, version: int) -> None:
        """Bring a store written by an earlier quantscope up to `SCHEMA_VERSION`, in the open write
        transaction (all or nothing). Rows keep their values; new columns start as NULL (unknown)."""
        for step in range(version, SCHEMA_VERSION):
            _execute_script(self._db, _MIGRATIONS[step])
        broken = self._db.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise QuantscopeError(
                f"store {self.path} has {len(broken)} rows whose references are missing "
                f"(first: {broken[0]}); it was left at schema version {version}: restore a backup"
            )
        _execute_script(self._db, "DROP VIEW IF EXISTS results_numbers;DROP VIEW IF EXISTS results_full;")
        _execute_script(self._db, VIEWS)

    def _has_table(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._db.execute(query, (name,)).fetchone() is not None

    def _finish_migration(self) -> None:
        """Copy the rows of a v4 results table into the v5 tables, `MIGRATION_BATCH` rows per
        transaction, each batch deleted from the old table in the transaction that copies it: a
        kill between or inside batches loses nothing, and the next open carries on from there.
        A row keeps its rowid as its id."""
        left = self._db.execute(f"SELECT count(*) FROM {PENDING_TABLE}").fetchone()[0]
        note = _MigrationNote(self.path, left)
        while copied := _copy_batch(self._db):
            note.copied(copied)
        with self._write():
            if self._has_table(PENDING_TABLE):
                self._db.execute(f"DROP TABLE {PENDING_TABLE}")
        note.done()

    def _schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _write(self) -> _WriteTransaction:
        return _WriteTransaction(self._db)

    # ---- variants -------------------------------------------------------------------------

    def put_variant(self, variant: Variant) -> None:
        """Register a variant, or update a registered one.

        Fields given as None keep their stored value, and `is_baseline` only ever turns on here
        (use `set_baseline` to move it). A different `model_path` for an existing name is an
        error: the name's rows came from the other model.
        """
        existing = self.variant(variant.name)
        if existing is not None and existing.model_path != variant.model_path:
            raise QuantscopeError(
                f"variant {variant.name!r} is already stored for model {existing.model_path}, not "
                f"{variant.model_path}: choose another --variant name"
            )
        # A new memory figure replaces the stored one together with its source.
        with self._write():
            self._db.execute(
                "INSERT INTO variants (name, model_path, memory_bytes, recipe, is_baseline, created, "
                "memory_source) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "memory_source = CASE WHEN excluded.memory_bytes IS NULL THEN memory_source "
                "ELSE excluded.memory_source END, "
                "memory_bytes = coalesce(excluded.memory_bytes, memory_bytes), "
                "recipe = coalesce(excluded.recipe, recipe), "
                "is_baseline = max(excluded.is_baseline, is_baseline)",
                (
                    variant.name,
                    variant.model_path,
                    variant.memory_bytes,
                    variant.recipe,
                    int(variant.is_baseline),
                    time.time(),
                    variant.memory_source,
                ),
            )

    def set_baseline(self, name: str) -> None:
        """Make `name` the only baseline variant."""
        if self.variant(name) is None:
            raise QuantscopeError(
                f"no variant {name!r} in the store {self.path}: run `quantscope runs` to list them"
            )
        with self._write():
            self._db.execute("UPDATE variants SET is_baseline = (name = ?)", (name,))

    def variant(self, name: str) -> Variant | None:
        """The stored variant called `name`, or None."""
        found = [v for v in self._variants("WHERE name = ?", (name,))]
        return found[0] if found else None

    def variants(self) -> list[Variant]:
        """Every stored variant, by name."""
        return self._variants("ORDER BY name", ())

    def _variants(self, clause: str, params: tuple[Any, ...]) -> list[Variant]:
        rows = self._db.execute(f"SELECT {', '.join(_VARIANT_COLUMNS)} FROM variants {clause}", params)
        variants = []
        for row in rows.fetchall():
            values = dict(zip(_VARIANT_COLUMNS, row, strict=True))
            values["is_baseline"] = bool(values["is_baseline"])
            variants.append(Variant(**values))
        return variants

    # ---- runs -----------------------------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        """Store the settings behind a spec hash (a no-op when that hash is already stored)."""
        row = asdict(run)
        row["thinking_mode"] = int(run.thinking_mode)
        names = ", ".join(_RUN_COLUMNS)
        marks = ", ".join("?" for _ in _RUN_COLUMNS)
        with self._write():
            self._db.execute(
                f"INSERT INTO runs ({names}) VALUES ({marks}) ON CONFLICT (spec_hash) DO NOTHING",
                [row[c] for c in _RUN_COLUMNS],
            )

    def set_run_settings(self, spec_hash: str, settings_json: str, environment_json: str | None) -> None:
        """Fill in the settings (and environment) of a stored run, e.g. one written before they were
        recorded, once a resumed run has shown which settings it had."""
        with self._write():
            self._db.execute(
                "UPDATE runs SET settings_json = ?, environment_json = coalesce(?, environment_json) "
                "WHERE spec_hash = ?",
                (settings_json, environment_json, spec_hash),
            )

    def runs(self, variant: str | None = None, task: str | None = None) -> list[RunRecord]:
        """The stored runs (optionally of one variant / task), by variant, task and creation."""
        where, params = _filters(variant, task)
        rows = self._db.execute(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs{where} ORDER BY variant, task, created", params
        ).fetchall()
        return [self._run_record(row) for row in rows]

    def run(self, spec_hash: str) -> RunRecord | None:
        """The settings stored under `spec_hash`, or None."""
        row = self._db.execute(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE spec_hash = ?", (spec_hash,)
        ).fetchone()
        return None if row is None else self._run_record(row)

    @staticmethod
    def _run_record(row: Sequence[Any]) -> RunRecord:
        values = dict(zip(_RUN_COLUMNS, row, strict=True))
        values["thinking_mode"] = bool(values["thinking_mode"])
        return RunRecord(**values)

    def spec_hashes(self, variant: str, task: str) -> set[str]:
        """The spec hashes of the rows stored for (variant, task)."""
        rows = self._db.execute(
            "SELECT DISTINCT spec_hash FROM results WHERE variant = ? AND task = ?", (variant, task)
        ).fetchall()
        return {r[0] for r in rows}

    # ---- results --------------------------------------------------------------------------

    def done_keys(self, variant: str, task: str) -> set[tuple[str, int]]:
        """The (item_id, sample) pairs already stored for (variant, task)."""
        rows = self._db.execute(
            "SELECT item_id, sample FROM results WHERE variant = ? AND task = ?", (variant, task)
        ).fetchall()
        return {(r[0], int(r[1])) for r in rows}

    def write_results(self, rows: Iterable[ResultRow], signals: SignalBatch | None = None) -> int:
        """Insert rows in one transaction; rows whose key is already stored are skipped.

        `signals`, when given, are the rows' trace signals (`analysis.signal_table`), stored in the
        same transaction for the rows inserted. Returns the number of rows inserted. Either the
        whole batch is committed or none of it.
        """
        values = []
        for row in rows:
            record = asdict(row)
            record["correct"] = int(row.correct)
            values.append(
                ([record[c] for c in _NUMBER_COLUMNS], text_fields(row.text, row.thinking, row.answer))
            )
        if not values:
            return 0
        with self._write():
            inserted: set[tuple[str, str, str, int]] = set()
            for numbers, text in values:
                cursor = self._db.execute(_RESULT_INSERT, numbers)
                if cursor.rowcount == 1:
                    self._db.execute(_TEXT_INSERT, (cursor.lastrowid, *text))
                    inserted.add((numbers[0], numbers[1], numbers[2], numbers[3]))
            # a key that finished now is no longer a failure
            self._db.executemany(
                "DELETE FROM failures WHERE variant = ? AND task = ? AND item_id = ? AND sample = ?",
                [n[:4] for n, _ in values],
            )
            if signals is not None:
                kept = tuple(r for r in signals.rows if r.key in inserted)
                self._put_signals(SignalBatch(signals.columns, kept))
            return len(inserted)

    # ---- trace signals ----------------------------------------------------------------------

    def write_signals(self, signals: SignalBatch) -> None:
        """Store (or replace, column by column) per-generation signals, in one transaction; keys
        the store does not hold are skipped."""
        with self._write():
            self._put_signals(signals)

    def _put_signals(self, signals: SignalBatch) -> None:
        if not signals.rows:
            return
        self._signal_columns(signals.columns)
        names = [name for name, _ in signals.columns]
        updates = ", ".join(f"{n} = excluded.{n}" for n in names)
        self._db.executemany(
            f"INSERT INTO signals (rules, id, {', '.join(names)}) SELECT ?, id{', ?' * len(names)} "
            "FROM results WHERE variant = ? AND task = ? AND item_id = ? AND sample = ? "
            f"ON CONFLICT (rules, id) DO UPDATE SET {updates}",
            [(r.rules, *r.values, *r.key) for r in signals.rows],
        )

    def _signal_columns(self, columns: Sequence[tuple[str, str]]) -> None:
        """Add the signal columns the table lacks (a signal declared since the store was written)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(signals)")}
        for name, kind in columns:
            if not _IDENTIFIER.fullmatch(name) or kind not in ("INTEGER", "REAL", "TEXT"):
                raise QuantscopeError(f"bad signal column {name!r} {kind!r}: a word, INTEGER / REAL / TEXT")
            if name not in have:
                self._db.execute(f"ALTER TABLE signals ADD COLUMN {name} {kind}")

    def declare_signals(self, columns: Sequence[tuple[str, str]]) -> None:
        """Make sure the signals table has these (name, SQL type) columns (a signal declared since
        the store was written gets its column, NULL for rows stored before)."""
        if set(n for n, _ in columns) <= self._signal_names():
            return
        with self._write():
            self._signal_columns(columns)

    def unsigned_count(self, rules: Mapping[str, str]) -> int:
        """How many rows of the tasks in `rules` (task -> rules version) have no signals of their
        task's version."""
        return sum(
            self._db.execute(
                "SELECT count(*) FROM results r WHERE r.task = ? AND NOT EXISTS "
                "(SELECT 1 FROM signals s WHERE s.rules = ? AND s.id = r.id)",
                (task, version),
            ).fetchone()[0]
            for task, version in sorted(rules.items())
        )

    def signal_versions(self) -> set[str]:
        """The rules versions the store holds signals of."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT rules FROM signals")}

    def unsigned(self, rules: Mapping[str, str], batch: int = 256) -> Iterator[list[dict[str, Any]]]:
        """The rows of the tasks in `rules` (task -> rules version) lacking signals of that version,
        `batch` at a time, as dicts of their key, target, thinking and text. Reads ahead by id, so
        writing a batch's signals before asking for the next one is safe."""
        for task, version in sorted(rules.items()):
            after = 0
            while True:
                rows = self._db.execute(
                    "SELECT r.id, r.variant, r.task, r.item_id, r.sample, r.target, t.text, t.thinking_at, "
                    "t.thinking_len, t.thinking FROM results r JOIN texts t ON t.id = r.id "
                    "WHERE r.task = ? AND r.id > ? AND NOT EXISTS "
                    "(SELECT 1 FROM signals s WHERE s.rules = ? AND s.id = r.id) ORDER BY r.id LIMIT ?",
                    (task, after, version, batch),
                ).fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                yield [_trace_row(row) for row in rows]

    def signal_table(
        self, rules: Mapping[str, str], names: Sequence[str], result_names: Sequence[str]
    ) -> dict[str, list[Any]]:
        """For the tasks in `rules` (task -> rules version), each row's `result_names` (columns of
        `results`) and stored signals `names` under its task's version, as lists ordered by key.
        Rows without signals of that version are left out (`unsigned_count` says how many)."""
        for name in (*names, *result_names):
            if not _IDENTIFIER.fullmatch(name):
                raise QuantscopeError(f"bad column name {name!r}")
        missing = [n for n in names if n not in self._signal_names()]
        if missing:
            raise QuantscopeError(f"the store has no signal columns {missing}: declare them first")
        picked = ", ".join([*(f"r.{n}" for n in result_names), *(f"s.{n}" for n in names)])
        out: list[tuple[Any, ...]] = []
        for task, version in sorted(rules.items()):
            out += self._db.execute(
                f"SELECT {picked} FROM results r JOIN signals s ON s.id = r.id AND s.rules = ? "
                "WHERE r.task = ? ORDER BY r.variant, r.task, r.item_id, r.sample",
                (version, task),
            ).fetchall()
        columns = (*result_names, *names)
        if not out:
            return {n: [] for n in columns}
        return {n: list(c) for n, c in zip(columns, zip(*out, strict=True), strict=True)}

    def _signal_names(self) -> set[str]:
        return {row[1] for row in self._db.execute("PRAGMA table_info(signals)")}

    def write_failures(self, failures: Iterable[Failure]) -> None:
        """Record requests that failed after their retries (replacing an earlier failure of the same
        key), in one transaction. A key already stored as a result is not recorded."""
        values = [[asdict(f)[c] for c in _FAILURE_COLUMNS] for f in failures]
        if not values:
            return
        names, marks = ", ".join(_FAILURE_COLUMNS), ", ".join("?" for _ in _FAILURE_COLUMNS)
        with self._write():
            self._db.executemany(
                f"INSERT INTO failures ({names}) SELECT {marks} WHERE NOT EXISTS (SELECT 1 FROM results "
                "WHERE variant = ? AND task = ? AND item_id = ? AND sample = ?) "
                "ON CONFLICT (variant, task, item_id, sample) DO UPDATE SET error = excluded.error, "
                "attempts = excluded.attempts, created = excluded.created, spec_hash = excluded.spec_hash",
                [v + v[:4] for v in values],
            )

    def write_forced(self, rows: Iterable[ForcedRow]) -> int:
        """Insert forced answers in one transaction (keys already stored are skipped); returns how
        many were inserted."""
        values = [[asdict(r)[c] if c != "correct" else int(r.correct) for c in _FORCED_COLUMNS] for r in rows]
        if not values:
            return 0
        names, marks = ", ".join(_FORCED_COLUMNS), ", ".join("?" for _ in _FORCED_COLUMNS)
        with self._write():
            before = self._db.total_changes
            self._db.executemany(f"INSERT OR IGNORE INTO forced ({names}) VALUES ({marks})", values)
            return self._db.total_changes - before

    def forced(self, variant: str | None = None, task: str | None = None) -> list[ForcedRow]:
        """The stored forced answers (optionally of one variant / task), by key."""
        where, params = _filters(variant, task)
        order = " ORDER BY variant, task, item_id, sample, budget"
        rows = self._db.execute(f"SELECT {', '.join(_FORCED_COLUMNS)} FROM forced{where}{order}", params)
        return [ForcedRow(*row[:9], bool(row[9]), *row[10:]) for row in rows.fetchall()]

    def write_strata(self, task: str, key: str, strata: Mapping[str, str]) -> None:
        """Record each item's stratum (`strata`: item id -> value of the task's field `key`), in one
        transaction; an item already recorded takes the new value (a re-downloaded benchmark)."""
        values = [(task, item_id, key, str(value)) for item_id, value in strata.items()]
        with self._write():
            self._db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)", values)

    def strata(self, task: str) -> tuple[str, dict[str, str]] | None:
        """The stratifying field of `task` and each recorded item's value of it (item id -> value);
        None when no item of `task` has a recorded stratum."""
        rows = self._db.execute(
            "SELECT item_id, stratum_key, stratum FROM items WHERE task = ? ORDER BY item_id", (task,)
        ).fetchall()
        if not rows:
            return None
        return rows[0][1], {item_id: stratum for item_id, _, stratum in rows}

    def failures(self, variant: str | None = None, task: str | None = None) -> list[Failure]:
        """The recorded failures (optionally of one variant / task), by key."""
        where, params = _filters(variant, task)
        order = " ORDER BY variant, task, item_id, sample"
        rows = self._db.execute(f"SELECT {', '.join(_FAILURE_COLUMNS)} FROM failures{where}{order}", params)
        return [Failure(*row) for row in rows.fetchall()]

    def count(self, variant: str | None = None, task: str | None = None) -> int:
        """Number of result rows, optionally for one variant and/or task."""
        where, params = _filters(variant, task)
        return int(self._db.execute(f"SELECT count(*) FROM results{where}", params).fetchone()[0])

    def pairs(self) -> list[tuple[str, str]]:
        """The (variant, task) pairs that have results, sorted."""
        rows = self._db.execute(
            "SELECT DISTINCT variant, task FROM results ORDER BY variant, task"
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def columns(
        self, names: Sequence[str], variant: str | None = None, task: str | None = None
    ) -> dict[str, list[Any]]:
        """Selected columns of `results_full` as lists (one entry per row), ordered by key.

        Only the numeric and key columns may be asked for (`NUMERIC_COLUMNS`,
        `TEXT_KEY_COLUMNS`): analysis never needs to read the generated text.
        """
        allowed = NUMERIC_COLUMNS | TEXT_KEY_COLUMNS
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise QuantscopeError(f"unknown result columns {unknown}; choose from {sorted(allowed)}")
        where, params = _filters(variant, task)
        rows = self._db.execute(
            f"SELECT {', '.join(names)} FROM results_numbers{where} ORDER BY variant, task, item_id, sample",
            params,
        ).fetchall()
        if not rows:
            return {n: [] for n in names}
        return {n: list(col) for n, col in zip(names, zip(*rows, strict=True), strict=True)}

    def generations(
        self, keys: Iterable[tuple[str, str, str, int]], columns: Sequence[str] | None = None
    ) -> dict[tuple[str, str, str, int], dict[str, Any]]:
        """Whole rows of `results_full` (text included), or only `columns` of them, for the given
        (variant, task, item_id, sample) keys, as dicts by key; keys the store does not hold are
        absent."""
        picked = "*"
        if columns is not None:
            bad = [c for c in columns if not _IDENTIFIER.fullmatch(c)]
            if bad:
                raise QuantscopeError(f"bad column names {bad}")
            picked = ", ".join(columns)
        found = {}
        where = "variant = ? AND task = ? AND item_id = ? AND sample = ?"
        query = f"SELECT {picked} FROM results_full WHERE {where}"
        for key in keys:
            cursor = self._db.execute(query, key)
            row = cursor.fetchone()
            if row is not None:
                found[key] = dict(zip([d[0] for d in cursor.description], row, strict=True))
        return found

    def rows(self, variant: str | None = None, task: str | None = None) -> list[dict[str, Any]]:
        """Whole rows of `results_full` (text included) as dicts, ordered by key."""
        where, params = _filters(variant, task)
        cursor = self._db.execute(
            f"SELECT * FROM results_full{where} ORDER BY variant, task, item_id, sample", params
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def traces(self, variant: str | None = None, task: str | None = None) -> Iterator[dict[str, Any]]:
        """The generated text of every row with its key, target, thinking and answer tokens, finish
        reason and correctness, ordered by key, one row at a time (a study's text does not fit in
        memory)."""
        where, params = _filters(variant, task)
        names = ("variant", "task", "item_id", "sample", "target", "thinking", "text", "thinking_tokens")
        names += ("answer_tokens", "finish_reason", "correct")
        cursor = self._db.execute(
            f"SELECT {', '.join(names)} FROM results_full{where} ORDER BY variant, task, item_id, sample",
            params,
        )
        for row in cursor:
            yield dict(zip(names, row, strict=True))

    def result_columns(self) -> list[str]:
        """The columns of `results_full` (what `export` can write), in the view's order."""
        return [d[0] for d in self._db.execute("SELECT * FROM results_full LIMIT 0").description]

    def batches(
        self, names: Sequence[str], variant: str | None = None, task: str | None = None, size: int = 1000
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Selected columns of `results_full` (text included when asked), ordered by key, `size` rows
        at a time: one cursor read with fetchmany, so memory holds one batch whatever the store's
        size. An unknown column is a QuantscopeError naming it and the valid ones (checked now, not
        on the first batch)."""
        valid = self.result_columns()
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise QuantscopeError(
                f"unknown column {unknown[0]!r} (of {', '.join(map(repr, unknown))}): the columns are "
                f"{', '.join(valid)}"
            )
        where, params = _filters(variant, task)
        # no text asked for: the view without the texts join, which would read each row's text page
        view = "results_full" if set(names) & set(_V4_TEXT) else "results_numbers"
        cursor = self._db.execute(
            f"SELECT {', '.join(names)} FROM {view}{where} ORDER BY variant, task, item_id, sample", params
        )
        return iter(lambda: cursor.fetchmany(size), [])


_V4_TEXT = ("text", "thinking", "answer")
_V4_COLUMNS = tuple(c for c in _RESULT_COLUMNS if c != "finish_inferred")  # what a v4 row holds
_NUMBER_COLUMNS = tuple(c for c in _RESULT_COLUMNS if c not in _V4_TEXT)
_V4_NUMBERS = tuple(c for c in _V4_COLUMNS if c not in _V4_TEXT)
_TEXT_COLUMNS = ("text", "thinking_at", "thinking_len", "thinking", "answer_at", "answer_len", "answer")
_RESULT_INSERT = (
    f"INSERT INTO results ({', '.join(_NUMBER_COLUMNS)}) VALUES ({', '.join('?' for _ in _NUMBER_COLUMNS)}) "
    "ON CONFLICT (variant, task, item_id, sample) DO NOTHING"
)
_TEXT_INSERT = f"INSERT INTO texts (id, {', '.join(_TEXT_COLUMNS)}) VALUES (?{', ?' * len(_TEXT_COLUMNS)})"


def text_fields(text: str, thinking: str, answer: str) -> tuple[Any, ...]:
    """A generation's text as the `texts` table holds it (`_TEXT_COLUMNS`): the whole text once,
    its thinking and answer as (offset, length) spans of it in characters, or given whole (offset
    NULL) when they are not a part of it (an engine that rewrote them) or the text holds a NUL
    character (which SQLite's substr would not count)."""
    spans: list[Any] = []
    whole = not isinstance(text, str) or "\x00" in text  # (a missing text fails NOT NULL on insert)
    for part, at in (
        (thinking, -1 if whole else text.find(thinking)),
        (answer, -1 if whole else text.rfind(answer)),
    ):
        if at < 0 or not isinstance(part, str):
            spans += [None, None, part]
        else:
            spans += [at, len(part), None]
    return (text, *spans)


def _trace_row(row: Sequence[Any]) -> dict[str, Any]:
    """A row of `Store.unsigned`'s query as a dict, its thinking cut from its text."""
    _, variant, task, item_id, sample, target, text, at, length, thinking = row
    thinking = thinking if at is None else text[at : at + length]
    return {"key": (variant, task, item_id, sample), "target": target, "text": text, "thinking": thinking}


def _copy_batch(db: sqlite3.Connection) -> int:
    """Move the first `MIGRATION_BATCH` rows of the v4 table into `results` and `texts`, in one
    transaction; returns how many moved (0: none left)."""
    with _WriteTransaction(db):
        if db.execute(f"SELECT 1 FROM sqlite_master WHERE name = '{PENDING_TABLE}'").fetchone() is None:
            return 0  # another process finished it
        names = ", ".join(("rowid", *_V4_COLUMNS))
        rows = db.execute(
            f"SELECT {names} FROM {PENDING_TABLE} ORDER BY rowid LIMIT {MIGRATION_BATCH}"
        ).fetchall()
        if not rows:
            return 0
        index = {c: i + 1 for i, c in enumerate(_V4_COLUMNS)}
        db.executemany(
            f"INSERT INTO results (id, {', '.join(_V4_NUMBERS)}) VALUES (?{', ?' * len(_V4_NUMBERS)})",
            [(row[0], *(row[index[c]] for c in _V4_NUMBERS)) for row in rows],
        )
        db.executemany(
            _TEXT_INSERT,
            [(row[0], *text_fields(*(row[index[c]] for c in _V4_TEXT))) for row in rows],
        )
        db.execute(f"DELETE FROM {PENDING_TABLE} WHERE rowid <= ?", (rows[-1][0],))
        return len(rows)


class _MigrationNote:
    """Says on stderr that a large store is being migrated, and how far it has got (every 10%),
    so a migration of minutes is not silence; a small one (under `MIGRATION_NOTE_ROWS`) says
    nothing."""

    def __init__(self, path: Path, rows: int) -> None:
        self.path, self.rows, self.done_rows, self.shown = path, rows, 0, 0
        self.started = time.perf_counter()
        self.loud = rows >= MIGRATION_NOTE_ROWS
        self._say(
            f"migrating {path} to schema version {SCHEMA_VERSION}: copying {rows:,} results (resumable)"
        )

    def copied(self, rows: int) -> None:
        self.done_rows += rows
        tenth = 10 * self.done_rows // max(self.rows, 1)
        if tenth > self.shown and self.done_rows < self.rows:
            self.shown = tenth
            self._say(f"  {self.done_rows:,} of {self.rows:,} copied")

    def done(self) -> None:
        self._say(
            f"  done: {self.done_rows:,} results in {time.perf_counter() - self.started:.0f} s (the old "
            f"table's pages stay in the file for new rows; `sqlite3 {self.path} VACUUM` gives them back)"
        )

    def _say(self, line: str) -> None:
        if self.loud:
            print(line, file=sys.stderr, flush=True)


MIGRATION_NOTE_ROWS = 10_000
"""A v4 store with at least this many results says on stderr how its migration is going."""


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated statements one by one (executescript would commit the open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _filters(variant: str | None, task: str | None) -> tuple[str, list[str]]:
    clauses, params = [], []
    if variant is not None:
        clauses.append("variant = ?")
        params.append(variant)
    if task is not None:
        clauses.append("task = ?")
        params.append(task)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class _WriteTransaction:
    """BEGIN IMMEDIATE (take the write lock up front), COMMIT on success, ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._db.in_transaction:
            return
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
