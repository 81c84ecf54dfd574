"""Edge cases of stored-format recognition and recipe derivation, on header-only anatomies."""

from __future__ import annotations

import pytest

from quantscope.checkpoint.anatomy import build_anatomy
from quantscope.checkpoint.contents import read_contents
from quantscope.errors import QuantscopeError
from quantscope.plan.derive import derive_recipe
from quantscope.plan.recipe import KEPT, assign_schemes

HIDDEN = 256
TEXT = {"hidden_size": HIDDEN, "num_hidden_layers": 2, "model_type": "qwen3_5_moe_text"}


def _gptq(module: str, out: int, inputs: int, group: int = 128) -> list[tuple]:
    groups = inputs // group
    return [
        (f"{module}.qweight", "I32", (inputs // 8, out), inputs // 8 * out * 4),
        (f"{module}.qzeros", "I32", (groups, out // 8), groups * out // 8 * 4),
        (f"{module}.scales", "F16", (groups, out), groups * out * 2),
    ]


def _bf16(name: str, *shape: int) -> tuple:
    numel = 1
    for dim in shape:
        numel *= dim
    return (name, "BF16", shape, numel * 2)


def _attention(layer: int, quantized: set[str]) -> list[tuple]:
    entries = []
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        module = f"model.layers.{layer}.self_attn.{proj}"
        entries += (
            _gptq(module, HIDDEN, HIDDEN)
            if proj in quantized
            else [_bf16(f"{module}.weight", HIDDEN, HIDDEN)]
        )
    return entries


GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True}


def test_fused_3d_experts_are_stored_weights_not_ignored():
    headers = [
        *_attention(0, {"q_proj", "k_proj", "v_proj", "o_proj"}),
        _bf16("model.layers.0.mlp.experts.gate_up_proj", 4, 2 * 128, HIDDEN),
        _bf16("model.layers.0.mlp.experts.down_proj", 4, HIDDEN, 128),
    ]
    anatomy = build_anatomy("fused", {**TEXT, "quantization_config": GPTQ}, headers)
    contents = read_contents(anatomy)
    experts = contents.weights["model.layers.0.mlp.experts.gate_up_proj"]
    assert experts.format == "BF16" and experts.shape == (4, 256, HIDDEN)
    derived = derive_recipe(anatomy)
    assert derived.reproduces
    assert assign_schemes(derived.logical, derived.recipe)["model.layers.0.mlp.experts.down_proj"] == KEPT


def test_compressed_tensors_name_and_regex_targets_beat_the_class_target():
    module = "model.layers.0.mlp.down_proj"
    headers = [
        (f"{module}.weight_packed", "I32", (HIDDEN, HIDDEN // 4), HIDDEN * HIDDEN // 4 * 4),
        (f"{module}.weight_scale", "BF16", (HIDDEN, 2), HIDDEN * 2 * 2),
        (f"{module}.weight_shape", "I64", (2,), 16),
    ]
    quant = {
        "quant_method": "compressed-tensors",
        "config_groups": {
            "group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "group_size": 128}},
            "group_1": {"targets": ["re:.*down_proj$"], "weights": {"num_bits": 8, "group_size": 128}},
        },
    }
    weight = read_contents(build_anatomy("ct", {**TEXT, "quantization_config": quant}, headers)).weights[
        module
    ]
    assert (weight.format, weight.shape) == ("INT8 g128", (HIDDEN, HIDDEN))


def test_a_fused_set_stored_split_is_reported_not_a_crash():
    headers = _attention(0, {"q_proj", "o_proj"}) + _attention(1, {"q_proj", "k_proj", "v_proj", "o_proj"})
    derived = derive_recipe(build_anatomy("split", {**TEXT, "quantization_config": GPTQ}, headers))
    assert not derived.reproduces
    assert set(derived.mismatched) == {"model.layers.0.self_attn.q_proj"}


def test_a_quantized_embedding_is_unrepresentable_not_a_key_error():
    headers = _attention(0, {"o_proj"}) + _gptq("model.embed_tokens", HIDDEN, 512)
    derived = derive_recipe(build_anatomy("embed", {**TEXT, "quantization_config": GPTQ}, headers))
    assert "model.embed_tokens" in derived.unrepresentable and derived.reproduces


def test_nothing_a_recipe_can_reproduce_is_one_clear_error():
    headers = _gptq("model.layers.0.mlp.down_proj", 16, HIDDEN)  # 16 rows: AutoRound keeps it 16-bit
    with pytest.raises(QuantscopeError, match="no quantscope recipe can reproduce"):
        derive_recipe(build_anatomy("tiny", {**TEXT, "quantization_config": GPTQ}, headers))


def test_rules_for_decoder_layers_do_not_reach_mtp_layers():
    headers = _attention(0, {"q_proj", "k_proj", "v_proj"}) + _attention(1, {"q_proj", "k_proj", "v_proj"})
    headers += [
        _bf16(f"mtp.layers.0.self_attn.{p}.weight", HIDDEN, HIDDEN) for p in ("q_proj", "k_proj", "v_proj")
    ]
    derived = derive_recipe(build_anatomy("mtp", {**TEXT, "quantization_config": GPTQ}, headers))
    assert derived.reproduces, derived.mismatched
    assert assign_schemes(derived.logical, derived.recipe)["mtp.layers.0.self_attn.q_proj"] == KEPT


def test_modelopt_fp4_experts_keep_their_expert_dimension():
    module = "model.layers.0.mlp.experts.gate_up_proj"
    anatomy = build_anatomy(
        "mo",
        TEXT,
        [
            (f"{module}.weight", "U8", (4, 256, HIDDEN // 2), 4 * 256 * HIDDEN // 2),
            (f"{module}.weight_scale", "F8_E4M3", (4, 256, HIDDEN // 16), 4 * 256 * HIDDEN // 16),
            (f"{module}.weight_scale_2", "F32", (), 4),
        ],
    )
    weight = read_contents(anatomy).weights[module]
    assert weight.shape == (4, 256, HIDDEN) and weight.params == 4 * 256 * HIDDEN
