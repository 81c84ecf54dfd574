"""Recipes: presets, YAML round trip, validation, scheme assignment and footprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantscope.checkpoint.anatomy import GROUPS
from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError
from quantscope.formats import get_format, stored_bytes
from quantscope.plan.recipe import (
    KEPT,
    PRESETS,
    Override,
    Recipe,
    assign_schemes,
    load_recipe,
    predict_footprint,
    save_recipe,
)
from quantscope.util import format_size, parse_size
from tests.header_only import write_header_only_shard

CONTRACT_PRESETS = {
    "bf16",
    "fp8",
    "w4a16",
    "w4a16-keep-shared",
    "w4a16-keep-linear-attn",
    "w4a16-safe",
    "nvfp4",
    "nvfp4-keep-shared",
    "nvfp4-keep-linear-attn",
    "nvfp4-safe",
    "nvfp4a16",
    "mxfp4",
}


def test_presets_cover_the_contract_and_round_trip_through_yaml(tmp_path: Path):
    assert set(PRESETS) >= CONTRACT_PRESETS
    assert set(PRESETS["w4a16-safe"].keep_groups) == {
        "shared_expert",
        "linear_attn",
        "router",
        "mtp",
        "vision",
    }
    for name, recipe in PRESETS.items():
        assert load_recipe(name) is recipe
        assert load_recipe(Path(name)) is recipe  # `plan --recipe` types its option as a path
        path = tmp_path / f"{name}.yaml"
        save_recipe(recipe, path)
        assert load_recipe(path) == recipe
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no leftovers


def test_custom_recipe_round_trips_with_overrides(tmp_path: Path):
    recipe = Recipe(
        "mine",
        "nvfp4",
        keep_groups=("linear_attn",),
        keep_patterns=(r"layers\.0\.",),
        overrides=(Override(r"mlp\.down_proj", "w8a16"),),
        quantize_lm_head=True,
        description="test",
    )
    save_recipe(recipe, tmp_path / "r.yaml")
    assert load_recipe(tmp_path / "r.yaml") == recipe
    assert load_recipe(str(tmp_path / "r.yaml")) == recipe


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nscheme: w4a16\nkeep: [router]\n", r"unknown keys \['keep'\]"),
        ("name: x\nscheme: int3\n", "unknown scheme 'int3'"),
        ("name: x\nscheme: w4a16\nkeep_groups: [attention]\n", "unknown keep_groups"),
        ("name: x\nscheme: w4a16\nkeep_patterns: ['(']\n", "not a valid regex"),
        ("name: x\nscheme: w4a16\noverrides: [{pattern: a}]\n", "exactly 'pattern' and 'scheme'"),
        ("name: x\nscheme: w4a16\nquantize_lm_head: maybe\n", "true or false"),
        ("scheme: w4a16\n", "'name' is required"),
        ("- just a list\n", "a recipe is a mapping"),
        ("name: [unclosed\n", "cannot read YAML"),
    ],
)
def test_bad_recipe_files_name_the_file_and_field(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(QuantscopeError, match=message) as error:
        load_recipe(path)
    assert str(path) in str(error.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(QuantscopeError, match="w4a16-safe"):
        load_recipe("w4a16-super-safe")


def test_qwen35_moe_assignment(tiny_qwen35_moe_dir: Path):
    anatomy = load_anatomy(tiny_qwen35_moe_dir)
    w4 = assign_schemes(anatomy, PRESETS["w4a16"])
    assert set(w4) == set(anatomy.linear_weights)
    assert w4["model.layers.0.linear_attn.in_proj_qkv"] == "w4a16"
    assert w4["model.layers.0.linear_attn.in_proj_b"] == KEPT  # 2 rows: not a multiple of 32
    assert w4["model.layers.0.mlp.experts.3.down_proj"] == "w4a16"
    assert w4["model.layers.0.mlp.gate"] == w4["model.layers.0.mlp.shared_expert_gate"] == KEPT
    assert w4["lm_head"] == KEPT

    nv = assign_schemes(anatomy, PRESETS["nvfp4"])
    assert nv["model.layers.0.linear_attn.in_proj_b"] == "nvfp4"  # FP4 only needs in % 16
    assert nv["model.layers.0.mlp.gate"] == KEPT  # vLLM builds the router unquantized

    safe = assign_schemes(anatomy, PRESETS["w4a16-safe"])
    assert safe["model.layers.0.mlp.shared_expert.up_proj"] == KEPT
    assert safe["model.layers.0.linear_attn.out_proj"] == KEPT
    assert safe["model.layers.0.mlp.experts.0.gate_proj"] == "w4a16"
    full = next(t.layer for t in anatomy.tensors if t.group == "full_attn")
    assert safe[f"model.layers.{full}.self_attn.o_proj"] == "w4a16"


def test_recipe_that_splits_a_fused_set_is_rejected_by_name(tiny_qwen3_dir: Path, tiny_qwen35_moe_dir: Path):
    qwen3 = load_anatomy(tiny_qwen3_dir)
    with pytest.raises(QuantscopeError, match=r"fused set model\.layers\.0\.self_attn\.qkv_proj"):
        assign_schemes(qwen3, Recipe("x", "w4a16", keep_patterns=(r"self_attn\.k_proj",)))
    with pytest.raises(QuantscopeError, match=r"fused set model\.layers\.1\.mlp\.gate_up_proj"):
        assign_schemes(
            qwen3, Recipe("x", "w4a16", overrides=(Override(r"layers\.1\.mlp\.up_proj", "w8a16"),))
        )
    moe = load_anatomy(tiny_qwen35_moe_dir)
    with pytest.raises(QuantscopeError, match=r"fused set model\.layers\.2\.mlp\.experts "):
        assign_schemes(moe, Recipe("x", "nvfp4", keep_patterns=(r"layers\.2\.mlp\.experts\.0\.",)))
    with pytest.raises(QuantscopeError, match=r"in_proj_ba"):
        assign_schemes(moe, Recipe("x", "nvfp4", keep_patterns=(r"in_proj_a",)))
    # Keeping or overriding a whole set is fine.
    schemes = assign_schemes(
        qwen3, Recipe("x", "w4a16", overrides=(Override(r"self_attn\.[qkv]_proj", "w8a16"),))
    )
    assert {schemes[f"model.layers.0.self_attn.{p}_proj"] for p in "qkv"} == {"w8a16"}
    assert schemes["model.layers.0.self_attn.o_proj"] == "w4a16"


def test_pattern_matching_nothing_is_an_error(tiny_qwen3_dir: Path):
    anatomy = load_anatomy(tiny_qwen3_dir)
    with pytest.raises(QuantscopeError, match=r"'shared_expert' matches no linear module"):
        assign_schemes(anatomy, Recipe("x", "w4a16", keep_patterns=("shared_expert",)))
    # A kept *group* that this model lacks is not an error: presets apply to dense and MoE alike.
    assert assign_schemes(anatomy, PRESETS["w4a16-keep-shared"]) == assign_schemes(anatomy, PRESETS["w4a16"])


def test_precedence_keep_patterns_over_groups_and_overrides_last(tiny_qwen35_dir: Path):
    anatomy = load_anatomy(tiny_qwen35_dir)
    recipe = Recipe(
        "x",
        "nvfp4",
        keep_groups=("linear_attn",),
        keep_patterns=(r"mlp\.down_proj",),
        overrides=(
            Override(r"layers\.0\.linear_attn\.out_proj", "fp8"),
            Override(r"layers\.1\.mlp\.down", "w4a16"),
        ),
    )
    schemes = assign_schemes(anatomy, recipe)
    assert schemes["model.layers.0.linear_attn.out_proj"] == "fp8"
    assert schemes["model.layers.1.linear_attn.out_proj"] == KEPT
    assert schemes["model.layers.0.mlp.down_proj"] == KEPT
    assert schemes["model.layers.1.mlp.down_proj"] == "w4a16"
    assert schemes["model.layers.1.mlp.up_proj"] == "nvfp4"


def test_footprint_arithmetic_on_a_real_checkpoint(tiny_qwen3_dir: Path):
    anatomy = load_anatomy(tiny_qwen3_dir)
    assert predict_footprint(anatomy, PRESETS["bf16"]).total_bytes == anatomy.total_bytes

    footprint = predict_footprint(anatomy, PRESETS["w4a16"])
    w4 = get_format("w4a16")
    expected = sum(
        stored_bytes(t.shape, w4) if t.is_linear_weight and t.group != "lm_head" else t.nbytes
        for t in anatomy.tensors
    )
    assert footprint.total_bytes == expected == sum(footprint.bytes_by_group.values())
    assert footprint.kept_bytes_by_group["lm_head"] == 256 * 128 * 2 == footprint.kept_bytes
    assert footprint.modules_by_scheme == {"w4a16": 14, KEPT: 1}
    assert sum(footprint.params_by_group.values()) == anatomy.total_params
    assert 0.3 < footprint.ratio < 0.5
    assert footprint.fits(footprint.total_bytes) and not footprint.fits(footprint.total_bytes - 1)

    with_head = predict_footprint(anatomy, Recipe("x", "w4a16", quantize_lm_head=True))
    assert with_head.kept_bytes == 0
    assert with_head.bytes_by_group["lm_head"] == stored_bytes((256, 128), w4)


def test_safe_presets_cost_memory_on_moe(tiny_qwen35_moe_dir: Path):
    anatomy = load_anatomy(tiny_qwen35_moe_dir)
    size = {name: predict_footprint(anatomy, recipe).total_bytes for name, recipe in PRESETS.items()}
    assert size["w4a16"] < size["w4a16-keep-shared"] < size["w4a16-safe"] < size["bf16"]
    assert size["w4a16-keep-linear-attn"] < size["w4a16-safe"]
    safe = predict_footprint(anatomy, PRESETS["w4a16-safe"])
    assert safe.kept_bytes_by_group["shared_expert"] == safe.bytes_by_group["shared_expert"]
    assert safe.kept_bytes_by_group["routed_experts"] == 0


def _headers_checkpoint(path: Path, entries, config) -> Path:
    path.mkdir()
    write_header_only_shard(path / "model.safetensors", entries)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_tied_lm_head_is_never_quantized_and_mtp_follows_autoround(tmp_path: Path):
    entries = [
        ("lm_head.weight", (256, 128)),
        ("model.embed_tokens.weight", (256, 128)),
        ("model.layers.0.mlp.gate_proj.weight", (256, 128)),
        ("model.layers.0.mlp.up_proj.weight", (256, 128)),
        ("model.layers.0.mlp.down_proj.weight", (128, 256)),
        ("mtp.fc.weight", (128, 256)),
        ("mtp.layers.0.mlp.down_proj.weight", (128, 256)),
    ]
    config = {"model_type": "qwen3_5_text", "num_hidden_layers": 1, "tie_word_embeddings": True}
    anatomy = load_anatomy(_headers_checkpoint(tmp_path / "tied", entries, config))
    assert assign_schemes(anatomy, Recipe("x", "w4a16", quantize_lm_head=True))["lm_head"] == KEPT

    w4 = assign_schemes(anatomy, PRESETS["w4a16"])
    # AutoRound RTN-quantizes the MTP blocks it copies only for integer formats, never mtp.fc.
    assert w4["mtp.layers.0.mlp.down_proj"] == "w4a16" and w4["mtp.fc"] == KEPT
    assert assign_schemes(anatomy, PRESETS["nvfp4"])["mtp.layers.0.mlp.down_proj"] == KEPT
    assert assign_schemes(anatomy, PRESETS["w4a16-safe"])["mtp.layers.0.mlp.down_proj"] == KEPT


def test_already_packed_checkpoint_cannot_be_planned(tmp_path: Path):
    entries = [
        ("model.layers.0.mlp.down_proj.qweight", (32, 128)),
        ("model.layers.0.mlp.down_proj.scales", (2, 128)),
    ]
    anatomy = load_anatomy(_headers_checkpoint(tmp_path / "q", entries, {"model_type": "qwen3"}))
    assert anatomy.is_quantized
    with pytest.raises(QuantscopeError, match="unquantized"):
        predict_footprint(anatomy, PRESETS["w4a16"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GB", 24 * 10**9),
        ("24 GiB", 24 * 2**30),
        ("24e9", 24 * 10**9),
        ("1.5gb", 1_500_000_000),
        ("512MiB", 512 * 2**20),
        ("80G", 80 * 10**9),
        ("1000", 1000),
        (42, 42),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "24 parsecs", "-3GB", "1e"])
def test_parse_size_rejects_garbage(text):
    with pytest.raises(QuantscopeError, match="cannot read size"):
        parse_size(text)


def test_format_size():
    assert format_size(30_300_000_000) == "30.30 GB"
    assert format_size(999) == "999 B"


def test_groups_are_the_contract():
    assert GROUPS[0] == "embed" and GROUPS[-1] == "other" and len(GROUPS) == 13


def test_fp8_source_checkpoint_plans_from_logical_shapes(tmp_path: Path):
    # Official FP8 checkpoints store F8_E4M3 weights plus block scales (`weight_scale_inv`).
    directory = tmp_path / "fp8"
    directory.mkdir()
    entries = [
        ("model.layers.0.mlp.down_proj.weight", (128, 256)),
        ("model.layers.0.mlp.down_proj.weight_scale_inv", (1, 2)),
    ]
    write_header_only_shard(directory / "model.safetensors", entries[:1], dtype="F8_E4M3", itemsize=1)
    write_header_only_shard(directory / "scales.safetensors", entries[1:], dtype="F32", itemsize=4)
    (directory / "config.json").write_text(json.dumps({"model_type": "qwen3", "num_hidden_layers": 1}))
    anatomy = load_anatomy(directory)
    assert anatomy.total_bytes == 128 * 256 + 2 * 4
    # Unquantized means dequantized to 16-bit; the source's scales are not carried over.
    assert predict_footprint(anatomy, PRESETS["bf16"]).total_bytes == 128 * 256 * 2
    w4 = predict_footprint(anatomy, PRESETS["w4a16"]).total_bytes
    assert w4 == stored_bytes((128, 256), get_format("w4a16"))


def test_frozen_heap_freezes_for_its_duration_and_keeps_a_callers_freeze() -> None:
    """The counts are the interpreter's own (gc.get_freeze_count)."""
    import gc

    from quantscope.util import frozen_heap

    assert gc.get_freeze_count() == 0
    with frozen_heap():
        inside = gc.get_freeze_count()
        assert inside > 0
        with frozen_heap():
            assert gc.get_freeze_count() >= inside
        assert gc.get_freeze_count() >= inside  # the enclosing freeze is kept
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0  # frozen before, frozen after
    finally:
        gc.unfreeze()
