"""`quantscope export --format eee / hf-eval-results` on a real store (the bundled reasoner evaluated
twice under two seeds, the first as the baseline), checked against EvalEval's own Every Eval
Ever 0.3.0 schemas (../shared/every-eval-ever-0.3.0, validated with `jsonschema`), against compare's
own numbers, and for the Hub's files against huggingface_hub's own parser."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.store.database import Store
from tests.shared_configs import in_ci

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "every-eval-ever-0.3.0"
MAX_TOKENS = 88


def _schema(name: str):
    import jsonschema

    path = SCHEMAS / name
    if not path.is_file():
        message = f"{path} is missing: EvalEval's EEE 0.3.0 schemas live in ../shared beside the checkout"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    schema = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


TASK = {"name": "synthetic", "options": {"per_level": 3, "levels": [1, 2]}}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy on two levels of the synthetic task, k = 2, sampled at Qwen3.5's thinking preset under
    a cap some level-2 answers hit: "base" (the baseline, seed 0) and "seed7" (seed 7): real
    generations, settings and prompts, some cut at the cap, and the two sides differ a little."""
    from quantscope.evaluate.runner import run_eval
    from quantscope.evaluate.spec import RunSpec
    from quantscope.toy import checkpoint_dir

    path = tmp_path_factory.mktemp("eee-store")
    for variant, seed in (("base", 0), ("seed7", 7)):
        spec = RunSpec(
            model=str(checkpoint_dir()),
            tasks=[TASK],
            preset="qwen3.5-thinking",
            k=2,
            max_tokens=MAX_TOKENS,
            seed=seed,
            engine_options={"device": "cpu", "dtype": "float32"},
            variant=variant,
            baseline=variant == "base",
        )
        with Store.open(path) as store:
            run_eval(spec, store)
    with Store.open(path) as store:
        finish = {row["finish_reason"] for row in store.rows()}
    assert finish == {"stop", "length"}, "the store should hold finished and cut generations"
    return path


