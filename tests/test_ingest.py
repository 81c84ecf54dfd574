"""`quantscope import json`: plain JSON / JSONL generations (a vLLM or OpenAI batch, a home-made
run) into the store as ordinary rows, checked against the toy's real tokenizer (transformers'
AutoTokenizer, loaded independently here), quantscope's judges, and the store's own rows; then
compared as any generated variant is."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.errors import QuantscopeError
from quantscope.ingest import ImportOptions, SourceSettings, import_files
from quantscope.store.database import DB_NAME, Store
from quantscope.store.settings import OutputSettings, text_fingerprint
from quantscope.toy.bundled import checkpoint_dir

runner = CliRunner()
TOY = str(checkpoint_dir())


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOY)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantscope.cli.app import console, err_console

    monkeypatch.setattr(console, "width", 400)
    monkeypatch.setattr(err_console, "width", 400)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# AIME-style items: the prompt, the gold, and what each variant wrote.
PROBLEMS = {
    "What is 6*7?": "42",
    "What is 2+3?": "5",
    "What is 9*9?": "81",
    "What is 10+10?": "20",
}


def generations(wrong: set[str] = frozenset(), cut: set[str] = frozenset()) -> list[dict[str, Any]]:
    """One row per problem, as vLLM's offline `generate` output written by a user's script: the
    completion with the thinking closed by `</think>` (cut ones never close it)."""
    rows = []
    for prompt, gold in PROBLEMS.items():
        answer = str(int(gold) + 1) if prompt in wrong else gold
        text = (
            f"Let me work out {prompt} carefully"
            if prompt in cut
            else (f"Compute {prompt} step by step.\n</think>\n\nSo the answer is \\boxed{{{answer}}}.")
        )
        rows.append({"prompt": prompt, "generated_text": text, "answer": gold, "says": prompt not in wrong})
    return rows


MAPPING = ["text=generated_text", "gold=answer", "correct=says"]


def fields(pairs: list[str]) -> dict[str, str]:
    from quantscope.ingest.plain_json import parse_fields

    return parse_fields(pairs)


def store_state(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    if not (path / DB_NAME).exists():
        return {}
    with sqlite3.connect(path / DB_NAME) as db:
        return {
            t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in ("variants", "runs", "results")
        }


def test_json_rows_split_count_infer_and_rejudge(tmp_path: Path, tokenizer: Any) -> None:
    source = write_jsonl(tmp_path / "run.jsonl", generations(wrong={"What is 2+3?"}, cut={"What is 9*9?"}))
    options = ImportOptions("fp8", task="aime2025", model=TOY, declared=SourceSettings(max_tokens=4096))
    with Store.open(tmp_path) as store:
        summary = import_files("json", [source], store, options, fields(MAPPING))
        rows = {r["item_id"]: r for r in store.rows("fp8")}
        run = store.runs("fp8")[0]

    assert summary.task == "aime25" and summary.rows == summary.added == 4  # inspect_evals' name, aliased
    assert set(rows) == {text_fingerprint(p) for p in PROBLEMS}  # no id field: items named by their prompt
    close = tokenizer.convert_tokens_to_ids("</think>")
    for prompt, gold in PROBLEMS.items():
        row = rows[text_fingerprint(prompt)]
        ids = tokenizer.encode(row["text"], add_special_tokens=False)
        assert row["sample"] == 0 and row["target"] == gold
        if prompt == "What is 9*9?":  # the thinking never closed: cut, inferred
            assert row["finish_reason"] == "length" and row["answer"] == "" and not row["correct"]
            assert row["completion_tokens"] == row["thinking_tokens"] == len(ids)
            continue
        assert row["finish_reason"] == "stop"
        assert row["thinking"] == f"Compute {prompt} step by step." and row["answer"].startswith(
            "So the answer"
        )
        assert row["completion_tokens"] == len(ids) + 1  # vLLM counts the end-of-turn token
        assert row["thinking_tokens"] == ids.index(close)
        assert row["correct"] == (prompt != "What is 2+3?")  # re-judged by the AIME judge
    assert summary.inferred_finish == 4 and summary.unknown_tokens == 0
    settings = OutputSettings.from_json(run.settings_json)
    assert settings.max_tokens == 4096 and settings.temperature is None and settings.thinking is True
    assert settings.served["correct"] == "re-judged by quantscope (aime25)"


def test_the_source_verdict_is_kept_for_a_task_quantscope_does_not_know(tmp_path: Path) -> None:
    rows = generations(wrong={"What is 2+3?"})
    rows[0]["says"] = False  # the harness's verdict, whatever the text says
    source = write_jsonl(tmp_path / "run.jsonl", rows)
    with Store.open(tmp_path) as store:
        summary = import_files("json", [source], store, ImportOptions("x", task="my_eval"), fields(MAPPING))
        correct = {r["item_id"]: bool(r["correct"]) for r in store.rows("x")}
        settings = OutputSettings.from_json(store.runs("x")[0].settings_json)
    assert correct == {text_fingerprint(r["prompt"]): r["says"] for r in rows}
    assert summary.correct == "the source's own score" == settings.served["correct"]
    # without a tokenizer the counts are unknown, and said to be
    assert summary.unknown_tokens == 4 and "unknown" in summary.tokens


def test_vllm_reasoning_field_usage_finish_reason_and_cap(tmp_path: Path, tokenizer: Any) -> None:
    """An OpenAI-compatible server's responses saved as a JSON list: vLLM's reasoning parser keeps
    the thinking in `message.reasoning`; usage and finish_reason are the server's."""
    body = [
        {
            "id": "q1",
            "question": "What is 6*7?",
            "gold": "42",
            "response": {
                "choices": [
                    {
                        "message": {"reasoning": "6 times 7 is 42.", "content": "\\boxed{42}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"completion_tokens": 30, "completion_tokens_details": {"reasoning_tokens": 20}},
            },
        },
        {
            "id": "q2",
            "question": "What is 2+3?",
            "gold": "5",
            "response": {"choices": [{"message": {"reasoning": "2 plus 3 is 5 so", "content": ""}}]},
        },
    ]
    source = tmp_path / "batch.json"
    source.write_text(json.dumps(body, indent=2))
    mapping = [
        "prompt=question",
        "text=response.choices.message.content",  # a one-element list stepped through
        "reasoning=response.choices.0.message.reasoning",
        "finish_reason=response.choices.finish_reason",
        "completion_tokens=response.usage.completion_tokens",
        "thinking_tokens=response.usage.completion_tokens_details.reasoning_tokens",
    ]
    with Store.open(tmp_path) as store:
        summary = import_files(
            "json", [source], store, ImportOptions("v", task="aime25", model=TOY), fields(mapping)
        )
        rows = {r["item_id"]: r for r in store.rows("v")}
    given, cut = rows["q1"], rows["q2"]
    assert (given["completion_tokens"], given["thinking_tokens"], given["finish_reason"]) == (30, 20, "stop")
    assert given["thinking"] == "6 times 7 is 42." and given["answer"] == "\\boxed{42}" and given["correct"]
    assert given["text"] == "6 times 7 is 42.</think>\\boxed{42}"
    # no content, no finish reason: the thinking never closed, inferred cut; counted with the tokenizer
    assert cut["finish_reason"] == "length" and cut["thinking"] == "2 plus 3 is 5 so" and not cut["correct"]
    assert cut["completion_tokens"] == len(tokenizer.encode("2 plus 3 is 5 so", add_special_tokens=False))
    assert summary.inferred_finish == 1


def test_a_count_reaching_the_declared_cap_is_inferred_cut(tmp_path: Path, tokenizer: Any) -> None:
    rows = generations()
    lengths = [len(tokenizer.encode(r["generated_text"], add_special_tokens=False)) for r in rows]
    cap = sorted(lengths)[1]  # the shortest stays under it
    source = write_jsonl(tmp_path / "run.jsonl", rows)
    options = ImportOptions("v", task="aime25", model=TOY, declared=SourceSettings(max_tokens=cap))
    with Store.open(tmp_path) as store:
        import_files("json", [source], store, options, fields(MAPPING))
        finish = {r["item_id"]: r["finish_reason"] for r in store.rows("v")}
    expected = {
        text_fingerprint(r["prompt"]): "length" if n >= cap else "stop"
        for r, n in zip(rows, lengths, strict=True)
    }
    assert finish == expected and set(expected.values()) == {"length", "stop"}


def test_samples_are_numbered_per_item_and_ids_pair_two_files(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", generations() + generations(wrong={"What is 6*7?"}))
    second = write_jsonl(tmp_path / "b.jsonl", list(reversed(generations(wrong=set(PROBLEMS)))))
    with Store.open(tmp_path) as store:
        import_files(
            "json", [first], store, ImportOptions("a", task="aime25", baseline=True), fields(MAPPING)
        )
        import_files("json", [second], store, ImportOptions("b", task="aime25"), fields(MAPPING))
        a = {(r["item_id"], r["sample"]) for r in store.rows("a")}
        b = {(r["item_id"], r["sample"]) for r in store.rows("b")}
    assert a == {(text_fingerprint(p), j) for p in PROBLEMS for j in (0, 1)}
    assert b == {(text_fingerprint(p), 0) for p in PROBLEMS}  # same items, in another order


def test_a_second_import_adds_nothing_and_other_settings_are_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "run.jsonl", generations())
    options = ImportOptions("v", task="aime25", declared=SourceSettings(temperature=0.6))
    with Store.open(tmp_path) as store:
        assert import_files("json", [source], store, options, fields(MAPPING)).added == 4
        before = store_state(tmp_path)
        again = import_files("json", [source], store, options, fields(MAPPING))
        assert again.added == 0 and again.rows == 4 and store_state(tmp_path)["results"] == before["results"]
        other = ImportOptions("v", task="aime25", declared=SourceSettings(temperature=1.0))
        with pytest.raises(QuantscopeError, match=r"temperature 0\.6 -> 1\.0"):
            import_files("json", [source], store, other, fields(MAPPING))


@pytest.mark.parametrize(
    ("content", "mapping", "task", "message"),
    [
        (
            '{"prompt": "p", "generated_text": "t", "answer": "1"}\n{"prompt": "q", "answer": "2"}\n',
            MAPPING,
            "aime25",
            "run.jsonl, line 2, field 'generated_text': is missing",
        ),
        (
            '{"prompt": "p", "generated_text": "t", "answer": "1"}\n{"prompt": "q", "generated_text": \n',
            MAPPING,
            "aime25",
            "run.jsonl, line 2, field '(line)': not JSON",
        ),
        (
            '{"prompt": "p", "generated_text": "t"}\n',
            ["text=generated_text", "correct=says"],
            "my_eval",
            "run.jsonl, line 1, field 'correct': no verdict",
        ),
        (
            '{"prompt": "p", "generated_text": "t", "answer": "3"}\n{"prompt": "q", "generated_text": "t"}\n',
            MAPPING,
            "aime25",
            "run.jsonl, line 2, field 'gold': no gold answer",
        ),
        (
            '{"prompt": "p", "generated_text": "t", "answer": "x"}\n',
            MAPPING,
            "aime25",
            "run.jsonl, line 1, field 'gold': 'x' is not an integer",
        ),
        (
            '[\n {"prompt": "p", "generated_text": "t", "answer": "1"},\n'
            ' {"prompt": "q", "generated_text": "u", "answer": "1", "completion_tokens": "many"}\n]',
            MAPPING,
            "aime25",
            "run.jsonl, line 3, field 'completion_tokens': is 'many', not a whole number",
        ),
    ],
)
def test_malformed_input_names_file_line_and_field_and_leaves_the_store_unchanged(
    tmp_path: Path, content: str, mapping: list[str], task: str, message: str
) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", generations())
    with Store.open(tmp_path) as store:
        import_files("json", [good], store, ImportOptions("v", task="aime25"), fields(MAPPING))
    before = store_state(tmp_path)
    bad = tmp_path / "run.jsonl"
    bad.write_text(content)
    result = runner.invoke(
        app,
        ["import", "json", str(good), str(bad), "--variant", "w", "--task", task, "--store", str(tmp_path)]
        + [f"--field={m}" for m in mapping],
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in " ".join(result.output.split()), result.output
    assert store_state(tmp_path) == before


def test_two_imported_variants_compare_as_generated_ones_do(tmp_path: Path) -> None:
    base = write_jsonl(tmp_path / "bf16.jsonl", generations())
    quant = write_jsonl(tmp_path / "int4.jsonl", generations(wrong={"What is 2+3?"}))
    flags = ["--task", "aime25", "--store", str(tmp_path), "--max-tokens", "4096", "--model", TOY]
    for name, path, extra in (("bf16", base, ["--baseline"]), ("int4", quant, [])):
        result = runner.invoke(
            app,
            ["import", "json", str(path), "--variant", name, *flags, *extra]
            + [f"--field={m}" for m in MAPPING],
        )
        assert result.exit_code == 0, result.output
        assert (
            "4 new rows stored" in result.output
            and "settings unknown: temperature, top_p, top_k" in result.output
        )

    result = runner.invoke(app, ["compare", "--store", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.output)["comparisons"][0]
    assert (comparison["variant"], comparison["baseline"], comparison["paired_items"]) == ("int4", "bf16", 4)
    assert comparison["accuracy"] == 0.75 and comparison["baseline_accuracy"] == 1.0
    assert {"temperature of int4", "temperature of bf16"} <= set(comparison["unknown_settings"])
    shown = runner.invoke(app, ["compare", "--store", str(tmp_path)])
    assert shown.exit_code == 0 and "rests on unknown settings" in shown.output, shown.output


def test_unknown_token_counts_are_stored_unknown_and_the_analysis_leaves_them_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No counts in the file and no tokenizer: NULL in the store, not 0; accuracy and the verdicts
    still computed, every thinking-length figure unknown rather than 'no thinking at all'."""
    base = write_jsonl(tmp_path / "bf16.jsonl", generations(cut={"What is 9*9?"}))
    quant = write_jsonl(tmp_path / "int4.jsonl", generations(wrong={"What is 2+3?"}, cut={"What is 9*9?"}))
    for name, path, extra in (("bf16", base, ["--baseline"]), ("int4", quant, [])):
        result = runner.invoke(
            app,
            ["import", "json", str(path), "--variant", name, "--task", "aime25", "--store", str(tmp_path)]
            + extra
            + [f"--field={m}" for m in MAPPING],
        )
        assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        counts = db.execute(
            "SELECT completion_tokens, thinking_tokens, answer_tokens FROM results"
        ).fetchall()
        inferred = db.execute("SELECT DISTINCT finish_inferred FROM results").fetchall()
        sampling = db.execute("SELECT temperature, top_p, top_k, seed FROM runs").fetchall()
    assert counts == [(None, None, None)] * 8
    assert inferred == [(1,)]  # the file kept no finish reasons: every row says its was inferred
    assert sampling == [(None, None, None, None)] * 2  # unrecorded settings: unknown, not -1

    result = runner.invoke(app, ["compare", "--store", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.output)["comparisons"][0]
    assert comparison["accuracy"] == 0.5 and comparison["baseline_accuracy"] == 0.75
    assert comparison["truncation_rate"] == 0.25
    assert comparison["cot_token_inflation_ratio"]["ratio"] is None
    assert comparison["inflation"]["median_all"] is None and comparison["inflation"]["mean_all"] is None
    for command in (["report", "--out", str(tmp_path / "r.html")], ["recommend"], ["compare"]):
        shown = runner.invoke(app, [*command, "--store", str(tmp_path)])
        assert shown.exit_code == 0, (command, shown.output)

    # exported as EEE and imported back, the counts stay unknown and the finishes inferred (offline:
    # the export re-reads the prompts from the task, which has no local copy here)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    out = tmp_path / "eee"
    exported = runner.invoke(app, ["export", "--format", "eee", "--out", str(out), "--store", str(tmp_path)])
    assert exported.exit_code == 0, exported.output
    (samples,) = out.glob("data/*/*/int4/*_samples.jsonl")
    (aggregate,) = out.glob("data/*/*/int4/*.json")
    details = json.loads(aggregate.read_text())["evaluation_results"][0]["generation_config"]
    metadata = [json.loads(line)["metadata"] for line in samples.read_text().splitlines()]
    assert "seed" not in details["additional_details"] and all("seed" not in m for m in metadata)
    assert "None" not in [*details["additional_details"].values(), *(v for m in metadata for v in m.values())]
    back = runner.invoke(app, ["import", "eee", str(samples), "--variant", "back", "--store", str(tmp_path)])
    assert back.exit_code == 0, back.output
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        query = "SELECT completion_tokens, thinking_tokens, finish_reason, finish_inferred, seed FROM results"
        again = db.execute(f"{query} WHERE variant = 'back' ORDER BY item_id").fetchall()
        first = db.execute(f"{query} WHERE variant = 'int4' ORDER BY item_id").fetchall()
        seeds = db.execute("SELECT seed FROM runs WHERE variant = 'back'").fetchall()
    assert again == first and {r[3] for r in again} == {1} and {r[4] for r in again} == {None}
    assert seeds == [(None,)]


def test_a_variant_with_counts_against_one_without_has_no_inflation_ratio(
    tmp_path: Path, tokenizer: Any
) -> None:
    base = write_jsonl(tmp_path / "bf16.jsonl", generations())
    quant = write_jsonl(tmp_path / "int4.jsonl", generations())
    with Store.open(tmp_path) as store:
        counted = ImportOptions("bf16", task="aime25", model=TOY, baseline=True)
        import_files("json", [base], store, counted, fields(MAPPING))
        import_files("json", [quant], store, ImportOptions("int4", task="aime25"), fields(MAPPING))
    # counted one way and not the other: a difference compare names, and lets through when asked
    result = runner.invoke(app, ["compare", "--store", str(tmp_path), "--json", "--allow-mismatch"])
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.output)["comparisons"][0]
    assert comparison["delta"] == 0.0 and comparison["cot_token_inflation_ratio"]["ratio"] is None
