"""Stored formats read from real exports: AutoRound in each of its formats on tiny Qwen3 and
Qwen3.5-MoE; bits per weight against each format's arithmetic; logical params against the source;
recipes derived back from our own quantize."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantscope.checkpoint.anatomy import Anatomy
from quantscope.checkpoint.contents import read_contents
from quantscope.checkpoint.load import load_anatomy
from quantscope.cli import app
from quantscope.errors import QuantscopeError
from quantscope.formats import get_format, vllm_builds
from quantscope.plan.derive import derive_recipe, plan_like
from quantscope.plan.recipe import Override, Recipe, assign_schemes, load_recipe
from quantscope.quantize import QuantizeOptions, quantize, read_manifest
from tests.header_only import write_typed_header_only_shard
from tests.producers import COMPRESSED_TENSORS, ProducerExports

runner = CliRunner()

# Bits per weight of one [o, i] linear weight, written out from each layout's tensors.
Formula = Callable[[int, int], float]


def _int_zeros_scales(bits: int) -> Formula:
    # qzeros pack `bits` per group of 128 along the input, fp16 scale per group.
    return lambda o, i: bits + math.ceil(i / 128) * (bits + 16) / i


FORMULAS: dict[tuple[str, str], Formula] = {
    ("W4A16", "auto_round"): _int_zeros_scales(4),
    ("W4A16", "auto_awq"): _int_zeros_scales(4),
    # auto_gptq adds g_idx: one int32 per input column, i.e. 32 bits per o weights.
    ("W4A16", "auto_gptq"): lambda o, i: _int_zeros_scales(4)(o, i) + 32 / o,
    # compressed-tensors pack-quantized: bf16 scale per 128, no zero points (symmetric), and
    # weight_shape int64[2].
    ("W4A16", "llm_compressor"): lambda o, i: 4 + math.ceil(i / 128) * 16 / i + 2 * 64 / (o * i),
    ("W8A16", "auto_round"): _int_zeros_scales(8),
    # E2M1 values, one E4M3 scale per 16, fp32 weight and input global scales.
    ("NVFP4", "auto_round"): lambda o, i: 4 + 8 / 16 + 2 * 32 / (o * i),
    ("NVFP4", "llm_compressor"): lambda o, i: 4 + 8 / 16 + 2 * 32 / (o * i),
    # E2M1 values, one E8M0 scale per 32.
    ("MXFP4", "auto_round"): lambda o, i: 4 + 8 / 32,
    ("MXFP4", "llm_compressor"): lambda o, i: 4 + 8 / 32,
    # E4M3 values, bf16 scale per output channel, one bf16 input scale.
    ("FP8_STATIC", "auto_round"): lambda o, i: 8 + 16 / i + 16 / (o * i),
    ("FP8_STATIC", "llm_compressor"): lambda o, i: 8 + 16 / i + 16 / (o * i),
    # E4M3 values, bf16 scale per 128×128 block.
    ("FP8_BLOCK", "auto_round"): lambda o, i: 8 + 16 * math.ceil(o / 128) * math.ceil(i / 128) / (o * i),
}
# compressed-tensors alone (tests/ct_producer.py): its presets as its compressors store them.
CT_FORMULAS: dict[str, tuple[str, Formula]] = {
    # bf16 scale per 128; asymmetric zero points int32, packed 8 per int32 along the output dim;
    # weight_shape int64[2].
    "W4A16_ASYM": (
        "INT4 g128 asym",
        lambda o, i: (
            4
            + math.ceil(i / 128) * 16 / i
            + 32 * math.ceil(o / 8) * math.ceil(i / 128) / (o * i)
            + 128 / (o * i)
        ),
    ),
    "W8A8": ("INT8 per-channel", lambda o, i: 8 + 16 / i),  # int8, bf16 scale per output channel
    "FP8": ("FP8 per-tensor", lambda o, i: 8 + 2 * 16 / (o * i)),  # bf16 weight and input scales
    "FP8_DYNAMIC": ("FP8 per-channel (dynamic)", lambda o, i: 8 + 16 / i),  # no input scale
    "FP8_BLOCK": (
        "FP8 block 128×128",
        lambda o, i: 8 + 16 * math.ceil(o / 128) * math.ceil(i / 128) / (o * i),
    ),
    "NVFP4A16": ("NVFP4 weight-only", lambda o, i: 4 + 8 / 16 + 32 / (o * i)),  # weight global scale only
    "MXFP8": ("MXFP8", lambda o, i: 8 + 8 / 32),  # E4M3 values, E8M0 scale per 32
}
LABELS = {"W4A16": "INT4 g128", "W8A16": "INT8 g128", "NVFP4": "NVFP4", "MXFP4": "MXFP4"}
MOE_SUBSET = (
    ("W4A16", "auto_round"),
    ("W4A16", "auto_gptq"),
    ("W4A16", "auto_awq"),
    ("W4A16", "llm_compressor"),
    ("NVFP4", "auto_round"),
    ("MXFP4", "llm_compressor"),
    ("FP8_STATIC", "llm_compressor"),
    ("FP8_BLOCK", "auto_round"),
)


@pytest.fixture(scope="module")
def exports(
    producer_exports: ProducerExports, tiny_qwen3_dir: Path, tiny_qwen35_moe_dir: Path
) -> dict[tuple[str, str, str], tuple[Path, Path]]:
    """(model, scheme, format) -> (export dir, source dir) for every format AutoRound writes here."""
    sources = {"qwen3": tiny_qwen3_dir, "moe": tiny_qwen35_moe_dir}
    combos = [("qwen3", *combo) for combo in FORMULAS] + [("moe", *combo) for combo in MOE_SUBSET]
    return {
        (name, scheme, fmt): (producer_exports(name, scheme, fmt), sources[name])
        for name, scheme, fmt in combos
    }


@pytest.mark.slow
def test_bits_per_weight_follow_each_formats_arithmetic(exports):
    for (name, scheme, fmt), (export, source) in exports.items():
        where = f"{name} {scheme} {fmt}"
        source_anatomy = load_anatomy(source)
        contents = read_contents(load_anatomy(export))
        quantized = [w for w in contents.weights.values() if w.is_quantized]
        assert quantized, where
        for weight in quantized:
            source_weight = source_anatomy.tensor(f"{weight.module}.weight")
            assert weight.shape == source_weight.shape, (where, weight.module)
            out, inputs = weight.shape
            assert weight.bits_per_weight == pytest.approx(FORMULAS[(scheme, fmt)](out, inputs), rel=1e-12), (
                where,
                weight.module,
            )
            if scheme in LABELS:
                assert weight.format == LABELS[scheme], (where, weight.module)
        by_group = contents.anatomy.by_group()
        for group, stored in contents.groups.items():
            assert stored.params == source_anatomy.params_by_group[group], (where, group)
            header_bytes = sum(t.nbytes for t in by_group[group])
            assert stored.bits_per_weight == pytest.approx(8 * header_bytes / stored.params), (where, group)
        assert contents.params == source_anatomy.total_params, where


def _as_declared(export: Path, tmp_path: Path) -> Anatomy | None:
    """The anatomy `inspect` reads from the export's config.json alone (no MTP layer: the tiny
    models have none, while a config without the count gets vLLM's default of one)."""
    config = json.loads((export / "config.json").read_text())
    text = config.get("text_config", config)
    text.setdefault("mtp_num_hidden_layers", 0)
    path = tmp_path / f"{export.name}.config.json"
    path.write_text(json.dumps(config))
    return load_anatomy(path)


