"""The GPUs quantscope knows: one table (`GPUS`) shared by every stage that depends on the hardware.

The evaluation twins and the profiler emulate what the target GPU will run (`quantscope.numerics.served`,
from its compute capability), and the serving-memory stage reads its memory and bandwidth.
Memory is what the board carries (decimal GB, as vendors state it); bandwidth is the vendor's
peak HBM/GDDR figure (GB/s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from quantscope.errors import QuantscopeError


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
        """FP8 tensor cores (sm89 and newer); what vLLM runs on them is `quantscope.numerics.served`'s."""
        return self.capability >= 89

    @property
    def fp4_native(self) -> bool:
        """FP4 tensor cores (Blackwell, sm100 and newer); what vLLM runs is `quantscope.numerics.served`'s."""
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
"""The target the twins and the profiler emulate unless told otherwise: Blackwell (sm100), where
vLLM runs NVFP4, MXFP4 and FP8 with their declared activation quantization (`quantscope.numerics.served`)."""

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


__all__ = [
    "DEFAULT_TARGET",
    "GPU",
    "GPUS",
    "USER_GPUS_ENV",
    "get_gpu",
    "known_gpus",
    "load_gpus",
]
