"""Formats: exported tensor layouts and shape rules, checked against what AutoRound 0.16 writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError
from quantscope.formats import (
    bits_per_weight,
    can_quantize,
    exported_tensors,
    get_format,
    stored_bytes,
)
from quantscope.plan.recipe import KEPT, Recipe, assign_schemes, load_recipe, predict_footprint
from quantscope.quantize.autoround import KEEP_16BIT, autoround_scheme
from quantscope.util import frozen_heap


def _layout(shape: tuple[int, ...], name: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {t.suffix: (t.dtype, t.shape) for t in exported_tensors(shape, get_format(name))}


def test_w4a16_is_auto_gptq_packing_with_zero_points_and_ceil_groups():
    # in=160 is not a multiple of the group: AutoRound would pad to ceil(160/128) = 2 groups, but
    # no loader reads a padded group, so quantscope keeps such a layer 16-bit and counts it so.
    assert _layout((128, 160), "w4a16") == {
        "qweight": ("I32", (20, 128)),
        "qzeros": ("I32", (2, 16)),
        "scales": ("F16", (2, 128)),
    }
    assert stored_bytes((128, 160), get_format("w4a16")) == 128 * 160 * 2
    assert stored_bytes((128, 256), get_format("w4a16")) == 32 * 128 * 4 + 2 * 16 * 4 + 2 * 128 * 2
    assert _layout((64, 256), "w4a16_g32_asym")["scales"] == ("F16", (8, 64))
    assert _layout((64, 256), "w8a16")["qweight"] == ("I32", (64, 64))


def test_fp4_and_fp8_layouts():
    assert _layout((64, 128), "nvfp4") == {
        "weight_packed": ("U8", (64, 64)),
        "weight_scale": ("F8_E4M3", (64, 8)),
        "weight_global_scale": ("F32", (1,)),
        "input_global_scale": ("F32", (1,)),
    }
    assert _layout((64, 128), "mxfp4") == {"weight_packed": ("U8", (64, 64)), "weight_scale": ("U8", (64, 4))}
    assert _layout((300, 200), "fp8_block")["weight_scale_inv"] == ("BF16", (3, 2))
    assert _layout((300, 200), "fp8") == {
        "weight": ("F8_E4M3", (300, 200)),
        "weight_scale": ("BF16", (300, 1)),
        "input_scale": ("BF16", (1,)),
    }


@pytest.mark.parametrize(
    ("shape", "name", "expected"),
    [
        ((2, 128), "w4a16", False),  # in_proj_b/a: 2 rows, not a multiple of 32
        ((128, 96), "w4a16", True),  # shorter than a group: one group per row
        ((192, 576), "w4a16", False),  # SmolLM2's q/k/v: 4.5 groups of 128 load as random weights
        ((192, 576), "w4a16_g64", True),  # 9 whole groups of 64
        ((128, 80), "w4a16", False),
        ((2, 128), "nvfp4", True),  # FP4 only needs in % group
        ((128, 24), "nvfp4", False),
        ((128, 48), "mxfp4", False),
        ((7, 9), "fp8", True),
        ((7, 9), "bf16", True),
        ((4, 64, 128), "w4a16", True),  # fused experts: the per-expert matrix decides
        ((4, 48, 128), "w4a16", False),
    ],
)
def test_can_quantize_follows_autoround_shape_rules(shape, name, expected):
    assert can_quantize(shape, get_format(name)) is expected


def test_unquantizable_and_3d_weights():
    w4 = get_format("w4a16")
    assert stored_bytes((2, 128), w4) == 2 * 128 * 2  # stays BF16
    assert stored_bytes((8, 256, 128), w4) == 8 * stored_bytes((256, 128), w4)
    assert 4.0 < bits_per_weight((4096, 4096), w4) < 4.3
    assert 4.5 <= bits_per_weight((4096, 4096), get_format("nvfp4")) < 4.6
    assert bits_per_weight((4096, 4096), get_format("mxfp4")) == 4.25


def test_get_format_names_and_errors():
    assert get_format("W4A16").name == "w4a16"
    fmt = get_format("w4a16-g32-asym")
    assert (fmt.name, fmt.group_size, fmt.sym, fmt.autoround_scheme) == ("w4a16_g32_asym", 32, False, "W4A16")
    assert get_format("nvfp4").export_format == "llm_compressor"
    with pytest.raises(QuantscopeError, match="unknown scheme 'int3'"):
        get_format("int3")
    with pytest.raises(QuantscopeError, match="group size"):
        get_format("w4a16_g48")
    with pytest.raises(QuantscopeError, match="2 or 3 dims"):
        stored_bytes((4,), get_format("w4a16"))


# ---------------------------------------------------------------------------------------------
# Prediction vs a real AutoRound export
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3 whose shapes exercise AutoRound's rules: k/v have 48 rows (int formats keep
    them 16-bit, and with them the whole q/k/v fused set) and down_proj has 160 inputs (1.25 int
    groups of 128: AutoRound would pad, loaders cannot read it, so int formats keep it 16-bit)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tests.tiny_models import save_char_tokenizer

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=48,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    path = tmp_path_factory.mktemp("odd_qwen3")
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    save_char_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def tiny_qwen3_moe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3-MoE (4 experts, router): the MoE architecture AutoRound 0.16 exports on CPU."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from tests.tiny_models import save_char_tokenizer

    torch.manual_seed(0)
    config = Qwen3MoeConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=256,
        moe_intermediate_size=64,
        num_experts=4,
        num_experts_per_tok=2,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    path = tmp_path_factory.mktemp("qwen3_moe")
    Qwen3MoeForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    save_char_tokenizer(path)
    return path


def _autoround_export(
    source: Path, out: Path, scheme: str | dict, export_format: str, layer_config: dict, kept: list[str]
) -> Path:
    """AutoRound's own RTN export, plus quantscope's one fix-up: on CPUs without native bf16
    AutoRound saves its unquantized layers and FP8 scales as float32, and `restore_source_dtypes`
    (what `quantscope quantize` runs) stores them as AutoRound's bf16 path does; a no-op elsewhere."""
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantscope.quantize.autoround import restore_source_dtypes

    model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    source_dtypes = {name: tensor.dtype for name, tensor in model.state_dict().items()}
    model_dtype = model.dtype
    tokenizer = AutoTokenizer.from_pretrained(source)
    with frozen_heap():  # AutoRound's per-block gc.collect() walks only what it creates
        rounder = AutoRound(
            model,
            tokenizer,
            scheme=scheme,
            iters=0,
            nsamples=2,
            seqlen=16,
            dataset=["the quick brown fox jumps over the lazy dog " * 4] * 4,
            device_map="cpu",
            layer_config=layer_config or None,
        )
        rounder.quantize_and_save(str(out), format=export_format)
    (folder,) = [p for p in out.iterdir() if p.is_dir()]  # AutoRound saves into a scheme-named sub-folder
    restore_source_dtypes(folder, source_dtypes, model_dtype, kept)
    return folder


