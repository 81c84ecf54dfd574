"""Activation rounding and evaluation twins: AutoRound's arithmetic, vLLM's kernel choice per GPU,
and twins that compute what their exports compute (the exports run through AutoRound's and
compressed-tensors' own CPU modules)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quantscope.checkpoint.modeling import load_causal_lm, next_token_kl, next_token_logits
from quantscope.errors import QuantscopeError
from quantscope.gpus import get_gpu
from quantscope.numerics.actquant import ActPoint, act_spec, activations_quantized, install, qdq_activation
from quantscope.numerics.served import served_activations
from quantscope.numerics.twin_marker import read_twin
from quantscope.quantize import read_manifest
from quantscope.quantize.twin import write_twin
from quantscope.quantize.weights import load_export_float32


def _activations() -> torch.Tensor:
    torch.manual_seed(0)
    # spread over four decades, with outlier channels, as real layer inputs are
    return torch.randn(3, 5, 320) * torch.logspace(-2, 2, 320)


def test_nvfp4_activation_rounding_is_autoroundʼs_with_a_static_global_scale() -> None:
    from auto_round.data_type.nvfp import calculate_gparam, nv_fp4_with_static_gs

    x = _activations()
    amax = 0.5 * float(x.abs().amax())  # calibrated below the peak: the peak saturates
    theirs = nv_fp4_with_static_gs(x, group_size=16, global_scale=calculate_gparam(amax, 16))[0]
    assert torch.equal(qdq_activation(x, act_spec("nvfp4"), amax), theirs)


def test_mxfp4_and_fp8_activation_rounding_is_autoroundʼs() -> None:
    from auto_round.data_type.fp8 import quant_fp8_sym
    from auto_round.data_type.mxfp import quant_mx
    from auto_round.experimental.qmodules.fp8_static import _quant_tensor_to_fp8_with_scale

    x = _activations()
    assert torch.equal(
        qdq_activation(x, act_spec("mxfp4")), quant_mx(x, bits=4, group_size=32, data_type="mx_fp")[0]
    )
    assert torch.equal(qdq_activation(x, act_spec("fp8_block")), quant_fp8_sym(x, group_size=128)[0])
    amax = float(x.abs().amax())
    scale, fp8 = _quant_tensor_to_fp8_with_scale(x, torch.tensor(amax / 448.0))
    assert torch.equal(qdq_activation(x, act_spec("fp8"), amax), fp8.float() * scale)
    assert act_spec("w4a16") is None and act_spec("bf16") is None


@pytest.mark.parametrize(
    ("fmt", "gpu", "quantized"),
    [
        ("nvfp4", "B200", True),
        ("nvfp4", "RTX-5090", True),
        ("nvfp4", "H100", False),  # Marlin weight-only FP4
        ("nvfp4", "A100", False),
        ("mxfp4", "B300", True),
        ("mxfp4", "A100", False),  # Marlin; on H200 Humming runs it W4A8 (tests/test_served.py)
        ("fp8", "L4", True),  # sm89: FP8 tensor cores
        ("fp8", "A100", False),  # Marlin W8A16
        ("fp8_dynamic", "L4", True),  # per-token FP8 on CUTLASS (dense) / Triton (experts)
        ("fp8_dynamic", "A100", False),
        ("fp8_block", "H100", True),
        ("w4a16", "B200", False),
        ("nvfp4", "cpu", True),  # AutoRound's CPU modules quantize the inputs as declared
    ],
)
def test_served_activations_follow_vllm_kernel_selection(fmt: str, gpu: str, quantized: bool) -> None:
    assert served_activations(fmt, gpu).activations is quantized


def test_unknown_gpu_names_the_known_ones() -> None:
    assert get_gpu("h100-sxm").name == "H100"
    with pytest.raises(QuantscopeError, match=r"unknown GPU 'V100'.*H200.*B200"):
        get_gpu("V100")


def test_fused_expert_inputs_are_seen_expert_by_expert(tiny_qwen35_moe_dir: Path) -> None:
    model = load_causal_lm(tiny_qwen35_moe_dir, dtype="float32", tokenizer=False).model
    experts = model.model.layers[0].mlp.experts
    points = [
        ActPoint(f"model.layers.0.mlp.experts.{e}.{proj}", "mxfp4")
        for e in range(experts.num_experts)
        for proj in ("gate_proj", "down_proj")
    ]
    seen: dict[str, list[torch.Tensor]] = {}

    def record(point: ActPoint, x: torch.Tensor) -> torch.Tensor:
        seen.setdefault(point.module, []).append(x)
        return x

    ids = torch.randint(0, 200, (2, 24))
    before = model(input_ids=ids).logits
    handles = install(model, points, record)
    assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-5)  # eager experts: same result
    for handle in handles:
        handle.remove()
    assert set(seen) == {p.module for p in points}  # every expert's gate_up and down input
    widths = {p: {x.shape[-1] for x in xs} for p, xs in seen.items()}
    assert all(w == {experts.gate_up_proj.shape[-1]} for p, w in widths.items() if "gate" in p)
    assert all(w == {experts.down_proj.shape[-1]} for p, w in widths.items() if "down" in p)
    with activations_quantized(model, points):
        rounded = model(input_ids=ids).logits
    assert not torch.allclose(rounded, before, atol=1e-4)
    with pytest.raises(QuantscopeError, match="no linear layer or fused expert"):
        install(model, [ActPoint("model.layers.0.mlp.nothing", "nvfp4")], record)


# ------------------------------------------------------------------ twins vs their exports

_TOLERANCE = {
    # KL(twin || export), nats per token, on the export's own probe windows, both in float32.
    # Measured: w4a16 1.5e-7 (the eye read-out of packed int4 in float32), nvfp4 1.4e-14, mxfp4
    # and fp8 (fp8_dynamic, compressed-tensors' own per-token rule on the CPU path) exactly 0.
    # In bf16, AutoRound's FP8 module multiplies scales out in bf16 and differs from the twin
    # (and from vLLM's fp32 epilogue) by about 1e-3.
    fmt: 1e-5
    for fmt in ("w4a16", "nvfp4", "mxfp4", "fp8")
}


def _kl_and_agreement(reference: list[torch.Tensor], candidate: list[torch.Tensor]) -> tuple[float, float]:
    kl = torch.cat(
        [next_token_kl(r.double(), c.double())[0] for r, c in zip(reference, candidate, strict=True)]
    )
    agree = torch.cat(
        [(r.argmax(-1) == c.argmax(-1)).double() for r, c in zip(reference, candidate, strict=True)]
    )
    return float(kl.mean()), float(agree.mean())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(_TOLERANCE))
def test_twin_computes_what_its_export_computes(
    fmt: str, toy_exports: dict[str, Path], tmp_path: Path
) -> None:
    """The twin for the transformers CPU path (target "transformers") against the export run by
    that path: same weights read out of the export, same activation rounding emulated."""
    from quantscope.toy import checkpoint_dir

    export = toy_exports[fmt]
    probe = read_manifest(export).probe
    exported = next_token_logits(load_export_float32(export), probe)
    twin = write_twin(checkpoint_dir(), export, tmp_path / "twin", "transformers")
    marker = read_twin(twin)
    assert marker["gpu"] == "transformers" and marker["quantized_tensors"] > 0
    assert bool(marker["activations"]) is (fmt != "w4a16")  # W4A16 is weight-only everywhere
    kl, agree = _kl_and_agreement(
        exported, next_token_logits(load_causal_lm(twin, tokenizer=False).model, probe)
    )
    assert kl <= _TOLERANCE[fmt] and agree >= 0.98, (kl, agree)


@pytest.mark.slow
def test_a_blackwell_twin_rounds_expert_inputs_the_cpu_path_leaves_16_bit(
    toy_exports: dict[str, Path], tmp_path: Path
) -> None:
    """compressed-tensors MXFP4 experts are decompressed by transformers into fused 16-bit
    parameters, so on the CPU their inputs are not rounded; vLLM on Blackwell rounds them."""
    from quantscope.toy import checkpoint_dir

    export = toy_exports["mxfp4"]
    cpu = {
        p["module"]
        for p in read_twin(write_twin(checkpoint_dir(), export, tmp_path / "cpu", "cpu"))["activations"]
    }
    b200 = {
        p["module"]
        for p in read_twin(write_twin(checkpoint_dir(), export, tmp_path / "b200", "B200"))["activations"]
    }
    experts = {m for m in b200 if ".experts." in m}
    assert experts and not experts & cpu and cpu < b200


@pytest.mark.slow
def test_a_hopper_twin_is_the_export_with_16_bit_activations(
    toy_exports: dict[str, Path], tmp_path: Path
) -> None:
    """On Hopper vLLM runs NVFP4 weight-only (Marlin): the twin must equal the export with its
    activation rounding switched off, and differ from the W4A4 export."""
    from quantscope.toy import checkpoint_dir

    export = toy_exports["nvfp4"]
    probe = read_manifest(export).probe
    model = load_export_float32(export)  # compressed-tensors NVFP4, decompressed
    w4a4 = next_token_logits(model, probe)
    rounding = [
        m
        for m in model.modules()
        if getattr(getattr(m, "quantization_scheme", None), "input_activations", None)
    ]
    assert rounding
    for module in rounding:  # compressed-tensors' own switch (lifecycle/forward.py, quantized_forward)
        module.quantization_enabled = False
    weight_only = next_token_logits(model, probe)
    twin = write_twin(checkpoint_dir(), export, tmp_path / "twin-h100", "H100")
    assert read_twin(twin)["activations"] == []
    hopper = next_token_logits(load_causal_lm(twin, tokenizer=False).model, probe)
    kl_same, _ = _kl_and_agreement(weight_only, hopper)
    kl_w4a4, _ = _kl_and_agreement(w4a4, hopper)
    assert kl_same <= 1e-4 < kl_w4a4


def test_stored_activation_scales_are_reproduced_to_the_bit(tmp_path: Path) -> None:
    """The twin recomputes each static scale from a |max| (float32, as AutoRound does); the plain
    inverse of a stored scale is often one ulp off, which on SmolLM2 moved the NVFP4 twin by
    0.1 nats/token from its export. The |max| the twin stores must give back the very scale."""
    from auto_round.data_type.nvfp import calculate_gparam
    from safetensors.torch import save_file

    from quantscope.numerics.actquant import fp8_static_scale
    from quantscope.numerics.fakequant import nvfp4_global_scale
    from quantscope.quantize.twin import export_activation_amax

    torch.manual_seed(0)
    amaxes = torch.rand(200) * 500 + 0.5  # calibrated input |max| as AutoRound stores them:
    nv = torch.stack([calculate_gparam(a) for a in amaxes]).reshape(200)  # 448 * 6 / amax
    fp8 = fp8_static_scale(amaxes)  # amax / 448
    tensors = {f"l{i}.input_global_scale": nv[i : i + 1] for i in range(200)}
    tensors |= {f"f{i}.input_scale": fp8[i : i + 1] for i in range(200)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    amax = export_activation_amax(tmp_path)
    naive = sum(bool(nvfp4_global_scale(torch.tensor(448 * 6 / float(s))) != s) for s in nv)
    assert naive > 0  # the defect this guards against is real for float32 scales
    for i in range(200):
        assert torch.equal(nvfp4_global_scale(amax[f"l{i}"]).reshape(1), nv[i : i + 1]), i
        assert torch.equal(fp8_static_scale(amax[f"f{i}"]).reshape(1), fp8[i : i + 1]), i


# ------------------------------------------------------------------ what each GPU runs, per layer kind


def test_deepgemm_power_of_two_fp8_rounding_is_vllmʼs() -> None:
    """DeepGEMM's block-FP8 inputs (per token and 128 channels, scales rounded up to powers of
    two) against vLLM's own `QuantFP8.forward_native` with `use_ue8m0`."""
    pytest.importorskip("vllm", reason="vLLM's QuantFP8 is the oracle")
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.quantization.input_quant_fp8 import QuantFP8
    from vllm.model_executor.layers.quantization.utils.quant_utils import GroupShape

    from quantscope.numerics.actquant import served_spec

    x = _activations().reshape(-1, 320)  # 320 = 2.5 groups of 128: vLLM pads the last one
    with set_current_vllm_config(VllmConfig()):
        quant = QuantFP8(
            static=False, group_shape=GroupShape(1, 128), use_ue8m0=True, column_major_scales=False
        )
        values, scales = quant.forward_native(x)
    theirs = values.float() * scales.repeat_interleave(128, dim=-1)[:, :320]
    assert torch.equal(qdq_activation(x, served_spec("fp8_group"), pow2=True), theirs)
    assert not torch.equal(qdq_activation(x, served_spec("fp8_group")), theirs)  # FP32 scales differ