def _headers(anatomy: Anatomy) -> set[tuple[str, str, tuple[int, ...]]]:
    # A 16-bit scale is BF16 or F16 at the producer's choice when the config leaves scale_dtype
    # null (AutoRound writes F16 for MoE experts, BF16 elsewhere): same bytes, either is declared.
    return {(t.name, {"F16": "BF16"}.get(t.dtype, t.dtype), t.shape) for t in anatomy.tensors}


@pytest.mark.slow
def test_a_bare_config_of_each_producer_declares_its_real_headers(
    exports, producer_exports: ProducerExports, tmp_path: Path
) -> None:
    """Issue 28 (defect 6): each export's config.json alone lays out the tensors the producer wrote,
    name for name and byte for byte; GPTQ and AWQ configs are refused in one line naming them."""
    producers = {key: export for key, (export, _) in exports.items()}
    for preset in ("W4A16_ASYM", "FP8_BLOCK", "NVFP4A16"):
        producers[("qwen3", preset, COMPRESSED_TENSORS)] = producer_exports(
            "qwen3", preset, COMPRESSED_TENSORS
        )
    refused = {}
    for key, export in producers.items():
        try:
            declared = _as_declared(export, tmp_path)
        except QuantscopeError as error:
            refused[key] = str(error)
            continue
        assert _headers(declared) == _headers(load_anatomy(export)), key
        assert declared.total_bytes == load_anatomy(export).total_bytes, key
    assert set(refused) == {key for key in producers if key[2] in ("auto_gptq", "auto_awq")}
    assert all(re.search(r"quant_method '(gptq|awq)'.*safetensors headers", m) for m in refused.values())