_CASES = [
    pytest.param("tiny_qwen3_dir", "w4a16", id="qwen3-w4a16"),
    pytest.param("odd_qwen3_dir", "w4a16", id="odd-w4a16"),
    pytest.param("odd_qwen3_dir", "nvfp4", id="odd-nvfp4"),
    pytest.param("tiny_qwen3_moe_dir", "w4a16", id="qwen3moe-w4a16"),
    pytest.param("tiny_qwen3_moe_dir", "nvfp4", marks=pytest.mark.slow, id="qwen3moe-nvfp4"),
    pytest.param("odd_qwen3_dir", "mxfp4", marks=pytest.mark.slow, id="odd-mxfp4"),
    pytest.param("odd_qwen3_dir", "fp8", marks=pytest.mark.slow, id="odd-fp8"),  # fp8_dynamic: no input_scale
    pytest.param("odd_qwen3_dir", Recipe("fp8-static", "fp8"), marks=pytest.mark.slow, id="odd-fp8-static"),
    pytest.param("odd_qwen3_dir", "fp8-block", marks=pytest.mark.slow, id="odd-fp8-block"),
    pytest.param("odd_qwen3_dir", "w8a16", marks=pytest.mark.slow, id="odd-w8a16"),
]


@pytest.mark.parametrize(("fixture", "preset"), _CASES)
def test_prediction_matches_autoround_export_exactly(fixture, preset, request, tmp_path):
    source = request.getfixturevalue(fixture)
    anatomy = load_anatomy(source)
    recipe = load_recipe(preset) if isinstance(preset, str) else preset
    fmt = recipe.format
    schemes = assign_schemes(anatomy, recipe)
    # Layers our plan keeps 16-bit but AutoRound's own rules would quantize (a fused-set partner,
    # a block-FP8 weight whose rows the block does not divide), as complete entries (autoround.py).
    layer_config = {m: dict(KEEP_16BIT) for m, s in schemes.items() if s == KEPT and ".layers." in m}

    folder = _autoround_export(
        source,
        tmp_path / "out",
        autoround_scheme(fmt),
        fmt.export_format,
        layer_config,
        kept=[m for m, s in schemes.items() if s == KEPT],
    )
    export = load_anatomy(folder)

    predicted = predict_footprint(anatomy, recipe)
    assert predicted.total_bytes == export.total_bytes
    exported = {t.name: (t.dtype, t.shape) for t in export.tensors}
    for module, scheme in schemes.items():
        if scheme == KEPT:
            assert exported[f"{module}.weight"] == ("BF16", anatomy.tensor(f"{module}.weight").shape), module
            continue
        for part in exported_tensors(anatomy.tensor(f"{module}.weight").shape, fmt):
            assert exported.get(f"{module}.{part.suffix}") == (part.dtype, part.shape), (module, part.suffix)


def test_odd_model_plan_keeps_the_split_qkv_set(odd_qwen3_dir: Path):
    schemes = assign_schemes(load_anatomy(odd_qwen3_dir), load_recipe("w4a16"))
    assert schemes["model.layers.0.self_attn.q_proj"] == KEPT  # quantizable alone, kept with k/v
    assert schemes["model.layers.0.self_attn.o_proj"] == "w4a16"
    assert schemes["model.layers.0.mlp.down_proj"] == KEPT  # 160 inputs: a padded group
    assert schemes["model.layers.0.mlp.up_proj"] == "w4a16"
    assert schemes["lm_head"] == KEPT
