"""Evaluation twins: an export's own weights, run in float as a target GPU runs them.

A twin is a plain float32 checkpoint holding the weights the export really stores, dequantized
(each quantized module of the export, as transformers loads it with AutoRound's modules, read
out one input column at a time with its activation rounding switched off), so whatever rounding
AutoRound chose (RTN, its default optimised RTN, or tuned iterations) is what is evaluated. To
that it adds the activation rounding the target GPU applies when vLLM serves the export
(`profile.actquant`, decided per format by `gpus.served_activations`). Activation rounding cannot
live in a safetensors file, so the twin's own manifest (`twin.json`) names every quantized layer
input with its format and calibrated |max|, and `modeling.load_causal_lm` installs the hooks
whenever it loads a twin.

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError
from quantscope.gpus import DEFAULT_TARGET, get_gpu
from quantscope.served import served_activations, with_cpu_inputs

TWIN_MARKER = "twin.json"
TWIN_VERSION = 2
"""Bumped whenever a twin's contents would change for the same export and GPU (2: static
activation |max| reproducing the stored scales to the bit); an older twin is rebuilt, not reused."""
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
)


@dataclass(frozen=True)
class TwinPlan:
    """What a twin emulates for one export on one target: `gpu` (a `quantscope.gpus` name),
    `activations` (module, format, amax) for every layer input the target quantizes, and
    `kernels` (format -> what the target runs, e.g. "Marlin weight-only FP4 ...")."""

    gpu: str
    activations: tuple[Any, ...]
    kernels: Mapping[str, str]


def export_activation_amax(export: Path) -> dict[str, float]:
    """Module name -> calibrated input |max| stored in an export's static activation scales.

    Each |max| is the float32 value from which the emulation (`profile.actquant`, float32 like
    AutoRound) recomputes exactly the stored scale: the plain inverse can be one unit in the last
    place off, and on a real model a scale one ulp off flips enough FP4 roundings of activations
    to move the twin's next-token distribution by ~0.1 nats (SmolLM2, 256-token windows).
    """
    from safetensors import safe_open

    from quantscope.profile.actquant import fp8_static_scale
    from quantscope.profile.fakequant import FP4_MAX, FP8_E4M3_MAX, nvfp4_global_scale
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
) -> TwinPlan:
    """The activation points of an export whose modules are stored as `assignment` says (module ->
    format), run on `gpu`, with static |max| from `amax` (module -> value; see
    `export_activation_amax`). A static point the export holds no scale for is an error. For the
    "transformers" target, `cpu_inputs` (`quantize.weights.quantized_inputs` of the loaded export)
    says which inputs the CPU path really rounds, and with which MXFP4 exponent rule: it runs MoE
    experts that compressed-tensors decompressed into fused parameters with 16-bit inputs. vLLM
    targets round MXFP4 inputs up ("rceil", its Blackwell kernels)."""
    from quantscope.profile.actquant import ActPoint, act_spec

    target = get_gpu(gpu)
    kernels, points = {}, []
    for module, fmt in sorted(assignment.items()):
        served = served_activations(fmt, target)
        if target.capability == 0 and cpu_inputs is not None:
            served = with_cpu_inputs(served, cpu_inputs.get(module))
        if served.format != "bf16" and served.kernel != "16-bit":
            kernels[served.format] = served.kernel
        if not served.activations:
            continue
        spec = act_spec(fmt)
        if spec.static and module not in amax:
            raise QuantscopeError(
                f"the export stores {module} as {fmt} but holds no activation scale for it; "
                "re-export it with quantscope quantize"
            )
        points.append(ActPoint(module, fmt, amax.get(module) if spec.static else None, served.mx_scale_rule))
    return TwinPlan(target.name, tuple(points), kernels)


def load_export_weights(model: Any, weights: Mapping[str, Any]) -> int:
    """Copy `weights` (module name -> `[out, in]`) into the loaded source `model`, fused experts
    included; returns how many were copied. Shapes must match (QuantscopeError otherwise)."""
    import torch

    from quantscope.profile.fakequant import resolve_targets

    slices = resolve_targets(model, [(f"{name}.weight", tuple(w.shape)) for name, w in weights.items()])
    with torch.no_grad():
        for where, weight in zip(slices, weights.values(), strict=True):
            view = where.view(model)
            view.copy_(weight.to(view.dtype))
    return len(slices)


def export_plan(
    export: Path, gpu: str, cpu_inputs: Mapping[str, str] | None = None
) -> tuple[Mapping[str, str], TwinPlan]:
    """The manifest's assignment of an export and its twin plan on `gpu` (see `plan_twin`)."""
    from quantscope.quantize import read_manifest

    assignment = read_manifest(export).assignment
    return assignment, plan_twin(assignment, gpu, export_activation_amax(export), cpu_inputs)


