"""`quantscope inspect` / `quantscope plan` through typer's CliRunner on real tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantscope.checkpoint.load import load_anatomy
from quantscope.cli import app
from quantscope.cli.app import console
from quantscope.plan.recipe import PRESETS, load_recipe, predict_footprint
from tests.shared_configs import shared_config

runner = CliRunner()


def test_inspect_prints_groups_and_layer_kinds(tiny_qwen35_moe_dir: Path):
    result = runner.invoke(app, ["inspect", str(tiny_qwen35_moe_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for group in ("routed_experts", "shared_expert_gate", "linear_attn", "router"):
        assert group in result.output
    assert "4 layers: 3 linear_attention, 1 full_attention" in result.output
    assert "match no group" not in result.output


def test_inspect_json_matches_the_library(tiny_qwen35_dir: Path):
    result = runner.invoke(app, ["inspect", str(tiny_qwen35_dir), "--json", "--tensors"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    anatomy = load_anatomy(tiny_qwen35_dir)
    assert data["total_bytes"] == anatomy.total_bytes
    assert data["groups"]["linear_attn"]["tensors"] == len(anatomy.by_group()["linear_attn"])
    assert len(data["tensors"]) == len(anatomy.tensors)
    assert {f["name"] for f in data["fused_sets"]} == {f.name for f in anatomy.fused_sets}


def test_plan_json_with_budget_and_a_user_recipe(tiny_qwen35_moe_dir: Path, tmp_path: Path):
    recipe_file = tmp_path / "mine.yaml"
    recipe_file.write_text("name: mine\nscheme: nvfp4\nkeep_groups: [linear_attn]\n")
    anatomy = load_anatomy(tiny_qwen35_moe_dir)
    budget = predict_footprint(anatomy, PRESETS["w4a16-keep-shared"]).total_bytes

    result = runner.invoke(
        app,
        ["plan", str(tiny_qwen35_moe_dir), "--budget", str(budget), "--recipe", str(recipe_file), "--json"],
    )

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {row["recipe"]: row for row in data["recipes"]}
    assert set(rows) == {*PRESETS, "mine"}
    assert data["budget_bytes"] == budget
    assert rows["w4a16-keep-shared"]["fits"] is True and rows["w4a16-safe"]["fits"] is False
    assert rows["bf16"]["total_bytes"] == anatomy.total_bytes == data["original_bytes"]
    expected = predict_footprint(anatomy, load_recipe(recipe_file))
    assert rows["mine"]["total_bytes"] == expected.total_bytes
    assert rows["mine"]["kept_bytes_by_group"]["linear_attn"] > 0


def test_plan_on_a_gpu_counts_the_kv_cache_and_the_state():
    config = shared_config("qwen3.5-27b.config.json")
    args = ["plan", str(config), "--gpu", "H200", "--context", "32768", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {row["recipe"]: row for row in json.loads(result.output)["recipes"]}
    # 16 full-attention layers × 2 × 4 KV heads × 256 × 2 B; 48 GDN layers × 3,207,168 B of state
    assert rows["bf16"]["kv_bytes_per_token"] == 65_536
    assert rows["bf16"]["state_bytes_per_sequence"] == 48 * 3_207_168
    # the smaller the weights, the bigger the KV pool and the more 32k sequences fit at once
    assert (
        rows["w4a16"]["max_concurrency"]
        > rows["fp8"]["max_concurrency"]
        > rows["bf16"]["max_concurrency"]
        >= 1
    )
    pool = rows["w4a16"]["serving"]["kv_pool_bytes"] - rows["bf16"]["serving"]["kv_pool_bytes"]
    assert pool == rows["bf16"]["total_bytes"] - rows["w4a16"]["total_bytes"]
    assert rows["w4a16"]["serving"]["decode_tokens_per_s_upper_bound"] > 0

    on_l4 = runner.invoke(app, ["plan", str(config), "--gpu-memory", "24GB", "--json"])
    l4 = {row["recipe"]: row for row in json.loads(on_l4.output)["recipes"]}
    assert l4["bf16"]["serving"]["fits"] is False and l4["bf16"]["max_concurrency"] == 0
    assert l4["w4a16"]["serving"]["decode_tokens_per_s_upper_bound"] is None  # no bandwidth for a bare size

    fp8_kv = runner.invoke(app, ["plan", str(config), "--gpu", "H200", "--kv-dtype", "fp8", "--json"])
    fp8_rows = {row["recipe"]: row for row in json.loads(fp8_kv.output)["recipes"]}
    assert fp8_rows["w4a16"]["max_concurrency"] > rows["w4a16"]["max_concurrency"]

    table = runner.invoke(app, ["plan", str(config), "--gpu", "H200"])
    assert table.exit_code == 0 and "on H200" in table.output and "estimated" in table.output


def test_plan_table_shows_what_stays_16_bit_and_the_fit(
    tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    # The shared rich console fixed its width when it was created, so COLUMNS set now is too late.
    monkeypatch.setattr(console, "width", 200)
    result = runner.invoke(app, ["plan", str(tiny_qwen3_dir), "--budget", "1GB"])
    assert result.exit_code == 0, result.output
    assert "w4a16-safe" in result.output and "fits 1.00 GB" in result.output
    assert "lm_head" in result.output and "all (unquantized)" in result.output
    assert " no " not in result.output  # a 1 GB budget fits every variant of the tiny model


def _error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())  # the error console wraps long lines


def test_bad_inputs_exit_2_with_a_clear_message(tiny_qwen3_dir: Path, tmp_path: Path):
    assert "cannot read size 'lots'" in _error(["plan", str(tiny_qwen3_dir), "--budget", "lots"])

    recipe_file = tmp_path / "bad.yaml"
    recipe_file.write_text("name: bad\nscheme: w4a16\nkeep_patterns: [shared_expert]\n")
    assert "matches no linear module" in _error(["plan", str(tiny_qwen3_dir), "--recipe", str(recipe_file)])
    assert "no such file or directory" in _error(["inspect", str(tmp_path / "nothing-here")])
