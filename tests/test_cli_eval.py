"""End to end on CPU: `quantscope eval` with the real transformers engine on a tiny real Qwen3.5,
`runs`, `export`, and a run killed with SIGKILL mid-way that resumes to the exact row count."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.store.database import DB_NAME

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render tables at full width: CliRunner is not a terminal, so rich would assume 80 columns."""
    from quantscope.cli.app import console

    monkeypatch.setattr(console, "width", 200)


def eval_args(model: Path, store: Path, *extra: str) -> list[str]:
    return [
        "eval",
        str(model),
        "--task",
        "synthetic",
        "--engine",
        "transformers",
        "--variant",
        "tiny",
        "--max-tokens",
        "24",
        "--store",
        str(store),
        *extra,
    ]


def stored_rows(store: Path) -> list[tuple]:
    """(item_id, sample, text, completion_tokens) of every row, read without the Store class."""
    db = sqlite3.connect(f"file:{store / DB_NAME}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(
            "SELECT item_id, sample, text, completion_tokens FROM results_full ORDER BY item_id, sample"
        ).fetchall()
    finally:
        db.close()


def test_eval_runs_exports_and_resumes_on_a_tiny_model(tiny_qwen35_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = runner.invoke(app, eval_args(tiny_qwen35_dir, store, "-k", "2", "--limit", "3", "--seed", "5"))
    assert result.exit_code == 0, result.output
    assert "synthetic: 6 generated, 0 already stored" in result.output
    assert "accuracy" in result.output and "tiny" in result.output

    db = sqlite3.connect(store / DB_NAME)
    rows = db.execute(
        "SELECT sample, seed, completion_tokens, thinking_tokens, answer_tokens, finish_reason, text, "
        "correct, max_tokens, engine, thinking_mode, temperature FROM results_full"
    ).fetchall()
    assert len(rows) == 6
    for sample, seed, tokens, thinking, answer, finish, text, correct, cap, engine, mode, temp in rows:
        assert seed == 5 + sample
        assert 0 < tokens <= 24 and 0 <= thinking <= tokens and answer == tokens - thinking
        assert finish in ("stop", "length") and (finish == "length") == (tokens == 24)
        assert text and correct in (0, 1)  # a random model: garbage text, but a real generation
        assert (cap, engine, mode, temp) == (24, "transformers", 1, 1.0)
    (memory,) = db.execute("SELECT memory_bytes FROM variants WHERE name = 'tiny'").fetchone()
    assert memory == (tiny_qwen35_dir / "model.safetensors").stat().st_size
    db.close()

    listed = runner.invoke(app, ["runs", "--store", str(store)])
    assert listed.exit_code == 0 and "tiny" in listed.output and "synthetic" in listed.output

    out = tmp_path / "export" / "rows.parquet"
    exported = runner.invoke(app, ["export", "--out", str(out), "--store", str(store)])
    assert exported.exit_code == 0, exported.output
    assert pq.read_table(out).num_rows == 6

    again = runner.invoke(app, eval_args(tiny_qwen35_dir, store, "-k", "2", "--limit", "3", "--seed", "5"))
    assert again.exit_code == 0 and "0 generated, 6 already stored" in again.output


def test_spec_file_with_flag_overrides(tiny_qwen35_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "run.yaml"
    spec.write_text(
        f"model: {tiny_qwen35_dir}\n"
        "tasks: [{name: synthetic, options: {per_level: 1, levels: [2, 3]}}]\n"
        "k: 1\npreset: greedy\n"
    )
    result = runner.invoke(
        app, ["eval", "--spec", str(spec), "-k", "2", "--max-tokens", "8", "--store", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    rows = stored_rows(tmp_path)
    assert [(r[0], r[1]) for r in rows] == [("L2-000", 0), ("L2-000", 1), ("L3-000", 0), ("L3-000", 1)]
    assert rows[0][2] == rows[1][2]  # greedy from the file: both samples are the same text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--task", "aime25"], "model: Field required"),
        (["eval", "m", "--task", "aime25", "--preset", "hot"], "unknown preset 'hot'"),
        (["eval", "m", "--task", "aime25", "--engine-option", "dtype"], "KEY=VALUE"),
        (["runs"], "no quantscope store"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--store", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_unknown_spec_keys_are_errors(tmp_path: Path) -> None:
    spec = tmp_path / "run.yaml"
    spec.write_text("model: m\ntasks: [aime25]\nmax_token: 10\n")
    result = runner.invoke(app, ["eval", "--spec", str(spec), "--store", str(tmp_path)])
    assert result.exit_code == 2
    assert "max_token: Extra inputs are not permitted" in " ".join(result.output.split())


def rows_so_far(store: Path) -> list[tuple]:
    """`stored_rows` while a run may still be creating the store: none until its schema exists (the
    database file appears when the run connects, its tables a moment later)."""
    if not (store / DB_NAME).exists():
        return []
    try:
        return stored_rows(store)
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_every_row_once(tiny_qwen35_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = eval_args(
        tiny_qwen35_dir, store, "-k", "4", "--limit", "6", "--batch-size", "2", "--max-tokens", "32"
    )
    expected = 6 * 4
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "quantscope.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if len(rows_so_far(store)) >= 4:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    before = stored_rows(store)
    assert 4 <= len(before) < expected, len(before)
    # rows are committed in windows of <= 2 rows or 2 s as they finish, so any count can be there

    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert f"{expected - len(before)} generated, {len(before)} already stored" in resumed.output
    after = stored_rows(store)
    assert len(after) == expected
    assert len({(r[0], r[1]) for r in after}) == expected
    # --limit 6 takes one problem of each of the six levels (issue 11: a limit used to test level 1 only)
    assert {(r[0], r[1]) for r in after} == {(f"L{level}-000", j) for level in range(1, 7) for j in range(4)}
    assert set(before) <= set(after)  # rows committed before the kill were kept, not regenerated


def test_the_trained_toy_reasoner_scores_and_thinks(tmp_path: Path) -> None:
    """With a model that really reasons, rows carry split thinking, boxed answers and right judgements."""
    from quantscope.toy import checkpoint_dir

    toy = checkpoint_dir()  # shipped in the package: a missing checkpoint fails here, never skips
    args = ["eval", str(toy), "--task", "synthetic", "--limit", "4", "--preset", "greedy"]
    result = runner.invoke(app, [*args, "--max-tokens", "512", "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    db = sqlite3.connect(tmp_path / DB_NAME)
    rows = db.execute(
        "SELECT thinking, answer, thinking_tokens, answer_tokens, correct, extracted FROM results_full"
    )
    rows = rows.fetchall()
    assert len(rows) == 4
    assert sum(r[4] for r in rows) >= 2  # the model card reports near-perfect level-1 accuracy
    for thinking, answer, thinking_tokens, answer_tokens, correct, extracted in rows:
        assert thinking and thinking_tokens > 0 and answer_tokens > 0
        assert "\\boxed{" in answer and (extracted is not None or not correct)
