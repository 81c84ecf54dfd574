"""Activation fake quantization: the inputs of each layer rounded as the served kernel rounds them.

NVFP4 and MXFP4 as AutoRound exports them are W4A4 and FP8 is W8A8: at serving time the GPU
quantizes every layer input before the GEMM, as its kernel does, which is not always as declared
(`quantscope.numerics.served`: per GPU, layer kind and kernel set). Rounding the weights alone
(`fakequant`) misses that damage, so the twins and the profiler also pass each quantized layer's
input through the emulation here, in the rounding the served kernel applies (`ActPoint.act`).
The arithmetic is AutoRound's, which its CPU modules (`auto_round/experimental/qmodules/*.py`)
and vLLM's kernels share; tests compare it with AutoRound's and vLLM's own functions on the same
inputs:

- NVFP4 (AutoRound `nv_fp4_with_static_gs`): groups of 16 along the input dimension, an E4M3 scale
  computed from each group of each activation (dynamic), and one static FP32 global scale per
  layer, 448 * 6 / amax, with amax calibrated (the export's `input_global_scale`).
- MXFP4 (AutoRound `quant_mx`, `mx_fp`): groups of 32, a power-of-two E8M0 scale per group,
  dynamic. The exponent rule differs between the kernels that run it (`fakequant._mx_exponent`):
  AutoRound floors (the block max may clip to 6), compressed-tensors and vLLM's Triton path
  round the max's mantissa first (OCP), vLLM's Blackwell FlashInfer kernels round up (nothing
  clips). Each point carries the rule of the kernel it emulates.
- FP8 (`FP8_STATIC`): one static per-tensor scale amax / 448 (the export's `input_scale`);
  fp8_dynamic (compressed-tensors' FP8_DYNAMIC, the fp8 preset): a dynamic scale per token, row
  |max| / 448, as vLLM's CUTLASS / Triton FP8 paths compute it (`_fp8_per_token`); block FP8
  (`FP8_BLOCK`): a dynamic scale per token and group of 128, rounded up to a power of
  two where DeepGEMM runs it (UE8M0); Humming's W4A8 for MXFP4 weights on sm90: FP8 e4m3 with a
  dynamic scale per token.

vLLM quantizes an input once per fused GEMM (qkv, gate_up), so the shards of a fused set share one
static amax (the largest, as AutoRound's `update_fused_layer_global_scales` unifies them), and a
MoE layer's experts share one for gate/up (the dispatched tokens are quantized once) while each
expert's down projection keeps its own (AutoRound's `set_amax_for_all_moe_layers`): what the
export stores. Where the serving kernel takes one scale per layer (FlashInfer's NVFP4 MoE, every
static FP8 MoE: `Served.shared_scale`), `share_across_experts` gives every expert the layer's
largest, for gate/up and for down.

Where the inputs are: a pre-hook on each quantized `nn.Linear`; for transformers' fused 3-D
experts (`experts.gate_up_proj [E, 2I, H]`, used through `F.linear` on one expert's slice) a
`TorchFunctionMode` active during the experts module's forward recognises the slice and its
expert. An experts implementation that bypasses `F.linear` is refused rather than left unrounded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch.overrides import TorchFunctionMode

from quantscope.errors import QuantscopeError
from quantscope.numerics.fakequant import (
    _EXPERT,
    _FP8_MIN_SCALE,
    FP4_MAX,
    FP8_E4M3_MAX,
    _candidate_names,
    _qdq_fp8,
    _qdq_mxfp4,
    _qdq_nvfp4,
    nvfp4_global_scale,
    round_to_e2m1,
    round_to_e4m3,
)


def _expert(module: str) -> re.Match | None:
    """The per-expert parts (prefix, index, proj) of `...experts.{i}.gate_proj|up_proj|down_proj`."""
    return _EXPERT.match(f"{module}.weight")


@dataclass(frozen=True)
class ActSpec:
    """How one format quantizes layer inputs: `kind` "nvfp4", "mxfp4" or "fp8"; `group_size`
    elements per scale along the input dimension (0: one scale per tensor, -1: one per token);
    `static`: the scale (or NVFP4's global scale) comes from a calibrated amax rather than from
    each activation; `first_two_dims`: a per-token scale is one per position of the input's first
    two dims, as compressed-tensors' TOKEN strategy computes it (`compute_dynamic_scales_and_zp`):
    per token of a [batch, seq, hidden] input, one per tensor of a 2-D one."""

    kind: str
    group_size: int
    static: bool
    first_two_dims: bool = False
    compressed_tensors: bool = False
    """NVFP4 with compressed-tensors' arithmetic (`_qdq_nvfp4_ct`) rather than AutoRound's."""


_ACT_SPECS = {
    "nvfp4": ActSpec("nvfp4", 16, static=True),
    "nvfp4_ct": ActSpec("nvfp4", 16, static=True, compressed_tensors=True),
    "mxfp4": ActSpec("mxfp4", 32, static=False),
    "fp8_tensor": ActSpec("fp8", 0, static=True),
    "fp8_token": ActSpec("fp8", -1, static=False),
    "fp8_token_ct": ActSpec("fp8", -1, static=False, first_two_dims=True),
    "fp8_group": ActSpec("fp8", 128, static=False),
}
"""The activation roundings by `quantscope.numerics.served.ACT_NAMES` key; group_size -1 is one scale per
token (row)."""


def act_spec(format_name: str) -> ActSpec | None:
    """The activation quantization `format_name` declares (AutoRound's scheme table), or None for
    weight-only and 16-bit formats."""
    from quantscope.formats import get_format
    from quantscope.numerics.served import declared_act

    act = declared_act(get_format(format_name))
    return _ACT_SPECS[act] if act else None


def served_spec(act: str) -> ActSpec:
    """The rounding called `act` (a `quantscope.numerics.served.ACT_NAMES` key other than "")."""
    if act not in _ACT_SPECS:
        raise QuantscopeError(f"unknown activation rounding {act!r}; use one of {', '.join(_ACT_SPECS)}")
    return _ACT_SPECS[act]


def qdq_activation(
    x: torch.Tensor,
    spec: ActSpec,
    amax: float | torch.Tensor | None = None,
    scale_rule: str = "floor",
    pow2: bool = False,
) -> torch.Tensor:
    """`x` (`[..., in]`) after the format's activation quantize-dequantize, in x's dtype.

    `amax` is the calibrated |max| of a static scale; None falls back to x's own |max| (what
    AutoRound does for a layer it never calibrated). `scale_rule` picks MXFP4's E8M0 exponent
    (`fakequant.MX_SCALE_RULES`: the kernels that serve MXFP4 disagree on it); `pow2` rounds
    dynamic FP8 scales up to powers of two (DeepGEMM).
    """
    if x.numel() == 0:
        return x
    values = x.float()
    if spec.static:
        amax = values.abs().amax() if amax is None else torch.as_tensor(amax, dtype=torch.float32)
        amax = amax.to(values.device)
    if spec.group_size == 0:
        return _fp8_static(values, amax).to(x.dtype)
    if spec.group_size < 0:
        return _fp8_per_token(values, spec.first_two_dims).to(x.dtype)
    cols = values.shape[-1]
    group = spec.group_size
    pad = -cols % group
    groups = torch.nn.functional.pad(values, (0, pad)) if pad else values
    groups = groups.reshape(-1, group)
    if spec.kind == "nvfp4":
        quantize = _qdq_nvfp4_ct if spec.compressed_tensors else _qdq_nvfp4
        out = quantize(groups, nvfp4_global_scale(amax))
    elif spec.kind == "mxfp4":
        out = _qdq_mxfp4(groups, scale_rule)
    else:
        out = _qdq_fp8(groups, pow2)
    out = out.reshape(*values.shape[:-1], cols + pad)[..., :cols]
    return out.to(x.dtype)


def _qdq_nvfp4_ct(groups: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    # compressed-tensors' NVFP4 input rounding on the CPU path, step by step, since one ulp of a
    # scale flips FP4 roundings that compound over a real model's layers (quantization/utils/
    # helpers.py `calculate_qparams`: |max| / 6 as a division, times the global scale, clamped and
    # cast to E4M3, a zero scale replaced by E4M3's eps 0.125; lifecycle/forward_helpers.py
    # `_quantize_dequantize`: scale / global scale, x divided by it, rounded to E2M1, multiplied back).
    block_max = groups.abs().amax(dim=-1, keepdim=True)
    scale = round_to_e4m3((global_scale * (block_max / FP4_MAX)).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX))
    scale = torch.where(scale == 0, torch.full_like(scale, 0.125), scale)
    effective = scale / global_scale
    return round_to_e2m1((groups / effective).clamp(-FP4_MAX, FP4_MAX)) * effective


def fp8_static_scale(amax: torch.Tensor | float) -> torch.Tensor:
    """FP8's per-tensor input scale for a calibrated |max| (float32, as AutoRound computes it)."""
    return (torch.as_tensor(amax, dtype=torch.float32) / FP8_E4M3_MAX).clamp(min=_FP8_MIN_SCALE)


def _fp8_per_token(values: torch.Tensor, first_two_dims: bool = False) -> torch.Tensor:
    # Humming's dynamic per-token FP8 input quantization (its W4A8 path): scale = row |max| / 448,
    # floored at 1e-30 rather than vLLM's 1 / (448 * 512) (`humming/testing/process_input.py`,
    # `quant_input_ref`, the reference its CUDA kernel is tested against). vLLM's own per-token
    # quantization for fp8_dynamic (`_custom_ops.scaled_fp8_quant(use_per_token_if_dynamic=True)`)
    # is the same rounding; the floors differ only for a row whose |max| is below 1/512.
    # compressed-tensors reduces over every dim but the first two instead (helpers.py,
    # `compute_dynamic_scales_and_zp`, TOKEN); with none left (a 2-D input) it takes the whole
    # tensor's min and max: one dynamic scale per tensor.
    dims = tuple(range(2, values.ndim)) if first_two_dims else (-1,)
    amax = values.abs().amax(dim=dims, keepdim=True) if dims else values.abs().amax()
    scale = (amax / FP8_E4M3_MAX).clamp(min=1e-30)
    return round_to_e4m3((values / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)) * scale


def _fp8_static(values: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    scale = fp8_static_scale(amax)
    return round_to_e4m3((values / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)) * scale


# ---------------------------------------------------------------- where the inputs are


@dataclass(frozen=True)
class ActPoint:
    """One quantized layer input: `module` is the checkpoint module name (a linear layer, or one
    expert's `experts.{i}.gate_proj|up_proj|down_proj`), `format` the weight's format, `amax` the
    calibrated |max| of a static scale, `scale_rule` MXFP4's exponent rule on the kernel that runs
    it, `act` the rounding that kernel applies (`quantscope.numerics.served.Served.act`; "" = the format's
    declared one) and `pow2` whether its dynamic FP8 scales are powers of two."""

    module: str
    format: str
    amax: float | None = None
    scale_rule: str = "floor"
    act: str = ""
    pow2: bool = False

    @property
    def spec(self) -> ActSpec:
        """The activation rounding at this point."""
        if self.act:
            return served_spec(self.act)
        found = act_spec(self.format)
        if found is None:
            raise QuantscopeError(f"{self.module}: format {self.format!r} does not quantize activations")
        return found


Transform = Callable[[ActPoint, torch.Tensor], torch.Tensor]


class _ExpertInputs(TorchFunctionMode):
    """Applies `transform` to the input of `F.linear` calls on one expert's slice of a fused 3-D
    experts parameter; `points[(param name, expert)]` says which."""

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        points: Mapping[tuple[str, int], ActPoint],
        transform: Transform,
    ) -> None:
        super().__init__()
        self.params, self.points, self.transform = params, points, transform
        self.calls = 0

    def _expert_of(self, weight: torch.Tensor) -> tuple[str, int] | None:
        for name, param in self.params.items():
            if weight.untyped_storage().data_ptr() == param.untyped_storage().data_ptr():
                return name, (weight.storage_offset() - param.storage_offset()) // param.stride(0)
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear and len(args) >= 2:
            where = self._expert_of(args[1])
            if where is not None:
                self.calls += 1
                point = self.points.get(where)
                if point is not None:
                    args = (self.transform(point, args[0]), *args[1:])
        return func(*args, **kwargs)


def _find_module(name: str, modules: Mapping[str, torch.nn.Module]) -> str | None:
    return next((candidate for candidate in _candidate_names(name) if candidate in modules), None)


def _linear_hook(point: ActPoint, transform: Transform) -> Callable:
    def hook(_module: torch.nn.Module, args: tuple) -> tuple:
        return (transform(point, args[0]), *args[1:])

    return hook


def _expert_hooks(
    module: torch.nn.Module, points: Mapping[tuple[str, int], ActPoint], transform: Transform, name: str
) -> list:
    params = {p: getattr(module, p) for p in ("gate_up_proj", "down_proj")}
    state: dict[str, _ExpertInputs] = {}

    def enter(_module: torch.nn.Module, args: tuple) -> None:
        state["mode"] = _ExpertInputs(params, points, transform)
        state["mode"].__enter__()

    def leave(_module: torch.nn.Module, args: tuple, _output: object) -> None:
        mode = state.pop("mode", None)
        if mode is None:
            return
        mode.__exit__(None, None, None)
        if mode.calls == 0 and args and isinstance(args[0], torch.Tensor) and args[0].numel():
            raise QuantscopeError(
                f"{name}: the experts ran without F.linear on their weights, so their inputs cannot be "
                "quantized; load the model with experts_implementation='eager'"
            )

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave, always_call=True)]


