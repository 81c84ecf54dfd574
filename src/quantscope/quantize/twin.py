"""Evaluation twins: an export's own weights, run in float as a target GPU runs them.

A twin is a plain float32 checkpoint holding the weights the export really stores, dequantized
(each quantized module of the export, as transformers loads it with AutoRound's modules, read
out one input column at a time with its activation rounding switched off), so whatever rounding
AutoRound chose (RTN, its default optimised RTN, or tuned iterations) is what is evaluated. To
that it adds the activation rounding the target GPU applies when vLLM serves the export
(`profile.actquant`, decided per format and layer kind by `served.served_activations`, for a
stated kernel set): e.g. on an H100, MXFP4 dense inputs in FP8 per token (Humming's W4A8) and MXFP4
experts in 16 bits (Marlin); on a B200, NVFP4 experts with one activation scale per MoE layer, the
largest over its experts (FlashInfer). Activation rounding cannot live in a safetensors file, so
the twin's own manifest (`twin.json`) names every quantized layer input with its format, rounding
and calibrated |max|, and `modeling.load_causal_lm` installs the hooks whenever it loads a twin.

Static activation scales come from the export itself (`input_global_scale` for NVFP4: amax =
448 * 6 / scale; `input_scale` for FP8: amax = scale * 448), so the twin rounds with the scales
vLLM will read. Why twins at all: on a CPU the exports' own quantized modules dequantize every
weight on every forward pass (about 8 tokens/s on the toy model), too slow for hundreds of
generations; the twin runs at the float model's speed plus the activation rounding.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError
from quantscope.gpus import DEFAULT_TARGET, get_gpu
from quantscope.numerics.served import (
    DEFAULT_KERNELS,
    KernelSet,
    Served,
    describe_served,
    kind_of,
    served_activations,
    text_model_type,
    with_cpu_inputs,
)
from quantscope.numerics.twin_marker import TWIN_MARKER, TWIN_VERSION, read_twin

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
)


@dataclass(frozen=True)
class TwinPlan:
    """What a twin emulates for one export on one target: `gpu` (a `quantscope.gpus` name),
    `activations` (`ActPoint`s) for every layer input the target quantizes, `served` what runs
    for each (layer kind, format) of the export, and the `kernels` assumed installed."""

    gpu: str
    activations: tuple[Any, ...]
    served: tuple[Served, ...]
    kernels: KernelSet = DEFAULT_KERNELS

    def describe(self) -> str:
        """What runs per layer kind, e.g. "dense W4A4 (NVFP4); experts W4A4 (NVFP4) with one
        activation scale per layer"."""
        by_kind: dict[str, list[Served]] = {}
        for served in self.served:
            by_kind.setdefault(served.kind, []).append(served)
        return describe_served(by_kind)


