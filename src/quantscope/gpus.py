"""The GPUs quantscope knows, and what vLLM runs on each for every stored format.

One table (`GPUS`) shared by every stage that depends on the hardware: the evaluation twins and
the profiler emulate what the target GPU will run, and the serving-memory stage reads its memory
and bandwidth. Memory is what the board carries (decimal GB, as vendors state it); bandwidth is
the vendor's peak HBM/GDDR figure (GB/s).

`served_activations` answers "are this format's activations quantized when vLLM serves it on
this GPU?", from vLLM 0.32's kernel selection (read from its source, cited per rule below):

- NVFP4 (compressed-tensors `CompressedTensorsW4A4Fp4`): W4A4 where
  `cutlass_scaled_mm_supports_fp4` holds (sm100/sm103/sm120, `utils/nvfp4_utils.py`); from sm75 up
  to that, `init_nvfp4_linear_kernel` (`model_executor/kernels/linear/__init__.py`) falls back to
  `MarlinNvFp4LinearKernel`, weight-only FP4 with 16-bit activations.
- MXFP4 (`CompressedTensorsW4A4Mxfp4`, INC's MXFP4): W4A4 with `FlashInferMxFp4LinearKernel`
  from sm100 (`kernels/linear/mxfp4/flashinfer.py`); otherwise `MarlinMxFp4LinearKernel`, which
  logs that the requested activation quantization is ignored (`kernels/linear/mxfp4/marlin.py`).
- FP8 (static per-tensor or dynamic per-token-group activations): `CompressedTensorsW8A8Fp8`
  needs capability 89 (Ada, Hopper and newer); below it vLLM builds `CompressedTensorsW8A16Fp8`
  (Marlin, weight-only) and ignores the input scales (`compressed_tensors/compressed_tensors.py`).
- Integer W4A16 / W8A16 is weight-only everywhere.

"transformers" is the CPU path `verify` uses: transformers loads AutoRound exports with
AutoRound's own modules (`auto_round/experimental/qmodules/nvfp4.py`, `mx.py`, `fp8_static.py`),
which quantize-dequantize the activations as declared, so it runs every format with activations.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantscope.errors import QuantscopeError
from quantscope.formats import get_format


@dataclass(frozen=True)
class GPU:
    """One accelerator: `capability` is the CUDA compute capability as vLLM writes it (major*10 +
    minor, 0 for the CPU path), `memory_gb` the board's memory (GB), `bandwidth_gbs` its peak
    memory bandwidth (GB/s)."""

    name: str
    capability: int
    memory_gb: float
    bandwidth_gbs: float
    aliases: tuple[str, ...] = ()


GPUS: tuple[GPU, ...] = (
    GPU("T4", 75, 16, 320),
    GPU("A10G", 86, 24, 600, ("a10",)),
    GPU("A100-40GB", 80, 40, 1555, ("a100-40",)),
    GPU("A100-80GB", 80, 80, 2039, ("a100", "a100-80")),
    GPU("L4", 89, 24, 300),
    GPU("L40S", 89, 48, 864),
    GPU("RTX-4090", 89, 24, 1008, ("4090",)),
    GPU("H100", 90, 80, 3350, ("h100-sxm",)),
    GPU("H200", 90, 141, 4800),
    GPU("B200", 100, 180, 8000),
    GPU("B300", 103, 288, 8000),
    GPU("RTX-5090", 120, 32, 1792, ("5090",)),
    GPU("RTX-PRO-6000", 120, 96, 1792, ("rtx-pro-6000-blackwell",)),
    GPU("transformers", 0, 0, 0, ("cpu",)),
)
DEFAULT_TARGET = "B200"
"""The target the twins and the profiler emulate unless told otherwise: Blackwell, where every
format quantscope exports runs with its declared activation quantization."""


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def get_gpu(name: str) -> GPU:
    """The GPU called `name` (case-insensitive; aliases such as "a100" or "cpu" work).

    Raises QuantscopeError listing the known names.
    """
    key = _key(name)
    for gpu in GPUS:
        if key == _key(gpu.name) or key in gpu.aliases:
            return gpu
    raise QuantscopeError(f"unknown GPU {name!r}; use one of: {', '.join(gpu.name for gpu in GPUS)}")


@dataclass(frozen=True)
class Served:
    """How vLLM (or the transformers CPU path) runs one stored format: `activations` True when
    it quantizes the layer inputs as the export declares, `kernel` names what runs, and
    `mx_scale_rule` is how it picks MXFP4's E8M0 exponent (`profile.fakequant.MX_SCALE_RULES`):
    vLLM's Blackwell kernels round up ("rceil"); AutoRound's CPU modules floor ("floor")."""

    format: str
    activations: bool
    kernel: str
    mx_scale_rule: str = "rceil"


def served_activations(format_name: str, gpu: GPU | str) -> Served:
    """Whether `format_name`'s declared activation quantization runs on `gpu` (see the module
    docstring for the vLLM source of each rule). 16-bit and weight-only formats: never."""
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    fmt = get_format(format_name)
    if not fmt.is_quantized or fmt.act_bits >= 16:
        return Served(fmt.name, False, "weight-only" if fmt.is_quantized else "16-bit")
    if gpu.capability == 0:
        return Served(fmt.name, True, "AutoRound's quantize-dequantize modules (transformers)", "floor")
    if fmt.data_type == "nvfp4":
        if gpu.capability >= 100:
            return Served(fmt.name, True, "W4A4 FP4 GEMM (CUTLASS / FlashInfer)")
        return Served(fmt.name, False, "Marlin weight-only FP4 (no native FP4 below sm100)")
    if fmt.data_type == "mxfp4":
        if gpu.capability >= 100:
            return Served(fmt.name, True, "W4A4 MXFP4 GEMM (FlashInfer)")
        return Served(fmt.name, False, "Marlin weight-only MXFP4 (activation quantization ignored)")
    if fmt.data_type == "fp8":
        if gpu.capability >= 89:
            return Served(fmt.name, True, "W8A8 FP8 GEMM")
        return Served(fmt.name, False, "Marlin weight-only FP8 (no FP8 tensor cores below sm89)")
    raise QuantscopeError(
        f"format {fmt.name!r} declares {fmt.act_bits}-bit activations quantscope cannot place"
    )


__all__ = ["DEFAULT_TARGET", "GPU", "GPUS", "Served", "get_gpu", "served_activations"]
