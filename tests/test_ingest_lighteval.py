"""`quantscope import lighteval`: lighteval `--save-details` parquet files into the store.

The files are written the way huggingface/lighteval's `EvaluationTracker.save` writes them
(src/lighteval/logging/evaluation_tracker.py): a `datasets.Dataset.from_list` of `asdict(Detail)`
rows (`doc` as tasks/requests.py's `Doc`, `model_response` as models/model_output.py's
`ModelResponse`, `metric`), columns sorted, saved with `Dataset.to_parquet` under
`details/<model>/<date>/details_<task>_<date>.parquet`, and `results/<model>/results_<date>.json`
beside; `datasets` (the library lighteval itself uses) does the parquet encoding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.ingest import ImportOptions, import_files
from quantscope.store.database import Store
from quantscope.store.settings import OutputSettings
from quantscope.toy.bundled import checkpoint_dir

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantscope.cli.app import console, err_console

    monkeypatch.setattr(console, "width", 400)
    monkeypatch.setattr(err_console, "width", 400)


TOY = str(checkpoint_dir())
DATE = "2026-05-01T10-11-12.123456"
MODEL = "Qwen/Qwen3-8B"


def doc(item: str, query: str, choices: list[str], gold: int) -> dict[str, Any]:
    """`asdict(Doc)`: the fields tasks/requests.py's Doc declares, defaults where unset."""
    return {
        "query": query,
        "choices": choices,
        "gold_index": gold,
        "instruction": None,
        "specific": None,
        "unconditioned_query": None,
        "original_query": None,
        "id": item,
        "task_name": "community|mytask|0",
        "fewshot_samples": [],
        "generation_size": 64,
        "stop_sequences": None,
        "use_logits": False,
        "num_samples": 1,
    }


def response(texts: list[str], reasonings: list[str | None], tokens: list[list[int]]) -> dict[str, Any]:
    """`asdict(ModelResponse)` (models/model_output.py)."""
    return {
        "input": "<chat-formatted prompt>",
        "input_tokens": [1, 2, 3],
        "text": texts,
        "output_tokens": tokens,
        "text_post_processed": None,
        "reasonings": reasonings,
        "logprobs": [],
        "argmax_logits_eq_gold": [],
        "truncated_tokens_count": 0,
        "padded_tokens_count": 0,
    }


def details() -> list[dict[str, Any]]:
    return [
        # the server kept the reasoning apart; the generated ids give the count
        {
            "doc": doc("7", "What is 3+4?", ["7"], 0),
            "model_response": response(["The answer is \\boxed{7}."], ["3 and 4 make 7."], [list(range(12))]),
            "metric": {"extractive_match": 1.0},
        },
        # two samples, the thinking inside the text, no ids: counted with the tokenizer
        {
            "doc": doc("8", "What is 2+2?", ["4"], 0),
            "model_response": response(
                ["Two and two.</think>\n\\boxed{4}", "Still adding"], [None, None], []
            ),
            "metric": {"extractive_match": 0.5},
        },
    ]


def write(root: Path, rows: list[dict[str, Any]]) -> Path:
    from datasets import Dataset

    folder = root / "details" / MODEL / DATE
    folder.mkdir(parents=True)
    dataset = Dataset.from_list(rows)
    dataset = dataset.select_columns(sorted(dataset.column_names))  # as EvaluationTracker.save
    path = folder / f"details_community|mytask|0_{DATE}.parquet"
    dataset.to_parquet(str(path))
    results = root / "results" / MODEL
    results.mkdir(parents=True)
    general = {
        "model_name": MODEL,
        "model_config": {
            "generation_parameters": {
                "temperature": 0.6,
                "top_p": 0.95,
                "top_k": 20,
                "max_new_tokens": 64,
                "seed": 3,
            }
        },
    }
    (results / f"results_{DATE}.json").write_text(json.dumps({"config_general": general, "results": {}}))
    return path


def test_details_become_rows_with_the_results_settings(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOY)
    path = write(tmp_path / "out", details())
    with Store.open(tmp_path) as store:
        summary = import_files("lighteval", [path], store, ImportOptions("q4", judge="math", model=TOY))
        rows = {(r["item_id"], r["sample"]): r for r in store.rows("q4")}
        settings = OutputSettings.from_json(store.runs("q4")[0].settings_json)

    assert summary.task == "community|mytask|0" and set(rows) == {("7", 0), ("8", 0), ("8", 1)}
    # judged with --judge math against the choice gold_index names (the source's 0.5 is no verdict)
    first = rows[("7", 0)]
    assert (first["thinking"], first["answer"], first["completion_tokens"], first["correct"]) == (
        "3 and 4 make 7.",
        "The answer is \\boxed{7}.",
        12,
        1,
    )
    assert first["target"] == "7"
    done, cut = rows[("8", 0)], rows[("8", 1)]
    ids = tokenizer.encode(done["text"], add_special_tokens=False)
    assert (done["thinking"], done["answer"], done["finish_reason"]) == ("Two and two.", "\\boxed{4}", "stop")
    assert done["completion_tokens"] == len(ids) + 1  # and the end-of-sequence token
    assert done["correct"] == 1 and done["extracted"] == "4"
    assert (cut["finish_reason"], cut["answer"], cut["correct"]) == ("length", "", 0)  # thinking never closed
    assert (settings.temperature, settings.top_p, settings.top_k, settings.max_tokens, settings.seed) == (
        0.6,
        0.95,
        20,
        64,
        3,
    )


def test_a_parquet_without_lightevals_columns_changes_nothing(tmp_path: Path) -> None:
    rows = details()
    del rows[1]["model_response"]
    path = write(tmp_path / "out", [rows[1]])
    args = ["import", "lighteval", str(path), "--variant", "q4", "--model", TOY, "--store", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    # the parquet's row numbered as a line, from 1
    assert "line 1, field 'model_response': is missing" in result.output
    with Store.open(tmp_path) as store:
        assert store.rows("q4") == []


@pytest.mark.parametrize("name", ["lighteval|aime25|0", "aime25|0", "LIGHTEVAL|AIME25|0"])
def test_lightevals_task_names_old_and_new_are_known(name: str) -> None:
    """lighteval's details name a task `suite|task|shots` in older releases and `task|shots` now
    (src/lighteval/tasks/lighteval_task.py: `full_name = f"{self.name}|{self.num_fewshots}"`)."""
    from quantscope.tasks.registry import canonical_task

    assert canonical_task(name) == "aime25"
    assert canonical_task("community|mytask|0") is None
