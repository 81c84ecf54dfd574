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

import os
from dataclasses import dataclass, fields
from pathlib import Path

from quantscope.errors import QuantscopeError
from quantscope.formats import get_format


@dataclass(frozen=True)
class GPU:
    """One accelerator: `capability` is the CUDA compute capability as vLLM writes it (major*10 +
    minor, 0 for the CPU path), `memory_gb` the board's memory as the vendor states it (GB),
    `visible_gib` what CUDA reports (`torch.cuda.get_device_properties().total_memory`, GiB: vLLM
    takes `gpu_memory_utilization` of this; approximate, `quantscope doctor` prints yours),
    `bandwidth_gbs` its peak memory bandwidth (GB/s), `source` where the figures come from."""

    name: str
    capability: int
    memory_gb: float
    bandwidth_gbs: float
    aliases: tuple[str, ...] = ()
    visible_gib: float = 0.0
    source: str = ""

    @property
    def memory_bytes(self) -> int:
        """Bytes vLLM sizes its memory against: the CUDA-visible total, else the vendor figure."""
        return int(self.visible_gib * (1 << 30)) if self.visible_gib else int(self.memory_gb * 1e9)

    @property
    def fp8_native(self) -> bool:
        """FP8 tensor cores (sm89 and newer): W8A8 FP8 runs with its activations."""
        return self.capability >= 89

    @property
    def fp4_native(self) -> bool:
        """FP4 tensor cores (Blackwell, sm100 and newer): NVFP4 / MXFP4 run as W4A4."""
        return self.capability >= 100


_DATASHEET = "NVIDIA product datasheet"
GPUS: tuple[GPU, ...] = (
    GPU("T4", 75, 16, 320, (), 14.6, _DATASHEET),
    GPU("A10G", 86, 24, 600, ("a10",), 22.0, "AWS G5 instance specification"),
    GPU("A100-40GB", 80, 40, 1555, ("a100-40",), 39.4, _DATASHEET),
    GPU("A100-80GB", 80, 80, 2039, ("a100", "a100-80"), 79.2, f"{_DATASHEET} (SXM)"),
    GPU("L4", 89, 24, 300, (), 22.0, _DATASHEET),
    GPU("L40S", 89, 48, 864, (), 44.4, _DATASHEET),
    GPU("RTX-4090", 89, 24, 1008, ("4090",), 23.6, "NVIDIA GeForce RTX 4090 specifications"),
    GPU("H100", 90, 80, 3350, ("h100-sxm",), 79.1, f"{_DATASHEET} (SXM)"),
    GPU("H200", 90, 141, 4800, (), 139.8, f"{_DATASHEET} (SXM)"),
    GPU("B200", 100, 180, 8000, (), 178.4, "NVIDIA HGX B200 specification (per GPU)"),
    GPU("B300", 103, 288, 8000, (), 268.0, "NVIDIA HGX B300 specification (per GPU)"),
    GPU("RTX-5090", 120, 32, 1792, ("5090",), 31.4, "NVIDIA GeForce RTX 5090 specifications"),
    GPU("RTX-PRO-6000", 120, 96, 1792, ("rtx-pro-6000-blackwell",), 94.9, _DATASHEET),
    GPU("transformers", 0, 0, 0, ("cpu",)),
)
DEFAULT_TARGET = "B200"
"""The target the twins and the profiler emulate unless told otherwise: Blackwell, where every
format quantscope exports runs with its declared activation quantization."""

USER_GPUS_ENV = "QUANTSCOPE_GPUS"
"""Environment variable naming a YAML file of extra GPUs (a list of mappings with the `GPU`
fields; an entry whose name matches a built-in one replaces it)."""


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def load_gpus(path: Path) -> tuple[GPU, ...]:
    """The GPUs a user's YAML file lists. Raises QuantscopeError naming the file and the entry."""
    import yaml

    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise QuantscopeError(f"{path}: cannot read it as YAML ({error})") from error
    if not isinstance(entries, list):
        raise QuantscopeError(f"{path}: expected a list of GPUs (name, capability, memory_gb, bandwidth_gbs)")
    names = {f.name for f in fields(GPU)}
    gpus = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"name", "capability", "memory_gb", "bandwidth_gbs"} <= set(
            entry
        ):
            raise QuantscopeError(f"{path}: entry {i} needs name, capability, memory_gb and bandwidth_gbs")
        if unknown := set(entry) - names:
            raise QuantscopeError(f"{path}: entry {i} has unknown fields {sorted(unknown)}")
        gpus.append(GPU(**{**entry, "aliases": tuple(_key(a) for a in entry.get("aliases", ()))}))
    return tuple(gpus)


def known_gpus() -> tuple[GPU, ...]:
    """The built-in table, with the file `$QUANTSCOPE_GPUS` names (when set) added or replacing."""
    path = os.environ.get(USER_GPUS_ENV)
    if not path:
        return GPUS
    extra = load_gpus(Path(path))
    replaced = {_key(g.name) for g in extra}
    return (*extra, *(g for g in GPUS if _key(g.name) not in replaced))


def get_gpu(name: str) -> GPU:
    """The GPU called `name` (case-insensitive; aliases such as "a100" or "cpu" work).

    Raises QuantscopeError listing the known names.
    """
    key, table = _key(name), known_gpus()
    for gpu in table:
        if key == _key(gpu.name) or key in gpu.aliases:
            return gpu
    raise QuantscopeError(
        f"unknown GPU {name!r}; use one of: {', '.join(gpu.name for gpu in table)} "
        f"(or add yours to a YAML file named by ${USER_GPUS_ENV})"
    )


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
        if gpu.fp4_native:
            return Served(fmt.name, True, "W4A4 FP4 GEMM (CUTLASS / FlashInfer)")
        return Served(fmt.name, False, "Marlin weight-only FP4 (no native FP4 below sm100)")
    if fmt.data_type == "mxfp4":
        if gpu.fp4_native:
            return Served(fmt.name, True, "W4A4 MXFP4 GEMM (FlashInfer)")
        return Served(fmt.name, False, "Marlin weight-only MXFP4 (activation quantization ignored)")
    if fmt.data_type == "fp8":
        if gpu.fp8_native:
            return Served(fmt.name, True, "W8A8 FP8 GEMM")
        return Served(fmt.name, False, "Marlin weight-only FP8 (no FP8 tensor cores below sm89)")
    raise QuantscopeError(
        f"format {fmt.name!r} declares {fmt.act_bits}-bit activations quantscope cannot place"
    )


__all__ = [
    "DEFAULT_TARGET",
    "GPU",
    "GPUS",
    "USER_GPUS_ENV",
    "Served",
    "get_gpu",
    "known_gpus",
    "load_gpus",
    "served_activations",
]
