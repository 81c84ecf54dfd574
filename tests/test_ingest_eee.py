"""`quantscope import eee`: Every Eval Ever instance-level JSONL (and its aggregate JSON) into the store.

The files are built here to EvalEval's every-eval-ever 0.3.0 schemas (`instance_level_eval.schema.json`,
`eval.schema.json`, in ../shared beside the checkout) and validated against them with `jsonschema`
before they are imported, so what is read is what the schemas allow; token counts are checked
against the toy's tokenizer.
"""

from __future__ import annotations

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
from tests.shared_configs import in_ci

runner = CliRunner()
TOY = str(checkpoint_dir())
SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "every-eval-ever-0.3.0"
EVALUATION_ID = "gpqa_diamond/Qwen/Qwen3.5-35B-A3B/1796565807"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantscope.cli.app import console, err_console

    monkeypatch.setattr(console, "width", 400)
    monkeypatch.setattr(err_console, "width", 400)


def validator(name: str) -> Any:
    import jsonschema

    path = SCHEMAS / name
    if not path.is_file():
        message = f"{path} is missing: EvalEval's EEE 0.3.0 schemas live in ../shared beside the checkout"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    schema = json.loads(path.read_text())
    return jsonschema.Draft7Validator(schema)


def instance(sample_id: str, raw: list[str], correct: bool, **extra: Any) -> dict[str, Any]:
    """One single_turn instance record, the schema's required fields and the optional ones given."""
    record = {
        "schema_version": "0.3.0",
        "evaluation_id": EVALUATION_ID,
        "model_id": "Qwen/Qwen3.5-35B-A3B",
        "evaluation_name": "gpqa_diamond",
        "sample_id": sample_id,
        "sample_hash": f"hash-{sample_id}",
        "interaction_type": "single_turn",
        "input": {"raw": f"Question {sample_id}?", "reference": ["B"], "choices": ["w", "x", "y", "z"]},
        "output": {"raw": raw},
        "answer_attribution": [
            {
                "turn_idx": 0,
                "source": "output.raw",
                "extracted_value": "B",
                "extraction_method": "regex",
                "is_terminal": True,
            }
        ],
        "evaluation": {"score": float(correct), "is_correct": correct},
    }
    for key, value in extra.items():
        if key == "reasoning_trace":
            record["output"]["reasoning_trace"] = value
        else:
            record[key] = value
    return record


def aggregate() -> dict[str, Any]:
    return {
        "schema_version": "0.3.0",
        "evaluation_id": EVALUATION_ID,
        "retrieved_timestamp": "1796565807",
        "source_metadata": {
            "source_type": "evaluation_run",
            "source_organization_name": "example",
            "evaluator_relationship": "third_party",
        },
        "model_info": {
            "name": "Qwen3.5-35B-A3B",
            "id": "Qwen/Qwen3.5-35B-A3B",
            "additional_details": {"deployment_type": "self_deployed", "model_availability": "open_weights"},
        },
        "eval_library": {"name": "inspect_ai", "version": "0.3.285"},
        "evaluation_results": [
            {
                "evaluation_name": "gpqa_diamond",
                "source_data": {
                    "dataset_name": "GPQA-Diamond",
                    "source_type": "hf_dataset",
                    "hf_repo": "Idavidrein/gpqa",
                },
                "metric_config": {"lower_is_better": False, "score_type": "binary"},
                "score_details": {"score": 0.5},
                "generation_config": {
                    "generation_args": {
                        "temperature": 0.6,
                        "top_p": 0.95,
                        "top_k": 20,
                        "max_tokens": 64,
                        "reasoning": True,
                    },
                    "additional_details": {"seed": "7", "served_chat_template_sha": "abc123"},
                },
            }
        ],
        "detailed_evaluation_results": {
            "format": "jsonl",
            "file_path": "data/gpqa_diamond/Qwen/Qwen3.5-35B-A3B/"
            "0b6f3c1e-2d4a-4b8c-9e1f-3a5b7c9d1e2f_samples.jsonl",
        },
    }