def test_compressed_tensors_alone_writes_and_we_read_each_format(
    producer_exports: ProducerExports, tiny_qwen3_dir: Path
):
    source = load_anatomy(tiny_qwen3_dir)
    for preset, (label, formula) in CT_FORMULAS.items():
        export = producer_exports("qwen3", preset, COMPRESSED_TENSORS)
        contents = read_contents(load_anatomy(export))
        quantized = [w for w in contents.weights.values() if w.is_quantized]
        assert {w.module for w in quantized} == {
            m for m, t in source.linear_weights.items() if t.group != "lm_head"
        }
        for weight in quantized:
            assert weight.format == label, (preset, weight.module)
            assert weight.shape == source.tensor(f"{weight.module}.weight").shape
            assert weight.bits_per_weight == pytest.approx(formula(*weight.shape), rel=1e-12), (
                preset,
                weight.module,
            )
        assert contents.params == source.total_params, preset
        assert contents.label.endswith("(compressed-tensors)"), preset


def test_compressed_tensors_fp8_dynamic_reads_as_dynamic_activations(
    producer_exports: ProducerExports, tiny_qwen3_dir: Path
):
    """compressed-tensors' own FP8_DYNAMIC preset (per-channel weights, per-token dynamic inputs,
    no input_scale) reads back as quantscope's fp8_dynamic (issue 28)."""
    dynamic = read_contents(load_anatomy(producer_exports("qwen3", "FP8_DYNAMIC", COMPRESSED_TENSORS)))
    assert {w.scheme for w in dynamic.weights.values() if w.is_quantized} == {"fp8_dynamic"}
    assert derive_recipe(dynamic.anatomy).recipe.scheme == "fp8_dynamic"


def test_compressed_tensors_nvfp4a16_reads_as_weight_only_nvfp4(
    producer_exports: ProducerExports, tiny_qwen3_dir: Path
):
    """compressed-tensors' own NVFP4A16 preset (NVFP4 weights, no input_global_scale) reads back as
    quantscope's nvfp4a16, and a recipe derived from it says so (issue 28)."""
    weight_only = read_contents(load_anatomy(producer_exports("qwen3", "NVFP4A16", COMPRESSED_TENSORS)))
    assert {w.scheme for w in weight_only.weights.values() if w.is_quantized} == {"nvfp4a16"}
    assert derive_recipe(weight_only.anatomy).recipe.scheme == "nvfp4a16"


@pytest.mark.slow
def test_labels_and_the_one_line_summary(exports):
    export, _ = exports[("moe", "W4A16", "auto_gptq")]
    contents = read_contents(load_anatomy(export))
    assert contents.label == "INT4 (GPTQ)"
    line = contents.summary()
    assert line.startswith("labelled INT4 (GPTQ): 4-bit weights hold ")
    assert "16-bit: lm_head, shared_expert_gate, router" in line
    assert f"{contents.bits_per_weight:.1f} bits per weight overall" in line
    labels = {
        (scheme, fmt): read_contents(load_anatomy(export)).label
        for (name, scheme, fmt), (export, _) in exports.items()
        if name == "qwen3"
    }
    assert labels[("NVFP4", "llm_compressor")] == "NVFP4 (compressed-tensors)"
    assert labels[("MXFP4", "auto_round")] == "MXFP4 (AutoRound)"
    assert labels[("FP8_STATIC", "llm_compressor")] == "FP8 (compressed-tensors)"
    assert labels[("W4A16", "auto_awq")] == "INT4 (AWQ)"


@pytest.mark.slow
def test_derived_recipes_reproduce_every_producer_export(exports):
    expected = {"W4A16": "w4a16", "W8A16": "w8a16", "NVFP4": "nvfp4", "MXFP4": "mxfp4"}
    expected |= {"FP8_STATIC": "fp8", "FP8_BLOCK": "fp8_block"}
    for (name, scheme, fmt), (export, source) in exports.items():
        derived = derive_recipe(load_anatomy(export))
        if scheme == "FP8_BLOCK":
            # AutoRound stores the tiny models' k_proj/v_proj (64 rows) and in_proj_b/a (2 rows) in
            # 128×128 blocks, which vLLM's validate_fp8_block_shape refuses in their merged layers:
            # a recipe keeps those sets 16-bit (formats.vllm_builds); exactly they differ.
            anatomy = load_anatomy(source)
            refused = {
                member
                for fused in anatomy.fused_sets
                if any(
                    not vllm_builds(anatomy.linear_weights[m].shape, get_format("fp8_block"))
                    for m in fused.members
                )
                for member in fused.members
            }
            assert derived.mismatched and set(derived.mismatched) == refused & set(derived.stored), name
            continue
        assert derived.reproduces and not derived.unrepresentable, (name, scheme, fmt, derived.mismatched)
        assert derived.recipe.scheme == expected[scheme]
        assert assign_schemes(load_anatomy(source), derived.recipe) == dict(derived.stored)