def _locate(name: str, modules: Mapping[str, torch.nn.Module]) -> tuple[str, str | None, int]:
    """Where a point's input is: (linear module, None, -1), or (fused experts module, "gate_up_proj"
    or "down_proj", expert index); ("", None, -1) when `install` cannot reach it."""
    found = _find_module(name, modules)
    if found is not None and isinstance(modules[found], torch.nn.Linear):
        return found, None, -1
    match = _expert(name)
    parent = _find_module(match["prefix"], modules) if match else None
    if parent is None or not hasattr(modules[parent], "gate_up_proj"):
        return "", None, -1
    return parent, "down_proj" if match["proj"] == "down_proj" else "gate_up_proj", int(match["index"])


def hookable(model: torch.nn.Module, names: Iterable[str]) -> list[str]:
    """The checkpoint module names among `names` whose inputs `install` can reach (linear layers
    and per-expert names of fused experts; not, say, a MoE router with its own module class)."""
    modules = dict(model.named_modules())
    return [name for name in names if _locate(name, modules)[0]]


def install(model: torch.nn.Module, points: Iterable[ActPoint], transform: Transform) -> list:
    """Hook `transform(point, input)` in front of every point's layer; returns the hook handles
    (call `.remove()` on each to undo). Raises QuantscopeError for a point the model lacks."""
    modules = dict(model.named_modules())
    experts: dict[str, dict[tuple[str, int], ActPoint]] = {}
    handles = []
    for point in points:
        module, param, index = _locate(point.module, modules)
        if not module:
            raise QuantscopeError(
                f"activation quantization names {point.module}, which the loaded "
                f"{type(model).__name__} has no linear layer or fused expert for"
            )
        if param is None:
            handles.append(modules[module].register_forward_pre_hook(_linear_hook(point, transform)))
        else:
            experts.setdefault(module, {})[(param, index)] = point
    if experts:
        _eager_experts(model)
    for parent, by_expert in experts.items():
        handles.extend(_expert_hooks(modules[parent], by_expert, transform, parent))
    return handles


