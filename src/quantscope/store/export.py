"""`quantscope export`: the store's generations, with their judgement and run metadata (the columns of
the `results_full` view), written to Parquet, CSV or JSON Lines as a stream.

A study store holds ~400k generations of 50–130 KB of text, more than memory, so rows are read
from the store in batches (`Store.batches`, a cursor read with fetchmany) and each batch is written
before the next is read: Parquet as one row group per batch through pyarrow's `ParquetWriter`
(`pyarrow/parquet/core.py`: each `write_table` call writes the table as its own row group(s), at
most 1024 × 1024 rows each), CSV through pyarrow's `CSVWriter` (one header, then each batch), JSON
Lines one object per line. Memory holds one batch whatever the store's size
(benchmarks/analysis_speed.py measures it). `columns` picks what to write, e.g. everything but the
text. The file is written beside `out` and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantscope.errors import QuantscopeError
from quantscope.util import atomic_path

if TYPE_CHECKING:
    from quantscope.store.database import Store

FORMATS = ("parquet", "csv", "jsonl")
SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
"""The format an output file's suffix implies; any other suffix means Parquet."""
BATCH_ROWS = 50_000
"""Rows per batch (and Parquet row group) at most: without the text, numbers and short keys (a few MB)."""
BATCH_CHARS = 16_000_000
"""Characters of text per batch at most, whatever the generations' length (~130 generations of
2 × 60 KB of text and thinking). A batch is held as Python strings (1–4 bytes per character) and as
Arrow arrays, and Parquet's writer buffers its row group: the Parquet export's peak RSS is ~300 MB
whatever the store's size (benchmarks/analysis_speed.py; ~0.65 MB per 50 KB generation in a batch)."""
_READ_ROWS = 64
"""Rows read from the store at a time, before they are gathered into a batch."""
_FLOATS = frozenset({"seconds", "created", "temperature", "top_p"})
_FLAGS = frozenset({"correct", "thinking_mode", "is_baseline"})


def export_format(out: str | Path, fmt: str | None = None) -> str:
    """The format to write: `fmt` when given, else the one `out`'s suffix implies (.csv, .jsonl,
    .ndjson; anything else: parquet)."""
    fmt = fmt if fmt is not None else SUFFIX_FORMATS.get(Path(out).suffix.lower(), "parquet")
    if fmt not in FORMATS:
        raise QuantscopeError(
            f"unknown export format {fmt!r}: use {', '.join(FORMATS)} for the generations, or eee / "
            "hf-eval-results for the results (quantscope export --format eee --out DIR)"
        )
    return fmt


def export_results(
    store: Store,
    out: str | Path,
    fmt: str | None = None,
    *,
    columns: Sequence[str] | None = None,
    variant: str | None = None,
    task: str | None = None,
    batch_rows: int | None = None,
) -> int:
    """Write the store's rows (optionally one variant / task; `columns` of `results_full`, all by
    default, in the order given) to `out` in `fmt` (`export_format`), ordered by key, in batches
    (Parquet row groups) of at most `batch_rows` rows (default `BATCH_ROWS`) and about `BATCH_CHARS`
    characters of text. Returns the number of rows written; an unknown column is a
    QuantscopeError naming it and the valid ones."""
    fmt = export_format(out, fmt)
    names = list(columns) if columns else store.result_columns()
    rows = batch_rows or BATCH_ROWS
    read = store.batches(names, variant=variant, task=task, size=min(rows, _READ_ROWS))  # checks names
    with atomic_path(out) as partial:
        return _WRITERS[fmt](partial, names, _gathered(read, rows, BATCH_CHARS))


def _gathered(
    read: Iterable[list[tuple[Any, ...]]], max_rows: int, max_chars: int
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows read, in batches of at most `max_rows` rows and about `max_chars` characters of
    text (a batch closes at the row that reaches it)."""
    batch: list[tuple[Any, ...]] = []
    chars = 0
    for rows in read:
        for row in rows:
            batch.append(row)
            chars += sum(len(value) for value in row if isinstance(value, str))
            if len(batch) >= max_rows or chars >= max_chars:
                yield batch
                batch, chars = [], 0
    if batch:
        yield batch


def _write_parquet(path: Path, names: list[str], batches: Iterable[list[tuple[Any, ...]]]) -> int:
    import pyarrow.parquet as pq

    schema = _schema(names)
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in batches:
            writer.write_table(_table(schema, batch))  # one row group per batch
            count += len(batch)
    return count


def _write_csv(path: Path, names: list[str], batches: Iterable[list[tuple[Any, ...]]]) -> int:
    import pyarrow.csv as pa_csv

    schema = _schema(names)
    count = 0
    with pa_csv.CSVWriter(path, schema) as writer:
        for batch in batches:
            writer.write_table(_table(schema, batch))
            count += len(batch)
    return count


def _write_jsonl(path: Path, names: list[str], batches: Iterable[list[tuple[Any, ...]]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as file:
        for batch in batches:
            file.writelines(
                json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) + "\n" for row in batch
            )
            count += len(batch)
    return count


_WRITERS: dict[str, Callable[[Path, list[str], Iterable[list[tuple[Any, ...]]]], int]] = {
    "parquet": _write_parquet,
    "csv": _write_csv,
    "jsonl": _write_jsonl,
}


def _schema(names: list[str]) -> Any:
    import pyarrow as pa

    return pa.schema([(name, _arrow_type(name)) for name in names])


def _table(schema: Any, batch: list[tuple[Any, ...]]) -> Any:
    """One batch of rows as an Arrow table of `schema` (columns built one at a time)."""
    import pyarrow as pa

    columns = list(zip(*batch, strict=True))
    return pa.table(
        [pa.array(column, type=field.type) for column, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


def _arrow_type(column: str) -> Any:
    """The Arrow type of a `results_full` column: floats, 0/1 flags as int8, other numbers as int64
    (`store.database.NUMERIC_COLUMNS`), text otherwise."""
    import pyarrow as pa

    from quantscope.store.database import NUMERIC_COLUMNS

    if column in _FLOATS:
        return pa.float64()
    if column in _FLAGS:
        return pa.int8()
    if column in NUMERIC_COLUMNS:
        return pa.int64()
    return pa.string()
