"""`quantscope import lm-eval`: lm-evaluation-harness `--log_samples` files into the store.

The files are built here as lm-eval writes them (EleutherAI/lm-evaluation-harness):
`lm_eval/evaluator.py` (`evaluate`: the per-document `example` dict, one line per document and
filter, metric values merged in), `lm_eval/loggers/evaluation_tracker.py`
(`save_results_samples`: `arguments` rewritten as `gen_args_<i>.arg_<j>`, `resps` /
`filtered_resps` through `sanitize_list`, `target` as a string, the file named
`samples_<task>_<date_id>.jsonl`; `save_results_aggregated`: `results_<date_id>.json` beside it) and
`lm_eval/evaluator.py` (`simple_evaluate`: `configs.<task>.generation_kwargs`, `config.model_args`,
plus the tracker's `chat_template_sha`). Token counts are checked against the toy's tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.ingest import ImportOptions, import_files
from quantscope.store.database import DB_NAME, Store
from quantscope.store.settings import OutputSettings
from quantscope.toy.bundled import checkpoint_dir

runner = CliRunner()
TOY = str(checkpoint_dir())
DATE = "2026-11-30T14-03-27.512904"  # datetime.now().isoformat().replace(":", "-")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantscope.cli.app import console, err_console

    monkeypatch.setattr(console, "width", 400)
    monkeypatch.setattr(err_console, "width", 400)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOY)


def _hash(text: str) -> str:  # lm_eval.utils.hash_string: sha256 hex
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def logged(
    doc_id: int,
    doc: dict[str, Any],
    prompt: str,
    target: str,
    responses: list[str],
    gen_kwargs: dict[str, Any],
    *,
    filter_name: str = "none",
    filtered: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    flat: bool = False,
) -> dict[str, Any]:
    """One line of a samples file: evaluator.py's `example` for one generate_until request with
    `repeats` = len(responses), after the tracker's rewrite. `flat` writes one level of list
    (what a version or filter that returns bare strings writes)."""
    metrics = metrics or {"exact_match": 0.0}
    line = {
        "doc_id": doc_id,
        "doc": doc,
        "target": str(target),
        "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": gen_kwargs}},
        "resps": responses if flat else [responses],
        "filtered_resps": filtered if filtered is not None else [responses[0]],
        "filter": filter_name,
        "metrics": list(metrics),
        "doc_hash": _hash(json.dumps(doc, indent=2, ensure_ascii=False)),
        "prompt_hash": _hash(prompt),
        "target_hash": _hash(str(target)),
    }
    return line | metrics


def write_run(
    directory: Path, task: str, lines: list[dict[str, Any]], results: dict[str, Any] | None
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    samples = directory / f"samples_{task}_{DATE}.jsonl"
    samples.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    if results is not None:
        (directory / f"results_{DATE}.json").write_text(json.dumps(results, indent=2))
    return samples


AIME_KWARGS = {
    "until": ["Question:", "<|im_end|>"],
    "do_sample": True,
    "temperature": 0.6,
    "max_gen_toks": 30,
}


def aime_results(task: str = "aime25") -> dict[str, Any]:
    """The results JSON's parts quantscope reads, as simple_evaluate and the tracker write them."""
    return {
        "results": {task: {"alias": task, "exact_match,none": 0.5, "exact_match_stderr,none": 0.5}},
        "configs": {
            task: {
                "task": task,
                "dataset_path": "math-ai/aime25",
                "output_type": "generate_until",
                "generation_kwargs": {**AIME_KWARGS, "top_p": 0.95, "top_k": 20},
                "repeats": 2,
            }
        },
        "config": {
            "model": "vllm",
            "model_args": "pretrained=Qwen/Qwen3.5-35B-A3B,enable_thinking=True,seed=1234",
            "batch_size": "auto",
            "gen_kwargs": None,
            "random_seed": 0,
        },
        "model_name": "Qwen/Qwen3.5-35B-A3B",
        "chat_template_sha": "5b1ac7c0" * 8,
        "date": 1796565807.0,
    }