def test_fp8_dynamic_inputs_are_rounded_per_token_as_vllm_rounds_them() -> None:
    """fp8_dynamic (the fp8 preset) declares FP8 inputs with one dynamic scale per token: against
    vLLM's own `QuantFP8.forward_native` (per-token group shape), what its CUTLASS path quantizes."""
    pytest.importorskip("vllm", reason="vLLM's QuantFP8 is the oracle")
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.quantization.input_quant_fp8 import QuantFP8
    from vllm.model_executor.layers.quantization.utils.quant_utils import GroupShape

    x = _activations().reshape(-1, 320)
    with set_current_vllm_config(VllmConfig()):
        values, scales = QuantFP8(static=False, group_shape=GroupShape.PER_TOKEN).forward_native(x)
    assert torch.equal(qdq_activation(x, act_spec("fp8_dynamic")), values.float() * scales)
    assert served_activations("fp8_dynamic", "H100", "experts").act == "fp8_token"


def test_the_transformers_path_rounds_fp8_dynamic_inputs_as_compressed_tensors_does() -> None:
    """On the CPU path an fp8_dynamic export (compressed-tensors) quantizes each input with one
    scale per position of its first two dims (`compute_dynamic_scales_and_zp`, strategy TOKEN): per
    token of a [batch, seq, hidden] input, and, with no dim left to reduce, one scale for the whole
    of a 2-D [tokens, hidden] one, as transformers' Qwen3.5 MoE hands its shared expert. Against
    compressed-tensors' own scale computation and `fake_quantize`, in both shapes."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils.helpers import compute_dynamic_scales_and_zp

    from quantscope.numerics.actquant import served_spec

    cpu = served_activations("fp8_dynamic", "transformers", "linear")
    args = QuantizationArgs(num_bits=8, type="float", strategy="token", dynamic=True, symmetric=True)
    for x in (_activations(), _activations().reshape(-1, 320)):
        scale, zero = compute_dynamic_scales_and_zp(x, args, torch.nn.Linear(320, 4))
        expected = fake_quantize(x, scale, zero, args)
        assert torch.equal(qdq_activation(x, served_spec(cpu.act)), expected), x.shape
    flat = _activations().reshape(-1, 320)  # vLLM scales each row: another rounding
    vllm = served_activations("fp8_dynamic", "H100", "linear")
    assert vllm.act == "fp8_token"
    assert not torch.equal(
        qdq_activation(flat, served_spec(cpu.act)), qdq_activation(flat, served_spec(vllm.act))
    )


def test_the_transformers_path_rounds_nvfp4_inputs_with_compressed_tensors_arithmetic() -> None:
    """A compressed-tensors NVFP4 export rounds its inputs on the CPU path with compressed-tensors'
    own arithmetic (`calculate_qparams`, `_quantize_dequantize`), which differs from AutoRound's in
    the last place of some scales; on SmolLM2 the difference compounded to KL 0.14 nats/token
    between twin and export. Bit-exact against compressed-tensors' `compute_dynamic_scales_and_zp`
    and `fake_quantize` with the preset's own input args, zero groups included; AutoRound's
    rounding (what an auto_round export runs) is not."""
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES
    from compressed_tensors.quantization.utils.helpers import compute_dynamic_scales_and_zp

    from quantscope.numerics.actquant import served_spec
    from quantscope.numerics.fakequant import nvfp4_global_scale
    from quantscope.numerics.served import with_cpu_inputs

    args = PRESET_SCHEMES["NVFP4"]["input_activations"]
    cpu = served_activations("nvfp4", "transformers", "linear")
    assert with_cpu_inputs(cpu, "floor").act == "nvfp4" and with_cpu_inputs(cpu, "even").act == cpu.act
    for x in (_activations(), _activations().reshape(-1, 320)):
        x[0, ..., :16] = 0.0
        amax = x.abs().max()
        global_scale = nvfp4_global_scale(amax).reshape(1)
        scale, zero = compute_dynamic_scales_and_zp(
            x, args, torch.nn.Linear(320, 4), global_scale=global_scale
        )
        expected = fake_quantize(x, scale, zero, args, global_scale=global_scale)
        assert torch.equal(qdq_activation(x, served_spec(cpu.act), amax), expected), x.shape
        assert not torch.equal(qdq_activation(x, served_spec("nvfp4"), amax), expected)


def test_hummingʼs_w4a8_inputs_are_fp8_per_token_as_humming_rounds_them() -> None:
    """MXFP4 dense layers on sm90 run through Humming with FP8 e4m3 inputs and one dynamic scale per
    token: against Humming's own reference quantizer (tiny and all-zero rows included)."""
    pytest.importorskip("humming", reason="needs humming-kernels (the dev extra)")
    from humming.testing.process_input import quant_input_ref

    from quantscope.numerics.actquant import served_spec

    x = _activations().reshape(-1, 320)
    x[3], x[4] = 0.0, x[4] * 1e-5
    values, _, token_scales = quant_input_ref(x, "dynamic_token", "float8e4m3")
    assert torch.equal(qdq_activation(x, served_spec("fp8_token")), values.float() * token_scales)