def _eager_experts(model: torch.nn.Module) -> None:
    # transformers picks grouped/batched matmul kernels for fused experts by default, which never
    # call F.linear on one expert's slice; the eager loop computes the same thing expert by expert.
    config = getattr(model, "config", None)
    if getattr(config, "_experts_implementation", "eager") not in (None, "eager") and hasattr(
        model, "set_experts_implementation"
    ):
        model.set_experts_implementation("eager")


def _quantize(point: ActPoint, x: torch.Tensor) -> torch.Tensor:
    return qdq_activation(x, point.spec, point.amax, point.scale_rule, point.pow2)


def install_activation_quantization(model: torch.nn.Module, points: Iterable[ActPoint]) -> list:
    """Quantize-dequantize every point's layer input from now on; returns the hook handles."""
    return install(model, points, _quantize)


@contextmanager
def activations_quantized(model: torch.nn.Module, points: Sequence[ActPoint]) -> Iterator[None]:
    """Quantize the inputs of `points` for the duration of the `with` block."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_experts_implementation", None)
    handles = install_activation_quantization(model, points)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        if previous not in (None, getattr(config, "_experts_implementation", None)):
            model.set_experts_implementation(previous)


# ---------------------------------------------------------------- calibration


def _gate_up_key(module: str) -> str | None:
    match = _expert(module)
    return match["prefix"] if match and match["proj"] != "down_proj" else None


def calibrate(
    model: torch.nn.Module,
    points: Sequence[ActPoint],
    run: Callable[[], None],
    fused_sets: Iterable[Sequence[str]] = (),
) -> list[ActPoint]:
    """`points` with `amax` measured: `run()` feeds the calibration data, every point's input
    |max| is recorded, then shared as vLLM's fused GEMMs need (see the module docstring).
    Points whose format needs no static scale are returned unchanged."""
    static = [p for p in points if p.spec.static]
    seen: dict[str, float] = {}

    def record(point: ActPoint, x: torch.Tensor) -> torch.Tensor:
        if x.numel():
            seen[point.module] = max(seen.get(point.module, 0.0), float(x.detach().abs().amax()))
        return x

    handles = install(model, static, record)
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return share_amax(points, seen, fused_sets)


def share_amax(
    points: Sequence[ActPoint], amax: Mapping[str, float], fused_sets: Iterable[Sequence[str]] = ()
) -> list[ActPoint]:
    """Points with `amax` (module -> |max|) shared: fused sets take their largest, a MoE layer's
    gate/up inputs the layer's largest, and an expert's down projection never seen in calibration
    the largest of its siblings."""
    shared = dict(amax)
    groups = [list(members) for members in fused_sets]
    by_layer: dict[str, list[str]] = {}
    for point in points:
        key = _gate_up_key(point.module)
        if key is not None:
            by_layer.setdefault(key, []).append(point.module)
    groups += by_layer.values()
    downs: dict[str, list[str]] = {}
    for point in points:
        match = _expert(point.module)
        if match and match["proj"] == "down_proj":
            downs.setdefault(match["prefix"], []).append(point.module)
    for members in groups:
        values = [shared[m] for m in members if m in shared]
        if values:
            shared.update(dict.fromkeys(members, max(values)))
    for members in downs.values():
        values = [shared[m] for m in members if m in shared]
        for member in members:
            if member not in shared and values:
                shared[member] = max(values)
    return [replace(p, amax=shared.get(p.module)) if p.spec.static else p for p in points]


def share_across_experts(points: Sequence[ActPoint], shared: Callable[[ActPoint], bool]) -> list[ActPoint]:
    """`points` where every static expert input for which `shared(point)` holds takes its MoE
    layer's largest |max|: one scale for all experts' gate/up inputs and one for all their down
    inputs, as kernels with one activation scale per layer use them (vLLM's
    `amax_for_moe_activation_quant`, `quantization/utils/quant_utils.py`: the max over experts of
    the per-expert scales). Other points are returned unchanged."""
    layers: dict[tuple[str, bool], float] = {}
    chosen = [p for p in points if p.amax is not None and p.spec.static and _expert(p.module) and shared(p)]
    for point in chosen:
        match = _expert(point.module)
        key = (match["prefix"], match["proj"] == "down_proj")
        layers[key] = max(layers.get(key, 0.0), point.amax)
    picked = {id(p) for p in chosen}

    def layer_max(point: ActPoint) -> float:
        match = _expert(point.module)
        return layers[(match["prefix"], match["proj"] == "down_proj")]

    return [replace(p, amax=layer_max(p)) if id(p) in picked else p for p in points]


__all__ = [
    "ActPoint",
    "ActSpec",
    "act_spec",
    "activations_quantized",
    "calibrate",
    "hookable",
    "install",
    "install_activation_quantization",
    "qdq_activation",
    "served_spec",
    "share_across_experts",
    "share_amax",
]