@pytest.fixture(scope="module")
def exported(store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eee-out")
    result = CliRunner().invoke(
        app, ["export", "--format", "eee", "--out", str(out), "--store", str(store_dir)]
    )
    assert result.exit_code == 0, result.output
    return out


def _aggregates(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(out.glob("data/*/*/*/*.json")):
        data = json.loads(path.read_text())
        found[data["model_info"]["name"]] = data
    return found


def _compare(store_dir: Path) -> dict:
    result = CliRunner().invoke(app, ["compare", "--store", str(store_dir), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # a first signal pass notes itself on stderr


def test_every_file_validates_against_both_eee_schemas(exported: Path, store_dir: Path) -> None:
    aggregate_schema, instance_schema = (
        _schema("eval.schema.json"),
        _schema("instance_level_eval.schema.json"),
    )
    aggregates = _aggregates(exported)
    assert set(aggregates) == {"base", "seed7"}
    with Store.open(store_dir) as store:
        stored = {name: store.count(name) for name in aggregates}
    for name, data in aggregates.items():
        assert list(aggregate_schema.iter_errors(data)) == []
        detailed = data["detailed_evaluation_results"]
        samples = exported / detailed["file_path"]
        text = samples.read_text()
        assert detailed["checksum"] == hashlib.sha256(text.encode()).hexdigest()
        lines = [json.loads(line) for line in text.splitlines()]
        assert len(lines) == detailed["total_rows"] == stored[name]
        for line in lines:
            assert list(instance_schema.iter_errors(line)) == []
            assert line["evaluation_id"] == data["evaluation_id"]


def test_the_aggregate_carries_compares_numbers_and_the_runs_settings(
    exported: Path, store_dir: Path
) -> None:
    compared = _compare(store_dir)
    (comparison,) = compared["comparisons"]
    aggregates = _aggregates(exported)
    results = {r["evaluation_result_id"]: r for r in aggregates["seed7"]["evaluation_results"]}
    delta = results["synthetic/accuracy_delta"]["score_details"]
    assert delta["score"] == pytest.approx(comparison["delta"])
    interval = delta["uncertainty"]["confidence_interval"]
    assert [interval["lower"], interval["upper"]] == pytest.approx(comparison["decision"]["ci95"])
    assert f"over the {comparison['paired_items']} items" in interval["method"]
    cot = results["synthetic/cot_token_inflation_ratio"]
    assert cot["metric_config"]["metric_name"] == "CoT Token Inflation Ratio"
    assert cot["score_details"]["score"] == pytest.approx(comparison["cot_token_inflation_ratio"]["ratio"])
    bounds = cot["score_details"]["uncertainty"]["confidence_interval"]
    assert [bounds["lower"], bounds["upper"]] == pytest.approx(
        comparison["cot_token_inflation_ratio"]["ci95"]
    )
    # the baseline's file has its own scores and no comparison with itself
    base = {r["evaluation_result_id"] for r in aggregates["base"]["evaluation_results"]}
    assert "synthetic/accuracy" in base and not any("delta" in r or "inflation" in r for r in base)
    # settings: as the runs table recorded them
    with Store.open(store_dir) as store:
        (run,) = store.runs("seed7", "synthetic")
    args = results["synthetic/accuracy"]["generation_config"]["generation_args"]
    assert args == {
        "temperature": run.temperature,
        "top_p": run.top_p,
        "top_k": run.top_k,
        "max_tokens": MAX_TOKENS,
        "reasoning": True,
    }
    extra = results["synthetic/accuracy"]["generation_config"]["additional_details"]
    assert json.loads(extra["engine_options"])["dtype"] == "float32" and extra["samples_per_item"] == "2"
    assert extra["seed"] == "7" and extra["presence_penalty"] == "1.5"  # Qwen3.5's thinking preset


def test_accuracy_and_its_interval_match_the_stored_rows(exported: Path, store_dir: Path) -> None:
    """The score is avg@k recomputed here from the rows; the standard error is over items."""
    aggregates = _aggregates(exported)
    with Store.open(store_dir) as store:
        rows = store.rows("base")
    per_item: dict[str, list[int]] = {}
    for row in rows:
        per_item.setdefault(row["item_id"], []).append(row["correct"])
    scores = np.array([np.mean(v) for v in per_item.values()])
    (accuracy,) = [
        r for r in aggregates["base"]["evaluation_results"] if r["evaluation_result_id"].endswith("/accuracy")
    ]
    details = accuracy["score_details"]
    assert details["score"] == pytest.approx(scores.mean())
    uncertainty = details["uncertainty"]
    assert uncertainty["num_samples"] == len(per_item)
    assert uncertainty["standard_error"]["value"] == pytest.approx(scores.std(ddof=1) / np.sqrt(len(scores)))
    low, high = uncertainty["confidence_interval"]["lower"], uncertainty["confidence_interval"]["upper"]
    assert low <= details["score"] <= high


def test_compare_json_names_the_cot_token_inflation_ratio(store_dir: Path) -> None:
    """The ratio is variant ÷ baseline mean thinking tokens, each item's mean over its samples, over
    the items both ran, recomputed here from the rows; its CI holds it."""
    compared = _compare(store_dir)
    assert "arXiv 2606.25519" in compared["definitions"]["cot_token_inflation_ratio"]
    (comparison,) = compared["comparisons"]
    with Store.open(store_dir) as store:
        sides = [store.rows(name) for name in ("seed7", "base")]
    means = []
    for rows in sides:
        per_item: dict[str, list[int]] = {}
        for row in rows:
            per_item.setdefault(row["item_id"], []).append(row["thinking_tokens"])
        means.append(np.mean([np.mean(v) for _, v in sorted(per_item.items())]))
    cot = comparison["cot_token_inflation_ratio"]
    assert cot["ratio"] == pytest.approx(means[0] / means[1])
    assert cot["ci95"][0] <= cot["ratio"] <= cot["ci95"][1] and cot["items"] == len(per_item)


def test_instances_carry_what_a_reimport_needs(exported: Path, store_dir: Path) -> None:
    aggregates = _aggregates(exported)
    samples = exported / aggregates["seed7"]["detailed_evaluation_results"]["file_path"]
    lines = {
        (line["sample_id"], int(line["metadata"]["sample_index"])): line
        for line in map(json.loads, samples.read_text().splitlines())
    }
    with Store.open(store_dir) as store:
        rows = store.rows("seed7")
    from quantscope.evaluate.runner import load_task
    from quantscope.evaluate.spec import TaskSpec

    items = {s.id: s for s in load_task(TaskSpec(**TASK)).load()}
    assert set(lines) == {(r["item_id"], r["sample"]) for r in rows}
    for row in rows:
        line = lines[row["item_id"], row["sample"]]
        assert line["output"]["raw"] == [row["text"]]  # the whole completion, thinking included
        assert "</think>" in row["text"] or row["finish_reason"] == "length"
        assert line["output"]["reasoning_trace"] == ([row["thinking"]] if row["thinking"] else None)
        assert line["evaluation"]["is_correct"] is bool(row["correct"])
        assert line["input"]["reference"] == [row["target"]]
        # the prompt, re-read from the task with its fingerprint checked against the row's
        assert line["input"]["raw"] == items[row["item_id"]].prompt
        meta = line["metadata"]
        assert meta["finish_reason"] == row["finish_reason"]
        assert int(meta["completion_tokens"]) == row["completion_tokens"]
        assert int(meta["thinking_tokens"]) == row["thinking_tokens"]
        assert line["answer_attribution"][0]["extracted_value"] == (row["extracted"] or "")


def test_exporting_again_replaces_the_same_files(exported: Path, store_dir: Path) -> None:
    before = sorted(p.relative_to(exported) for p in exported.rglob("*") if p.is_file())
    result = CliRunner().invoke(
        app, ["export", "--format", "eee", "--out", str(exported), "--store", str(store_dir)]
    )
    assert result.exit_code == 0, result.output
    after = sorted(p.relative_to(exported) for p in exported.rglob("*") if p.is_file())
    assert after == before and len(before) == 4  # no temp file left beside them


def test_hf_eval_results_are_what_huggingface_hub_parses(store_dir: Path, tmp_path: Path) -> None:
    """A task with a hub dataset gets `.eval_results/<task>.yaml`; the synthetic task has none, so
    the store's run is relabelled as an AIME25 run (its rows unchanged) to get one."""
    import shutil

    import yaml
    from huggingface_hub import parse_eval_result_entries

    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    out = tmp_path / "repo"
    args = ["export", "--format", "hf-eval-results", "--out", str(out), "--store", str(copy)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0 and "pass --variant NAME" in " ".join(refused.output.split())
    refused = CliRunner().invoke(app, [*args, "--variant", "seed7"])
    assert refused.exit_code != 0 and "no task of 'seed7'" in " ".join(refused.output.split())
    import sqlite3

    with sqlite3.connect(copy / "quantscope.db") as db:
        for table in ("results", "runs"):
            db.execute(f"UPDATE {table} SET task = 'aime25'")
    result = CliRunner().invoke(app, [*args, "--variant", "seed7"])
    assert result.exit_code == 0, result.output
    (path,) = (out / ".eval_results").glob("*.yaml")
    assert path.name == "aime25.yaml"
    (entry,) = parse_eval_result_entries(yaml.safe_load(path.read_text()))
    compared = _compare(copy)
    (comparison,) = compared["comparisons"]
    assert (entry.dataset_id, entry.task_id) == ("math-ai/aime25", "default")
    assert entry.value == pytest.approx(100 * comparison["accuracy"], abs=0.005)
    assert "CoT Token Inflation Ratio" in entry.notes and "paired 95% CI" in entry.notes


def test_baseline_variant_and_task_choose_what_is_written(
    exported: Path, store_dir: Path, tmp_path: Path
) -> None:
    """--baseline turns the comparison round (the delta changes sign, the ratio inverts on the same
    items); --variant and --task write only that pair."""
    args = ["export", "--format", "eee", "--out", str(tmp_path), "--store", str(store_dir)]
    result = CliRunner().invoke(
        app, [*args, "--baseline", "seed7", "--variant", "base", "--task", "synthetic"]
    )
    assert result.exit_code == 0, result.output
    (only,) = _aggregates(tmp_path).values()
    assert only["model_info"]["name"] == "base"
    turned = {r["evaluation_result_id"]: r["score_details"]["score"] for r in only["evaluation_results"]}
    original = {
        r["evaluation_result_id"]: r["score_details"]["score"]
        for r in _aggregates(exported)["seed7"]["evaluation_results"]
    }
    assert turned["synthetic/accuracy_delta"] == pytest.approx(-original["synthetic/accuracy_delta"])
    ratio = "synthetic/cot_token_inflation_ratio"
    assert turned[ratio] == pytest.approx(1 / original[ratio])
