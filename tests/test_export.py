"""`quantscope export` (quantscope.store.export): every format read back with its own reader equals
the store's rows; chosen columns; several Parquet row groups for a store larger than one batch;
clear errors; nothing half-written. (Memory staying flat is measured in benchmarks/analysis_speed.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.errors import QuantscopeError
from quantscope.store.database import Store
from quantscope.store.export import _schema, export_results
from quantscope.store.rows import Variant
from tests.test_store import make_row, make_run

AWKWARD = 'He said "wait",\nthen: 5², ∞, — done;\r\n\\boxed{\\frac{3}{4}}, a "quote" and a, comma'


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Five rows of two variants: text with quotes, commas, line breaks and non-ASCII characters,
    an empty answer (cut at the cap), a missing extracted answer and memory figure."""
    with Store.open(tmp_path / "project") as opened:
        opened.put_variant(Variant("v", "/models/v", memory_bytes=1000, recipe="w4a16", is_baseline=True))
        opened.put_variant(Variant("w", "/models/w"))
        opened.record_run(make_run())
        opened.record_run(make_run("h2", variant="w"))
        opened.write_results(
            [
                make_row("b", 0, text=AWKWARD, thinking=AWKWARD),
                make_row("a", 1, correct=False, extracted=None, answer="", finish_reason="length"),
                make_row("a", 0, seconds=1.25),
                make_row("a", 0, variant="w", spec_hash="h2", text="x" * 5000),
                make_row("c", 3, variant="w", spec_hash="h2", prompt_sha="abc"),
            ]
        )
        yield opened


def read_back(path: Path, fmt: str, names: list[str]) -> list[dict]:
    """The exported file as row dicts, read with each format's own reader (Parquet and CSV by
    pyarrow with the export's column types: a quoted "" is a string, an empty field is null)."""
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "csv":
        options = pa_csv.ConvertOptions(
            column_types=_schema(names), strings_can_be_null=True, quoted_strings_can_be_null=False
        )
        return pa_csv.read_csv(path, convert_options=options).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_every_format_read_back_equals_the_stores_rows(store: Store, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out" / f"results.{fmt}"
    assert export_results(store, out) == 5  # the format from the suffix
    rows = store.rows()
    assert read_back(out, fmt, list(rows[0])) == rows
    assert {"text", "thinking", "answer", "spec_hash", "engine", "model_path", "memory_bytes"} <= set(rows[0])
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no partial file left behind


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_chosen_columns_in_their_order_and_one_variant(store: Store, tmp_path: Path, fmt: str) -> None:
    names = ["item_id", "correct", "finish_reason", "seconds", "memory_bytes"]
    out = tmp_path / "numbers.data"
    assert export_results(store, out, fmt, columns=names, variant="v") == 3
    expected = [{n: row[n] for n in names} for row in store.rows(variant="v")]
    got = read_back(out, fmt, names)
    assert got == expected and list(got[0]) == names


def test_a_store_larger_than_one_batch_is_written_in_several_row_groups(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    assert export_results(store, out, batch_rows=2) == 5
    assert pq.ParquetFile(out).num_row_groups == 3
    assert pq.read_table(out).to_pylist() == store.rows()


def test_an_unknown_column_names_itself_and_the_valid_ones_and_writes_nothing(
    store: Store, tmp_path: Path
) -> None:
    valid = r"the columns are variant, task, item_id"
    with pytest.raises(QuantscopeError, match=rf"unknown column 'txt'.*{valid}"):
        export_results(store, tmp_path / "r.parquet", columns=["item_id", "txt"])
    with pytest.raises(QuantscopeError, match="unknown column 'correct; drop'"):
        export_results(store, tmp_path / "r.csv", columns=["correct; drop"])
    assert list(tmp_path.iterdir()) == [tmp_path / "project"]


def test_an_empty_selection_and_a_bad_format(store: Store, tmp_path: Path) -> None:
    assert export_results(store, tmp_path / "e.parquet", variant="none") == 0
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0
    assert export_results(store, tmp_path / "e.jsonl", task="none") == 0
    assert (tmp_path / "e.jsonl").read_text() == ""
    with pytest.raises(QuantscopeError, match="unknown export format 'json': use parquet, csv, jsonl"):
        export_results(store, tmp_path / "e.json", "json")


def test_the_command_takes_a_format_and_columns(store: Store, tmp_path: Path) -> None:
    where = ["--store", str(store.path.parent)]
    out = tmp_path / "rows.txt"
    chosen = ["--format", "jsonl", "--columns", "variant, item_id,correct"]
    done = CliRunner().invoke(app, ["export", "--out", str(out), *chosen, *where])
    assert done.exit_code == 0, done.output
    assert "wrote 5 rows" in done.output
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {"variant": "v", "item_id": "a", "correct": 1}
    bad = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "x.csv"), "--columns", "texts", *where])
    assert bad.exit_code != 0 and "unknown column 'texts'" in bad.output