def aime_lines() -> list[dict[str, Any]]:
    docs = [("Find 6*7.", "42"), ("Find 2+3.", "5")]
    responses = [
        ["6*7 = 42.</think>\n\nThe answer is \\boxed{42}.", "Maybe 6*7 = 43.</think>\n\n\\boxed{43}"],
        ["2+3 is 5.</think>\n\\boxed{5}", "Adding 2 and 3 step by step, 2, then 3, so far"],  # never closed
    ]
    return [
        logged(
            i,
            {"problem": p, "answer": a, "id": str(i)},
            f"Question: {p}\nAnswer:",
            a,
            responses[i],
            AIME_KWARGS,
        )
        for i, (p, a) in enumerate(docs)
    ]


def test_nested_resps_with_repeats_settings_and_rejudged(tmp_path: Path, tokenizer: Any) -> None:
    samples = write_run(tmp_path / "out" / "Qwen__Qwen3.5-35B-A3B", "aime25", aime_lines(), aime_results())
    with Store.open(tmp_path) as store:
        summary = import_files("lm-eval", [samples], store, ImportOptions("bf16", model=TOY))
        rows = {(r["item_id"], r["sample"]): r for r in store.rows("bf16")}
        settings = OutputSettings.from_json(store.runs("bf16")[0].settings_json)

    assert summary.task == "aime25" and summary.rows == summary.added == 4
    assert set(rows) == {("0", 0), ("0", 1), ("1", 0), ("1", 1)}  # doc_id, repeat
    assert [rows[k]["correct"] for k in sorted(rows)] == [1, 0, 1, 0]  # re-judged, per repeat
    assert rows[("0", 1)]["extracted"] == "43" and rows[("0", 0)]["target"] == "42"
    assert (
        rows[("0", 0)]["thinking"] == "6*7 = 42." and rows[("0", 0)]["answer"] == "The answer is \\boxed{42}."
    )
    cut = rows[("1", 1)]
    assert (cut["finish_reason"], cut["answer"]) == ("length", "")  # thinking never closed: inferred
    text = aime_lines()[1]["resps"][0][1]
    assert (
        cut["completion_tokens"]
        == cut["thinking_tokens"]
        == len(tokenizer.encode(text, add_special_tokens=False))
    )
    for key in (("0", 0), ("0", 1), ("1", 0)):
        row = rows[key]
        ids = tokenizer.encode(row["text"], add_special_tokens=False)
        finish = "length" if len(ids) >= 30 else "stop"  # the count reaching the cap: inferred cut
        assert row["finish_reason"] == finish
        assert row["completion_tokens"] == len(ids) + (finish == "stop")
        assert row["thinking_tokens"] == ids.index(tokenizer.convert_tokens_to_ids("</think>"))
    assert [rows[k]["finish_reason"] for k in sorted(rows)] == ["length", "stop", "stop", "length"]
    assert summary.inferred_finish == 4  # lm-eval records no finish reason
    assert (settings.max_tokens, settings.temperature, settings.top_p, settings.top_k) == (30, 0.6, 0.95, 20)
    assert (settings.thinking, settings.seed, settings.model) == (True, 1234, TOY)
    assert (
        settings.served["chat_template_sha"] == "5b1ac7c0" * 8
        and settings.served["imported_from"] == "lm-eval"
    )


def gpqa_lines(flat: bool) -> list[dict[str, Any]]:
    """GPQA's CoT task logs each document once per filter (_gpqa_cot_zeroshot_yaml: strict-match,
    flexible-extract); its target is the letter in parentheses (utils.process_docs)."""
    kwargs = {"until": ["</s>"], "do_sample": False, "temperature": 0.0, "max_gen_toks": 2048}
    lines = []
    for doc_id, (text, gold) in enumerate(
        [("Thinking...</think>\nThe answer is (B)", "(B)"), ("Hmm.</think>\n(C)", "(A)")]
    ):
        doc = {"Question": f"Q{doc_id}", "choices": ["alpha", "beta", "gamma", "delta"], "answer": gold}
        prompt = f"What is the correct answer to this question:Q{doc_id}"
        # strict-match needs "The answer is (X)." with a period: lm-eval scores the first 0
        for name, score in (("strict-match", 0.0), ("flexible-extract", 1.0 if gold in text else 0.0)):
            lines.append(
                logged(
                    doc_id,
                    doc,
                    prompt,
                    gold,
                    [text],
                    kwargs,
                    filter_name=name,
                    metrics={"exact_match": score},
                    flat=flat,
                )
            )
    return lines