def write_twin(source: Path, export: Path, twin: Path, gpu: str = DEFAULT_TARGET) -> Path:
    """A float32 twin of `export` (quantized from `source`) on `gpu` in `twin` (see the module
    docstring); reused when `twin.json` names the same export and GPU. Written to a temp folder
    and renamed, the marker last, so a killed run never leaves a half-written twin."""
    from quantscope.modeling import load_causal_lm
    from quantscope.quantize.weights import export_weights, quantized_inputs

    gpu = get_gpu(gpu).name
    existing = read_twin(twin)
    if (
        existing is not None
        and existing.get("export") == str(export)
        and existing.get("gpu") == gpu
        and existing.get("version") == TWIN_VERSION
    ):
        return twin
    exported = load_causal_lm(export, dtype="float32", tokenizer=False).model
    assignment, plan = export_plan(export, gpu, quantized_inputs(exported))
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
        marker = {
            "version": TWIN_VERSION,
            "export": str(export),
            "source": str(source),
            "gpu": gpu,
            "quantized_tensors": copied,
            "kernels": dict(plan.kernels),
            "activations": [asdict(point) for point in plan.activations],
        }
        (work / TWIN_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        shutil.rmtree(twin, ignore_errors=True)
        work.rename(twin)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return twin


def read_twin(directory: str | Path) -> dict[str, Any] | None:
    """A twin's marker (`twin.json`) as a dict, or None when `directory` is not a twin."""
    path = Path(directory) / TWIN_MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise QuantscopeError(
            f"{path}: not a readable twin manifest ({error}); delete the twin folder"
        ) from None


def describe_twin(directory: str | Path) -> str | None:
    """One sentence saying what evaluating the twin in `directory` measures (None: not a twin).

    Reads only `twin.json`; a missing or remote directory is simply not a twin."""
    try:
        marker = read_twin(directory) if Path(str(directory)).is_dir() else None
    except QuantscopeError:
        return None
    if not marker:
        return None
    export = Path(str(marker.get("export", "?"))).name
    kernels = "; ".join(f"{fmt}: {kernel}" for fmt, kernel in sorted(marker.get("kernels", {}).items()))
    rounded = len(marker.get("activations", ()))
    activation = (
        f"activation rounding emulated on {rounded} layer inputs"
        if rounded
        else "weight-only there (no activation rounding)"
    )
    return (
        f"an emulation: the float32 twin of export {export!r} (its own dequantized weights) run on the CPU "
        f"as vLLM runs it on {marker.get('gpu', '?')}, {activation}"
        + (f" ({kernels})" if kernels else "")
        + "; on that GPU, evaluate the export itself with vLLM"
    )


def twin_activations(directory: str | Path) -> Sequence[Any]:
    """The activation points a twin's marker names (empty for a non-twin or a weight-only twin)."""
    from quantscope.profile.actquant import ActPoint

    marker = read_twin(directory)
    if not marker:
        return ()
    try:
        return tuple(ActPoint(**p) for p in marker.get("activations", ()))
    except (KeyError, TypeError) as error:
        raise QuantscopeError(f"{Path(directory) / TWIN_MARKER}: bad activation entry ({error})") from None


__all__ = [
    "TWIN_MARKER",
    "TwinPlan",
    "export_activation_amax",
    "export_plan",
    "load_export_weights",
    "plan_twin",
    "read_twin",
    "twin_activations",
    "write_twin",
]