def export_activation_amax(export: Path) -> dict[str, float]:
    """Module name -> calibrated input |max| stored in an export's static activation scales.

    Each |max| is the float32 value from which the emulation (`profile.actquant`, float32 like
    AutoRound) recomputes exactly the stored scale: the plain inverse can be one unit in the last
    place off, and on a real model a scale one ulp off flips enough FP4 roundings of activations
    to move the twin's next-token distribution by ~0.1 nats (SmolLM2, 256-token windows).
    """
    from safetensors import safe_open

    from quantscope.numerics.actquant import fp8_static_scale
    from quantscope.numerics.fakequant import FP4_MAX, FP8_E4M3_MAX, nvfp4_global_scale
    from quantscope.quantize.multimodal import causal_name

    found: dict[str, float] = {}
    for path in sorted(export.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                module, _, param = key.rpartition(".")
                module = causal_name(module)  # a multimodal export's manifest uses the text names
                if param == "input_global_scale":
                    scale = handle.get_tensor(key).float().max()
                    guess = FP8_E4M3_MAX * FP4_MAX / float(scale) if scale else 0.0
                    found[module] = _exact_amax(scale, guess, nvfp4_global_scale) if scale else 0.0
                elif param == "input_scale":
                    scale = handle.get_tensor(key).float().max()
                    found[module] = _exact_amax(scale, float(scale) * FP8_E4M3_MAX, fp8_static_scale)
    return found


def _exact_amax(scale: Any, guess: float, scale_of: Any, ulps: int = 4) -> float:
    """The float32 |max| nearest `guess` for which `scale_of(amax)` is exactly `scale` (else `guess`)."""
    import torch

    center = torch.tensor(guess, dtype=torch.float32)
    up, down = center.clone(), center.clone()
    candidates = [center]
    for _ in range(ulps):
        up = torch.nextafter(up, torch.tensor(float("inf")))
        down = torch.nextafter(down, torch.tensor(0.0))
        candidates += [up, down]
    for candidate in candidates:
        if torch.equal(scale_of(candidate).reshape(()), scale.reshape(())):
            return float(candidate)
    return guess


def plan_twin(
    assignment: Mapping[str, str],
    gpu: str,
    amax: Mapping[str, float],
    cpu_inputs: Mapping[str, str] | None = None,
    kernels: KernelSet | None = None,
    model_type: str | None = None,
) -> TwinPlan:
    """The activation points of an export whose modules are stored as `assignment` says (module ->
    format), run on `gpu` with `kernels` installed (default: vLLM 0.32's CUDA wheel's) for a model
    of `model_type` (`served.text_model_type`), with static |max| from `amax` (module -> value; see
    `export_activation_amax`). Each module gets what vLLM runs for its layer kind; where the
    serving kernel takes one activation scale per MoE layer, every expert input gets the layer's
    largest |max|. A static point the export holds no scale for is an error. For the
    "transformers" target, `cpu_inputs` (`quantize.weights.quantized_inputs` of the loaded export)
    says which inputs the CPU path really rounds, and with which MXFP4 exponent rule: it runs MoE
    experts that compressed-tensors decompressed into fused parameters with 16-bit inputs."""
    from quantscope.numerics.actquant import ActPoint, served_spec, share_across_experts

    target, kernels = get_gpu(gpu), kernels or DEFAULT_KERNELS
    points, served_by_module = [], {}
    for module, fmt in sorted(assignment.items()):
        served = served_activations(fmt, target, kind_of(module), kernels, model_type)
        if target.capability == 0 and cpu_inputs is not None:
            served = with_cpu_inputs(served, cpu_inputs.get(module))
        served_by_module[module] = served
        if not served.activations:
            continue
        if served_spec(served.act).static and module not in amax:
            raise QuantscopeError(
                f"the export stores {module} as {fmt} but holds no activation scale for it; "
                "re-export it with quantscope quantize"
            )
        points.append(
            ActPoint(module, fmt, amax.get(module), served.mx_scale_rule, served.act, served.pow2_scales)
        )
    shared = {module for module, served in served_by_module.items() if served.shared_scale}
    points = share_across_experts(points, lambda point: point.module in shared)
    unique = tuple(dict.fromkeys(served_by_module.values()))
    return TwinPlan(target.name, tuple(points), unique, kernels)


def load_export_weights(model: Any, weights: Mapping[str, Any]) -> int:
    """Copy `weights` (module name -> `[out, in]`) into the loaded source `model`, fused experts
    included; returns how many were copied. Shapes must match (QuantscopeError otherwise)."""
    import torch

    from quantscope.numerics.fakequant import resolve_targets

    slices = resolve_targets(model, [(f"{name}.weight", tuple(w.shape)) for name, w in weights.items()])
    with torch.no_grad():
        for where, weight in zip(slices, weights.values(), strict=True):
            view = where.view(model)
            view.copy_(weight.to(view.dtype))
    return len(slices)


def export_plan(
    export: Path,
    gpu: str,
    cpu_inputs: Mapping[str, str] | None = None,
    kernels: KernelSet | None = None,
) -> tuple[Mapping[str, str], TwinPlan]:
    """The manifest's assignment of an export and its twin plan on `gpu` (see `plan_twin`; the
    model type comes from the export's config.json)."""
    from quantscope.quantize.manifest import read_manifest

    assignment = read_manifest(export).assignment
    plan = plan_twin(
        assignment, gpu, export_activation_amax(export), cpu_inputs, kernels, _model_type(export)
    )
    return assignment, plan


def _model_type(checkpoint: Path) -> str | None:
    try:
        return text_model_type(json.loads((checkpoint / "config.json").read_text()))
    except (OSError, json.JSONDecodeError):
        return None


def write_twin(
    source: Path, export: Path, twin: Path, gpu: str = DEFAULT_TARGET, kernels: KernelSet | None = None
) -> Path:
    """A float32 twin of `export` (quantized from `source`) on `gpu` with `kernels` installed
    (default: vLLM 0.32's CUDA wheel's) in `twin` (see the module docstring); reused when
    `twin.json` names the same export, GPU and kernel set. Written to a temp folder and renamed,
    the marker last, so a killed run never leaves a half-written twin."""
    from quantscope.checkpoint.modeling import load_causal_lm
    from quantscope.quantize.weights import export_weights, quantized_inputs

    gpu, kernels = get_gpu(gpu).name, kernels or DEFAULT_KERNELS
    existing = read_twin(twin)
    if (
        existing is not None
        and existing.get("export") == str(export)
        and existing.get("gpu") == gpu
        and existing.get("kernel_set") == asdict(kernels)
        and existing.get("version") == TWIN_VERSION
    ):
        return twin
    exported = load_causal_lm(export, dtype="float32", tokenizer=False).model
    assignment, plan = export_plan(export, gpu, quantized_inputs(exported), kernels)
    try:
        weights = export_weights(exported, assignment)
    except QuantscopeError as error:
        raise QuantscopeError(f"{export}: {error}; no twin can be built from it") from None
    del exported
    model = load_causal_lm(source, dtype="float32", tokenizer=False).model
    copied = load_export_weights(model, weights)
    twin.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=twin.parent, prefix=f".{twin.name}.partial-"))
    try:
        model.save_pretrained(work)
        for name in _TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, work / name)
        marker = twin_marker(plan, export, source, copied)
        (work / TWIN_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        shutil.rmtree(twin, ignore_errors=True)
        work.rename(twin)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return twin


def twin_marker(plan: TwinPlan, export: Path, source: Path, quantized_tensors: int) -> dict[str, Any]:
    """The `twin.json` of a twin built from `export` (quantized from `source`) with `plan`:
    what `modeling.load_causal_lm` installs (`activations`) and what `describe_twin` says."""
    return {
        "version": TWIN_VERSION,
        "export": str(export),
        "source": str(source),
        "gpu": plan.gpu,
        "quantized_tensors": quantized_tensors,
        "kernel_set": asdict(plan.kernels),
        "runs": plan.describe(),
        "served": [served.to_dict() for served in plan.served],
        "activations": [asdict(point) for point in plan.activations],
    }


__all__ = [
    "TwinPlan",
    "export_activation_amax",
    "export_plan",
    "load_export_weights",
    "plan_twin",
    "twin_marker",
    "write_twin",
]