@pytest.mark.parametrize("flat", [False, True])
def test_flat_and_nested_resps_one_item_per_document_rejudged_over_lm_evals_score(
    tmp_path: Path, flat: bool
) -> None:
    samples = write_run(tmp_path / "out", "gpqa_diamond_cot_zeroshot", gpqa_lines(flat), results=None)
    with Store.open(tmp_path) as store:
        summary = import_files("lm-eval", [samples], store, ImportOptions("int4"))
        rows = {r["item_id"]: r for r in store.rows("int4")}
        settings = OutputSettings.from_json(store.runs("int4")[0].settings_json)
    assert summary.task == "gpqa_diamond" and set(rows) == {"0", "1"}  # two filters, one item each
    assert rows["0"]["correct"] == 1 and rows["0"]["extracted"] == "B"  # strict-match scored it 0
    assert rows["1"]["correct"] == 0 and rows["1"]["target"] == "A"
    assert settings.max_tokens == 2048  # without the results JSON: the request's own max_gen_toks
    assert settings.temperature is None and summary.unknown_tokens == 2  # no results JSON, no tokenizer


def test_a_task_quantscope_does_not_know_keeps_lm_evals_score(tmp_path: Path) -> None:
    kwargs = {"until": ["Question:"], "max_gen_toks": 256}
    lines = [
        logged(0, {"q": "1+1"}, "Q: 1+1", "2", ["#### 2"], kwargs, metrics={"exact_match": 1.0}),
        logged(1, {"q": "2+2"}, "Q: 2+2", "4", ["#### 5"], kwargs, metrics={"exact_match": 0.0}),
    ]
    samples = write_run(tmp_path / "out", "gsm8k_cot", lines, results=None)
    with Store.open(tmp_path) as store:
        summary = import_files("lm-eval", [samples], store, ImportOptions("v"))
        correct = {r["item_id"]: r["correct"] for r in store.rows("v")}
    assert correct == {"0": 1, "1": 0} and summary.correct == "the source's own score"
    assert summary.task == "gsm8k_cot"


def store_state(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path / DB_NAME) as db:
        return {
            t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in ("variants", "runs", "results")
        }


def test_a_second_import_adds_nothing(tmp_path: Path) -> None:
    samples = write_run(tmp_path / "out", "aime25", aime_lines(), aime_results())
    args = ["import", "lm-eval", str(samples), "--variant", "bf16", "--store", str(tmp_path)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0 and "4 new rows stored" in first.output, first.output
    before = store_state(tmp_path)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 new rows stored" in again.output, again.output
    assert store_state(tmp_path) == before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: lines[1].pop("resps"), "line 2, field 'resps': is missing or empty"),
        (lambda lines: lines[0].pop("doc_id"), "line 1, field 'doc_id': is missing"),
        (lambda lines: lines[1]["arguments"].clear(), "line 2, field 'arguments': holds no prompt"),
    ],
)
def test_a_malformed_samples_file_names_its_line_and_field_and_changes_nothing(
    tmp_path: Path, damage: Any, message: str
) -> None:
    good = write_run(tmp_path / "good", "aime25", aime_lines(), aime_results())
    assert (
        runner.invoke(
            app, ["import", "lm-eval", str(good), "--variant", "v", "--store", str(tmp_path)]
        ).exit_code
        == 0
    )
    before = store_state(tmp_path)
    lines = aime_lines()
    damage(lines)
    bad = write_run(tmp_path / "bad", "aime25", lines, aime_results())
    result = runner.invoke(
        app, ["import", "lm-eval", str(good), str(bad), "--variant", "w", "--store", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and f"{bad}, {message}" in result.output, (
        result.output
    )
    assert store_state(tmp_path) == before


def test_bad_json_in_a_samples_file(tmp_path: Path) -> None:
    samples = write_run(tmp_path / "out", "aime25", aime_lines(), aime_results())
    samples.write_text(samples.read_text() + '{"doc_id": 2, "resps": [["x"]\n')
    result = runner.invoke(
        app, ["import", "lm-eval", str(samples), "--variant", "v", "--store", str(tmp_path)]
    )
    assert result.exit_code == 2 and f"{samples}, line 3, field '(line)': not JSON" in result.output, (
        result.output
    )
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("SELECT count(*) FROM results").fetchone() == (0,)
