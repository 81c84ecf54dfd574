"""The schemas earlier quantscopes wrote, for the migration tests: the store must open and
migrate what its users already hold (written out here, not derived from the current schema)."""

# Tables every version from 4 on holds unchanged.
_VARIANTS_RUNS = """
CREATE TABLE variants (name TEXT PRIMARY KEY, model_path TEXT NOT NULL, memory_bytes INTEGER, recipe TEXT,
    is_baseline INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, memory_source TEXT);
CREATE TABLE runs (spec_hash TEXT PRIMARY KEY, variant TEXT NOT NULL REFERENCES variants(name),
    task TEXT NOT NULL, engine TEXT NOT NULL, model_path TEXT NOT NULL, thinking_mode INTEGER NOT NULL,
    temperature REAL NOT NULL, top_p REAL NOT NULL, top_k INTEGER NOT NULL, max_tokens INTEGER NOT NULL,
    seed INTEGER NOT NULL, spec_json TEXT NOT NULL, created REAL NOT NULL, settings_json TEXT,
    environment_json TEXT);
"""
_FAILURES_FORCED_ITEMS = """
CREATE TABLE failures (variant TEXT NOT NULL, task TEXT NOT NULL, item_id TEXT NOT NULL,
    sample INTEGER NOT NULL, spec_hash TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (variant, task, item_id, sample));
CREATE TABLE forced (variant TEXT NOT NULL, task TEXT NOT NULL, item_id TEXT NOT NULL,
    sample INTEGER NOT NULL, budget INTEGER NOT NULL, text TEXT NOT NULL, answer TEXT NOT NULL,
    answer_tokens INTEGER NOT NULL, finish_reason TEXT NOT NULL, correct INTEGER NOT NULL, extracted TEXT,
    created REAL NOT NULL, PRIMARY KEY (variant, task, item_id, sample, budget));
CREATE TABLE items (task TEXT NOT NULL, item_id TEXT NOT NULL, stratum_key TEXT NOT NULL,
    stratum TEXT NOT NULL, PRIMARY KEY (task, item_id));
"""

# Version 4: text, thinking and answer inline in `results`.
SCHEMA_V4 = (
    _VARIANTS_RUNS
    + """
CREATE TABLE results (variant TEXT NOT NULL, task TEXT NOT NULL, item_id TEXT NOT NULL,
    sample INTEGER NOT NULL, spec_hash TEXT NOT NULL REFERENCES runs(spec_hash), seed INTEGER,
    target TEXT NOT NULL, text TEXT NOT NULL, thinking TEXT NOT NULL, answer TEXT NOT NULL,
    completion_tokens INTEGER NOT NULL, thinking_tokens INTEGER NOT NULL, answer_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL, seconds REAL NOT NULL, correct INTEGER NOT NULL, extracted TEXT,
    created REAL NOT NULL, prompt_sha TEXT, UNIQUE (variant, task, item_id, sample));
"""
    + _FAILURES_FORCED_ITEMS
    + "PRAGMA user_version = 4;\n"
)

# Version 5: the text apart (`texts`), signals stored; token counts and sampling settings NOT NULL.
SCHEMA_V5 = (
    _VARIANTS_RUNS
    + """
CREATE TABLE results (id INTEGER PRIMARY KEY, variant TEXT NOT NULL, task TEXT NOT NULL,
    item_id TEXT NOT NULL, sample INTEGER NOT NULL, spec_hash TEXT NOT NULL REFERENCES runs(spec_hash),
    seed INTEGER, target TEXT NOT NULL, completion_tokens INTEGER NOT NULL,
    thinking_tokens INTEGER NOT NULL, answer_tokens INTEGER NOT NULL, finish_reason TEXT NOT NULL,
    seconds REAL NOT NULL, correct INTEGER NOT NULL, extracted TEXT, created REAL NOT NULL,
    prompt_sha TEXT, UNIQUE (variant, task, item_id, sample));
CREATE TABLE texts (id INTEGER PRIMARY KEY REFERENCES results(id), text TEXT NOT NULL,
    thinking_at INTEGER, thinking_len INTEGER, thinking TEXT, answer_at INTEGER, answer_len INTEGER,
    answer TEXT, CHECK (thinking IS NOT NULL OR thinking_at IS NOT NULL),
    CHECK (answer IS NOT NULL OR answer_at IS NOT NULL));
CREATE TABLE signals (rules TEXT NOT NULL, id INTEGER NOT NULL, loop_period INTEGER,
    PRIMARY KEY (rules, id)) WITHOUT ROWID;
"""
    + _FAILURES_FORCED_ITEMS
    + "PRAGMA user_version = 5;\n"
)