def _expert_amax(layer: str, experts: int) -> dict[str, float]:
    torch.manual_seed(1)
    return {
        f"{layer}.experts.{e}.{proj}": float(torch.rand(()) * 4 + 0.5)
        for e in range(experts)
        for proj in ("gate_proj", "up_proj", "down_proj")
    }


def test_a_b200_twin_rounds_moe_expert_inputs_with_one_scale_per_layer(
    tiny_qwen35_moe_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FlashInfer's NVFP4 MoE (vLLM 0.32 on a B200) quantizes every expert's input with one global
    scale per layer: the largest of the experts' scales, for gate/up and for down
    (`amax_for_moe_activation_quant`). A real tiny Qwen3.5-MoE twin, its hooks installed by
    `load_causal_lm` from twin.json, against AutoRound's NVFP4 rounding with the scale vLLM's own
    function picks from the per-expert ones."""
    import json
    import shutil

    pytest.importorskip("vllm", reason="vLLM's amax_for_moe_activation_quant picks the shared scale")
    from auto_round.data_type.nvfp import calculate_gparam, nv_fp4_with_static_gs
    from vllm.model_executor.layers.quantization.utils.quant_utils import amax_for_moe_activation_quant

    import quantscope.numerics.actquant as actquant
    from quantscope.numerics.twin_marker import describe_twin
    from quantscope.quantize.twin import plan_twin, twin_marker

    layer, dense = "model.layers.0.mlp", "model.layers.0.mlp.shared_expert.down_proj"
    amax = _expert_amax(layer, 4) | {dense: 0.75}
    plan = plan_twin(dict.fromkeys(amax, "nvfp4"), "B200", amax, model_type="qwen3_5_moe_text")
    assert plan.describe() == "dense W4A4 (NVFP4); experts W4A4 (NVFP4) with one activation scale per layer"

    twin = tmp_path / "twin"
    shutil.copytree(tiny_qwen35_moe_dir, twin)
    (twin / "twin.json").write_text(
        json.dumps(twin_marker(plan, tmp_path / "export", tiny_qwen35_moe_dir, 0))
    )
    seen: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    rounding = actquant._quantize

    def spy(point: ActPoint, x: torch.Tensor) -> torch.Tensor:
        out = rounding(point, x)
        seen.append((point.module, x.detach().clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(actquant, "_quantize", spy)
    model = load_causal_lm(twin, dtype="float32", tokenizer=False).model
    with torch.no_grad():
        model(input_ids=torch.randint(0, 200, (2, 24)))

    # the shared global scale per (layer, gate/up | down), as vLLM reduces the per-expert ones
    shared = {}
    for down in (False, True):
        names = [n for n in amax if ".experts." in n and n.endswith("down_proj") is down]
        scales = torch.stack([calculate_gparam(amax[n], 16).reshape(()) for n in names])
        largest = amax_for_moe_activation_quant(1.0 / scales, enable_eplb=False)
        shared[down] = scales[int(torch.nonzero(1.0 / scales == largest)[0])]
    experts = [(m, x, out) for m, x, out in seen if ".experts." in m]
    assert {m.rsplit(".", 1)[-1] for m, _, _ in experts} >= {"down_proj"}
    assert len({m for m, _, _ in experts}) >= 4
    differs = False
    for module, x, out in experts:
        scale = shared[module.endswith("down_proj")]
        assert torch.equal(out, nv_fp4_with_static_gs(x, group_size=16, global_scale=scale)[0]), module
        own = nv_fp4_with_static_gs(x, group_size=16, global_scale=calculate_gparam(amax[module], 16))[0]
        differs |= not torch.equal(own, out)
    assert differs  # each expert's own scale (the twin before vLLM 0.32's rule) rounds otherwise
    dense_scale = calculate_gparam(0.75, 16)  # a dense layer keeps its own scale
    dense_inputs = [(x, out) for m, x, out in seen if m == dense]
    assert dense_inputs
    for x, out in dense_inputs:
        assert torch.equal(out, nv_fp4_with_static_gs(x, group_size=16, global_scale=dense_scale)[0])
    sentence = describe_twin(twin)
    assert (
        "as vLLM 0.32 runs it on B200 (FlashInfer, Humming, DeepGEMM): dense W4A4 (NVFP4); experts W4A4"
        in sentence
    )


def test_a_hopper_twin_plans_mxfp4_dense_w4a8_and_experts_weight_only() -> None:
    """vLLM 0.32 on an H100: Humming runs MXFP4 dense layers with FP8 per-token inputs, Marlin runs
    the MoE experts weight-only; without Humming, Marlin runs both weight-only."""
    from quantscope.numerics.served import KernelSet
    from quantscope.quantize.twin import plan_twin

    layer, dense = "model.layers.0.mlp", "model.layers.0.self_attn.q_proj"
    assignment = dict.fromkeys([*_expert_amax(layer, 2), dense], "mxfp4")
    plan = plan_twin(assignment, "H100", {})
    assert [(p.module, p.act, p.amax) for p in plan.activations] == [(dense, "fp8_token", None)]
    assert plan.describe() == "dense W4A8 (FP8 e4m3, dynamic per-token scale); experts W4A16"
    assert plan_twin(assignment, "H100", {}, kernels=KernelSet(humming=False)).activations == ()
    b200 = plan_twin(assignment, "B200", {})
    assert {p.act for p in b200.activations} == {"mxfp4"} and len(b200.activations) == 7
    assert plan_twin(assignment, "RTX-5090", {}).describe() == "dense W4A4 (MXFP4); experts W4A16"