def records() -> list[dict[str, Any]]:
    return [
        # reasoning kept apart, the server's counts and finish reason
        instance(
            "q1",
            ["The answer is (B)."],
            True,
            reasoning_trace=["Option B fits."],
            token_usage={"input_tokens": 30, "output_tokens": 25, "total_tokens": 55, "reasoning_tokens": 9},
            metadata={"finish_reason": "stop"},
            performance={"latency_ms": 1500.0},
        ),
        # the whole completion (thinking included) and its thinking alone, as quantscope's export
        # writes them, with the counts and sample index in metadata; the source says correct, the
        # answer names C
        instance(
            "q2",
            ["Maybe C.</think>\n\nThe answer is (C)."],
            True,
            reasoning_trace=["Maybe C."],
            metadata={
                "sample_index": "1",
                "seed": "8",
                "finish_reason": "stop",
                "completion_tokens": "31",
                "thinking_tokens": "8",
            },
        ),
        # two responses in one record, no counts, no finish reason: counted, inferred
        instance("q3", ["Hmm.</think>\nThe answer is (B).", "Still thinking about it"], True),
    ]


def write(directory: Path, lines: list[dict[str, Any]], with_aggregate: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    samples = directory / "0b7e3f43-9a30-4b7e-8a1c-4f0f6b8c2d11_samples.jsonl"
    samples.write_text("".join(json.dumps(line) + "\n" for line in lines))
    if with_aggregate:
        (directory / "0b7e3f43-9a30-4b7e-8a1c-4f0f6b8c2d11.json").write_text(
            json.dumps(aggregate(), indent=2)
        )
    return samples


def test_the_built_files_are_valid_eee() -> None:
    instances, evaluation = validator("instance_level_eval.schema.json"), validator("eval.schema.json")
    for record in records():
        instances.validate(record)
    evaluation.validate(aggregate())


def test_instances_become_rows_with_settings_from_the_aggregate(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOY)
    samples = write(tmp_path / "data", records())
    with Store.open(tmp_path) as store:
        summary = import_files("eee", [samples], store, ImportOptions("fp8", model=TOY))
        rows = {(r["item_id"], r["sample"]): r for r in store.rows("fp8")}
        settings = OutputSettings.from_json(store.runs("fp8")[0].settings_json)

    assert summary.task == "gpqa_diamond" and set(rows) == {("q1", 0), ("q2", 1), ("q3", 0), ("q3", 1)}
    q1, q2 = rows[("q1", 0)], rows[("q2", 1)]
    assert (q1["thinking"], q1["answer"], q1["text"]) == (
        "Option B fits.",
        "The answer is (B).",
        "Option B fits.</think>The answer is (B).",
    )
    assert (q1["completion_tokens"], q1["thinking_tokens"], q1["finish_reason"], q1["seconds"]) == (
        25,
        9,
        "stop",
        1.5,
    )
    assert (q2["thinking"], q2["answer"], q2["completion_tokens"], q2["thinking_tokens"], q2["seed"]) == (
        "Maybe C.",
        "The answer is (C).",
        31,
        8,
        8,
    )
    assert q2["correct"] == 0 and q2["extracted"] == "C"  # re-judged: the record said correct
    assert q1["prompt_sha"] == "hash-q1"  # EEE's sample hash: two EEE files pair by it
    done, cut = rows[("q3", 0)], rows[("q3", 1)]
    ids = tokenizer.encode(done["text"], add_special_tokens=False)
    assert (done["finish_reason"], done["completion_tokens"], done["correct"]) == ("stop", len(ids) + 1, 1)
    assert done["thinking_tokens"] == ids.index(tokenizer.convert_tokens_to_ids("</think>"))
    assert (cut["finish_reason"], cut["answer"], cut["correct"]) == (
        "length",
        "",
        0,
    )  # never closed: inferred
    assert summary.inferred_finish == 2
    assert (settings.temperature, settings.top_p, settings.top_k, settings.max_tokens, settings.thinking) == (
        0.6,
        0.95,
        20,
        64,
        True,
    )
    assert (settings.seed, settings.served["chat_template_sha"]) == (7, "abc123")


def store_state(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path / DB_NAME) as db:
        return {
            t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in ("variants", "runs", "results")
        }


def test_a_second_import_adds_nothing_and_a_malformed_record_changes_nothing(tmp_path: Path) -> None:
    samples = write(tmp_path / "data", records())
    args = ["import", "eee", str(samples), "--variant", "fp8", "--store", str(tmp_path)]
    assert "4 new rows stored" in runner.invoke(app, args).output
    before = store_state(tmp_path)
    assert "0 new rows stored" in runner.invoke(app, args).output
    assert store_state(tmp_path) == before

    broken = records()
    del broken[2]["output"]
    bad = write(tmp_path / "bad", broken, with_aggregate=False)
    result = runner.invoke(app, ["import", "eee", str(bad), "--variant", "other", "--store", str(tmp_path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"{bad}, line 3, field 'output.raw': is missing" in result.output
    assert store_state(tmp_path) == before


def test_a_quantscope_run_exported_as_eee_and_imported_back_is_itself(tmp_path: Path) -> None:
    """Issue 32's round trip: the toy evaluated for real (as tests/test_export_eee.py does), exported
    by `quantscope export --format eee`, imported as another variant: compare calls it equivalent
    to the original with a zero delta and no setting mismatch, and every row comes back the same."""
    from quantscope.evaluate.runner import run_eval
    from quantscope.evaluate.spec import RunSpec

    spec = RunSpec(
        model=TOY,
        tasks=[{"name": "synthetic", "options": {"per_level": 3, "levels": [1, 2]}}],
        preset="qwen3.5-thinking",
        k=2,
        max_tokens=88,
        seed=0,
        engine_options={"device": "cpu", "dtype": "float32"},
        variant="base",
        baseline=True,
    )
    with Store.open(tmp_path) as store:
        run_eval(spec, store)
        assert {row["finish_reason"] for row in store.rows()} == {"stop", "length"}  # both kinds
    out = tmp_path / "eee"
    exported = runner.invoke(app, ["export", "--format", "eee", "--out", str(out), "--store", str(tmp_path)])
    assert exported.exit_code == 0, exported.output
    (samples,) = out.glob("data/*/*/*/*_samples.jsonl")
    args = ["import", "eee", str(samples), "--variant", "back", "--model", TOY, "--store", str(tmp_path)]
    imported = runner.invoke(app, args)
    assert imported.exit_code == 0, imported.output

    # six items cannot rule out compare's default 2-point margin however well they agree (its
    # decision says so: equivalence at 2 points needs >= 149 items); at 50 points they can
    margin = ["--margin", "50"]
    compared = runner.invoke(app, ["compare", "--store", str(tmp_path), "--json", *margin])
    assert compared.exit_code == 0, compared.output
    (comparison,) = json.loads(compared.stdout)["comparisons"]
    assert (comparison["variant"], comparison["paired_items"], comparison["delta"]) == ("back", 6, 0.0)
    assert comparison["mismatches"] == [] and comparison["unknown_settings"] == []
    assert comparison["cot_token_inflation_ratio"]["ratio"] == 1.0
    assert comparison["verdict"] == "equivalent"

    def rows(variant: str) -> dict[tuple[str, int], dict[str, Any]]:
        # what names the run, not the generation: the engine reads "import:eee" on the imported side
        skip = {"variant", "spec_hash", "created", "id", "run_id", "engine", "is_baseline"}
        with Store.open(tmp_path) as store:
            found = store.rows(variant)
        return {(r["item_id"], r["sample"]): {k: v for k, v in r.items() if k not in skip} for r in found}

    original, back = rows("base"), rows("back")
    assert original == back