@pytest.mark.slow
def test_plan_like_reproduces_our_own_mixed_recipe(tiny_qwen35_moe_dir: Path, tmp_path: Path):
    recipe = Recipe(
        "mixed",
        "w4a16",
        keep_groups=("shared_expert",),
        overrides=(
            Override(r"layers\.3\.self_attn\.(q|k|v)_proj", "w8a16"),
            Override(r"layers\.1\.", "bf16"),
        ),
    )
    options = QuantizeOptions(
        dataset=["The quick brown fox jumps over the lazy dog. " * 8],
        iters=0,
        nsamples=2,
        seqlen=32,
        kl_samples=2,
    )
    export = quantize(tiny_qwen35_moe_dir, recipe, tmp_path / "mixed", options).directory
    assignment = read_manifest(export).assignment
    blind = tmp_path / "blind"
    shutil.copytree(export, blind)
    (blind / "quantscope.json").unlink()

    derived = derive_recipe(load_anatomy(blind))

    assert derived.reproduces
    source = load_anatomy(tiny_qwen35_moe_dir)
    assert assign_schemes(source, derived.recipe) == assignment
    assert "shared_expert" in derived.recipe.keep_groups
    like = plan_like(source, load_anatomy(blind))
    assert like.footprint.schemes == assignment
    # Our own export is AutoRound's packing, so the self-check is exact.
    assert like.self_footprint.total_bytes == like.checkpoint_bytes == load_anatomy(export).total_bytes

    out = tmp_path / "recipe.yaml"
    result = runner.invoke(app, ["recipe", "from-checkpoint", str(blind), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "reproduces it module for module" in result.output
    assert assign_schemes(source, load_recipe(out)) == assignment

    result = runner.invoke(app, ["plan", str(tiny_qwen35_moe_dir), "--like", str(blind), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["reproduces_checkpoint"] is True
    assert data["predicted_bytes"] == like.footprint.total_bytes


@pytest.mark.slow
def test_inspect_side_by_side_and_json(producer_exports: ProducerExports, tiny_qwen35_moe_dir: Path):
    gptq, source = producer_exports("moe", "W4A16", "auto_gptq"), tiny_qwen35_moe_dir
    nvfp4 = producer_exports("moe", "NVFP4", "auto_round")
    result = runner.invoke(app, ["inspect", str(source), str(gptq), str(nvfp4)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "Side by side" in result.output
    assert "labelled INT4 (GPTQ)" in result.output and "labelled NVFP4 (AutoRound)" in result.output

    result = runner.invoke(app, ["inspect", str(gptq), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    contents = read_contents(load_anatomy(gptq))
    assert data["contents"]["params"] == contents.params == load_anatomy(source).total_params
    experts = data["contents"]["groups"]["routed_experts"]
    assert set(experts["formats"]) == {"INT4 g128"}
    assert experts["bits_per_weight"] == pytest.approx(contents.groups["routed_experts"].bits_per_weight)

    result = runner.invoke(app, ["inspect", str(source), str(gptq), "--json"])
    assert [c["contents"]["label"] for c in json.loads(result.output)["checkpoints"]] == [
        "unquantized",
        "INT4 (GPTQ)",
    ]


def test_a_qwen_style_fp8_block_checkpoint_from_headers(tiny_qwen3_dir: Path, tmp_path: Path):
    """The layout of Qwen's and DeepSeek's FP8 checkpoints (quant_method fp8, weight_scale_inv F32
    per 128×128 block, vLLM's fp8.py), written header-only from the tiny Qwen3's shapes."""
    source = load_anatomy(tiny_qwen3_dir)
    entries = []
    for tensor in source.tensors:
        if tensor.is_linear_weight and tensor.group != "lm_head":
            out, inputs = tensor.shape
            entries += [
                (tensor.name, "F8_E4M3", (out, inputs)),
                (f"{tensor.module}.weight_scale_inv", "F32", (math.ceil(out / 128), math.ceil(inputs / 128))),
            ]
        else:
            entries.append((tensor.name, tensor.dtype, tensor.shape))
    (tmp_path / "fp8").mkdir()
    write_typed_header_only_shard(tmp_path / "fp8" / "model.safetensors", entries)
    config = json.loads((tiny_qwen3_dir / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "fp8",
        "activation_scheme": "dynamic",
        "weight_block_size": [128, 128],
    }
    (tmp_path / "fp8" / "config.json").write_text(json.dumps(config))

    contents = read_contents(load_anatomy(tmp_path / "fp8"))

    assert contents.label == "FP8 block 128×128 (fp8)"
    for weight in (w for w in contents.weights.values() if w.is_quantized):
        out, inputs = weight.shape
        assert weight.format == "FP8 block 128×128"
        assert weight.bits_per_weight == pytest.approx(
            8 + 32 * math.ceil(out / 128) * math.ceil(inputs / 128) / (out * inputs)
        )
    assert contents.summary().startswith("labelled FP8 block 128×128 (fp8): 8-bit weights hold")
    assert derive_recipe(load_anatomy(tmp_path / "fp8")).recipe.scheme == "fp8_block"
