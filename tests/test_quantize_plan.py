"""Recipe -> AutoRound arguments: the one place the mapping lives (no AutoRound run here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantscope.checkpoint.anatomy import Anatomy, build_anatomy
from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError
from quantscope.plan.recipe import PRESETS, Override, Recipe, assign_schemes
from quantscope.quantize.autoround import (
    KEEP_16BIT,
    export_module_names,
    plan_autoround,
    transformers_load_problem,
)


@pytest.fixture(scope="module")
def moe_anatomy(tiny_qwen35_moe_dir: Path) -> Anatomy:
    return load_anatomy(tiny_qwen35_moe_dir)


def test_kept_modules_get_exact_complete_16bit_entries(moe_anatomy: Anatomy):
    plan = plan_autoround(moe_anatomy, PRESETS["w4a16-safe"])
    assert plan.scheme == "W4A16"
    assert plan.export_format == "auto_round"
    assert not plan.quant_lm_head
    kept = {m for m, fmt in assign_schemes(moe_anatomy, PRESETS["w4a16-safe"]).items() if fmt == "bf16"}
    # lm_head stays 16-bit by AutoRound's default; an entry would switch quant_lm_head on.
    assert set(plan.layer_config) == kept - {"lm_head"}
    assert set(plan.kept) == kept
    # Every kept entry names all four keys: a bare {"bits": 16} inherits nv_fp from NVFP4 and fails.
    assert all(entry == dict(KEEP_16BIT) for entry in plan.layer_config.values())
    assert any(".linear_attn.in_proj_qkv" in name for name in plan.layer_config)
    assert any(".shared_expert.down_proj" in name for name in plan.layer_config)
    assert not any(".experts.0." in name for name in plan.layer_config)  # routed experts are quantized


def test_plain_preset_lists_only_modules_autoround_must_not_quantize(moe_anatomy: Anatomy):
    plan = plan_autoround(moe_anatomy, PRESETS["w4a16"])
    leaves = {name.rsplit(".", 1)[-1] for name in plan.layer_config}
    # in_proj_b/a have 2 rows (not a multiple of 32); routers and the shared-expert gate stay 16-bit.
    assert leaves == {"in_proj_b", "in_proj_a", "gate", "shared_expert_gate"}


def test_nvfp4_quantizes_the_tiny_projections_int4_cannot(moe_anatomy: Anatomy):
    plan = plan_autoround(moe_anatomy, PRESETS["nvfp4"])
    assert plan.scheme == "NVFP4"
    assert plan.assignment["model.layers.0.linear_attn.in_proj_b"] == "nvfp4"
    assert plan.export_format == "llm_compressor"  # vLLM's INCConfig refuses nv_fp (Format.export_routes)


def test_overrides_and_integer_variants_map_to_autoround_dicts(moe_anatomy: Anatomy):
    recipe = Recipe(
        "mixed",
        "w4a16_g32_asym",
        overrides=(Override(r"layers\.3\.self_attn\.", "w8a16"),),
        keep_patterns=(r"layers\.0\.mlp\.experts\.",),
    )
    plan = plan_autoround(moe_anatomy, recipe)
    assert plan.scheme == {"bits": 4, "group_size": 32, "sym": False, "data_type": "int", "act_bits": 16}
    q_proj = plan.layer_config["model.layers.3.self_attn.q_proj"]
    assert q_proj == {"bits": 8, "group_size": 128, "sym": True, "data_type": "int", "act_bits": 16}
    # All experts of layer 0 (one vLLM fused set) are kept, by exact per-expert names.
    expert_entries = [name for name in plan.layer_config if ".layers.0.mlp.experts." in name]
    assert len(expert_entries) == 4 * 3


def test_quantized_lm_head_switches_autoround_on(moe_anatomy: Anatomy):
    recipe = Recipe("head", "w4a16", quantize_lm_head=True)
    plan = plan_autoround(moe_anatomy, recipe)
    assert plan.quant_lm_head
    assert plan.assignment["lm_head"] == "w4a16"


def test_fused_3d_experts_are_named_per_expert():
    headers = [
        ("model.layers.0.mlp.experts.gate_up_proj", "BF16", (4, 256, 128), 4 * 256 * 128 * 2),
        ("model.layers.0.mlp.experts.down_proj", "BF16", (4, 128, 128), 4 * 128 * 128 * 2),
        ("model.layers.0.self_attn.o_proj.weight", "BF16", (128, 128), 128 * 128 * 2),
    ]
    anatomy = build_anatomy("fused", {"model_type": "qwen3_5_moe_text", "num_hidden_layers": 1}, headers)
    gate_up = anatomy.tensor("model.layers.0.mlp.experts.gate_up_proj")
    names = export_module_names(gate_up)
    assert names[:2] == ("model.layers.0.mlp.experts.0.gate_proj", "model.layers.0.mlp.experts.0.up_proj")
    assert len(names) == 8
    plan = plan_autoround(anatomy, Recipe("experts-kept", "w4a16", keep_groups=("routed_experts",)))
    assert sorted(plan.layer_config) == sorted(
        [
            f"model.layers.0.mlp.experts.{i}.{p}"
            for i in range(4)
            for p in ("gate_proj", "up_proj", "down_proj")
        ]
    )


@pytest.mark.parametrize(
    ("preset", "export_format", "hint"),
    [
        ("nvfp4", "auto_gptq", "llm_compressor or auto_round"),
        ("fp8", "auto_gptq", "use --format llm_compressor$"),
        ("w4a16", "gguf", "auto_round or llm_compressor"),
    ],
)
def test_unexportable_scheme_format_pairs_fail_before_any_work(
    moe_anatomy: Anatomy, preset: str, export_format: str, hint: str
):
    with pytest.raises(QuantscopeError, match=hint):
        plan_autoround(moe_anatomy, PRESETS[preset], export_format)


def test_a_16bit_recipe_has_nothing_to_run(moe_anatomy: Anatomy):
    with pytest.raises(QuantscopeError, match="quantizes nothing"):
        plan_autoround(moe_anatomy, PRESETS["bf16"])


def test_known_transformers_load_problems_are_reported_up_front(moe_anatomy: Anatomy, tiny_qwen3_dir: Path):
    # Compressed-tensors NVFP4 experts load right (quantscope.checkpoint.compressed_experts), so verify runs.
    assert transformers_load_problem(plan_autoround(moe_anatomy, PRESETS["nvfp4"])) is None
    dense = plan_autoround(load_anatomy(tiny_qwen3_dir), PRESETS["nvfp4"], "llm_compressor")
    assert transformers_load_problem(dense) is None
    assert "--no-verify" in (
        transformers_load_problem(plan_autoround(moe_anatomy, PRESETS["fp8-block"])) or ""
    )
