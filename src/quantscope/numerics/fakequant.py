"""Fake quantization: quantize-dequantize weights in place, exactly as each storage format rounds.

The profiler measures what a format does to a model without exporting a checkpoint: every
weight is replaced by the value it will have after the exporter's quantize and the kernel's
dequantize. The arithmetic follows AutoRound's reference quantizers (`auto_round/data_type/*`,
round-to-nearest path, iters=0 with the optimised scale search off) so the damage measured here
is the damage of the checkpoint `quantscope quantize` writes with RTN; the tests compare the two
tensor for tensor. AutoRound's default "opt-RTN" searches a slightly better scale per group, so
its real error is at most this one: the profile is a conservative estimate.

Formats, weight `[out, in]`, groups along the input dimension (the reduction axis of the GEMM):
- INT (W4A16 / W8A16): per group of 128 an fp16 scale; symmetric uses the full signed range
  (the largest-magnitude value lands on -2^(b-1)); asymmetric adds an integer zero point.
- NVFP4: FP4 E2M1 values, per 16 an FP8 E4M3 scale, one FP32 global scale per tensor (shared
  by the members of a fused set, as vLLM's fused kernels need).
- MXFP4: FP4 E2M1 values, per 32 a power-of-two (E8M0) scale.
- FP8: E4M3 values with an FP32 scale per output row, per tensor, or per 128x128 block.

Targets are named by their checkpoint tensor names; `resolve_targets` maps them onto model
parameters, including transformers' fused 3D experts (`experts.gate_up_proj [E, 2I, H]`),
which are parameters rather than Linear modules and are quantized expert by expert.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from quantscope.errors import QuantscopeError

FP4_MAX = 6.0
FP8_E4M3_MAX = 448.0
_FP8_MIN_SCALE = 1.0 / (FP8_E4M3_MAX * 512.0)  # vLLM's floor on FP8 scales
_INT_MIN_SCALE = 1e-5  # AutoRound's floor on |scale| so all-zero groups stay finite
_ROW_CHUNK = 4096  # rows per step: bounds temporary float32 memory for huge weights


@dataclass(frozen=True)
class QdqSpec:
    """The numeric recipe of one weight format.

    `kind` is "int", "nvfp4", "mxfp4" or "fp8". `group_size` is the number of consecutive
    input-dimension elements that share a scale: -1 means one scale per output row, 0 one scale
    for the whole tensor. `block` (rows, cols) replaces it for block-scaled FP8.
    """

    kind: str
    bits: int
    group_size: int
    sym: bool = True
    block: tuple[int, int] | None = None


# Keyed by quantscope format names (`quantscope.formats`), settings as AutoRound's schemes
# W4A16, W8A16, NVFP4, MXFP4, FP8_STATIC (per-channel weights) and FP8_BLOCK; fp8_dynamic stores
# the same per-channel weights (`qdq_spec` reads them from its Format).
SPECS: dict[str, QdqSpec] = {
    "w4a16": QdqSpec("int", 4, 128),
    "w4a16_asym": QdqSpec("int", 4, 128, sym=False),
    "w8a16": QdqSpec("int", 8, 128),
    "nvfp4": QdqSpec("nvfp4", 4, 16),
    "mxfp4": QdqSpec("mxfp4", 4, 32),
    "fp8": QdqSpec("fp8", 8, -1),
    "fp8_tensor": QdqSpec("fp8", 8, 0),
    "fp8_block": QdqSpec("fp8", 8, 0, block=(128, 128)),
}
UNQUANTIZED = frozenset({"bf16", "fp16", "fp32"})


def qdq_spec(format_name: str) -> QdqSpec:
    """The QdqSpec of a quantscope format name (`quantscope.formats.get_format`).

    Raises QuantscopeError for unknown names and for 16-bit formats (nothing to quantize).
    """
    if format_name in SPECS:
        return SPECS[format_name]
    from quantscope.formats import get_format

    fmt = get_format(format_name)
    if not fmt.is_quantized:
        raise QuantscopeError(f"format {format_name!r} is 16-bit: there is nothing to fake-quantize")
    if fmt.family.qdq not in _QUANTIZERS:
        raise QuantscopeError(f"format {format_name!r} ({fmt.data_type}) has no fake quantizer")
    # the family names its quantizer (`formats.Family.qdq`); the format gives its grouping
    group = 0 if fmt.block else (fmt.group_size or -1)
    return QdqSpec(fmt.family.qdq, fmt.weight_bits, group, sym=fmt.sym, block=fmt.block)


# ---------------------------------------------------------------- element rounding


def round_to_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values already clamped to [-6, 6] onto the FP4 E2M1 grid, ties to even.

    The grid is 0, 0.5, 1, 1.5 | 2, 3 | 4, 6: uniform steps of 0.5, 1 and 2 per binade, so
    rounding |x| / step half-to-even and scaling back is round-to-nearest-even on the grid.
    """
    magnitude = x.abs()
    step = torch.where(magnitude < 2.0, 0.5, torch.where(magnitude < 4.0, 1.0, 2.0))
    return torch.copysign(torch.round(magnitude / step) * step, x)


def round_to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values onto the FP8 E4M3 grid (torch's cast, round-to-nearest-even)."""
    return x.to(torch.float8_e4m3fn).to(torch.float32)


def _reciprocal(x: torch.Tensor) -> torch.Tensor:
    """1/x with 0 for x == 0, so all-zero groups dequantize to zero instead of NaN."""
    return torch.where(x == 0, torch.zeros_like(x), 1.0 / x)


# ---------------------------------------------------------------- per-format qdq on [rows, cols]


def _grouped(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    """View `[rows, cols]` as `[rows * groups, group_size]`, zero-padding the last group.

    Rows shorter than one group form one group each, as AutoRound does.
    """
    cols = weight.shape[1]
    if group_size == 0:
        return weight.reshape(1, -1), 0
    if group_size < 0 or cols <= group_size:
        return weight, 0
    pad = -cols % group_size
    if pad:
        weight = torch.nn.functional.pad(weight, (0, pad))
    return weight.reshape(-1, group_size), pad


def _ungrouped(groups: torch.Tensor, shape: tuple[int, int], pad: int) -> torch.Tensor:
    rows, cols = shape
    return groups.reshape(rows, cols + pad)[:, :cols]


# The group statistics below are computed in the weight's own dtype where AutoRound does so
# (asymmetric INT ranges, block-FP8 scales): for a bf16 checkpoint that rounding is part of
# the exported scale, and the tests hold the two bit-identical in bf16 and float32.


def _qdq_int(groups: torch.Tensor, spec: QdqSpec) -> torch.Tensor:
    low = groups.amin(dim=-1).clamp(max=0)
    high = groups.amax(dim=-1).clamp(min=0)
    values = groups.float()
    if spec.sym:
        levels = 2 ** (spec.bits - 1)
        # Full-range symmetric: the extreme value's sign flips the scale so it maps to -levels.
        extreme = torch.where(high.abs() < low.abs(), -low, -high)
        scale = (extreme / levels).to(torch.float16).float()
        scale = torch.where(scale < 0, scale.clamp(max=-_INT_MIN_SCALE), scale.clamp(min=_INT_MIN_SCALE))
        scale = scale.unsqueeze(-1)
        return scale * torch.round(values / scale).clamp(-levels, levels - 1)
    levels = 2**spec.bits - 1
    scale = ((high - low) / levels).to(torch.float16).float().clamp(min=_INT_MIN_SCALE)
    zero = torch.round(-low.float() / scale).unsqueeze(-1)
    scale = scale.unsqueeze(-1)
    return scale * ((torch.round(values / scale) + zero).clamp(0, levels) - zero)


def nvfp4_global_scale(amax: torch.Tensor | float) -> torch.Tensor:
    """NVFP4's FP32 per-tensor scale: maps the tensor's |max| to the top of E4M3 x E2M1 (448 x 6)."""
    amax = torch.as_tensor(amax, dtype=torch.float32)
    return FP8_E4M3_MAX * FP4_MAX * _reciprocal(amax)


def _qdq_nvfp4(groups: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    groups = groups.float()
    block_max = groups.abs().amax(dim=-1, keepdim=True)
    block_scale = (global_scale * (block_max * (1.0 / FP4_MAX))).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
    block_scale = round_to_e4m3(block_scale)
    inverse = _reciprocal(block_scale * _reciprocal(global_scale))
    values = round_to_e2m1((groups * inverse).clamp(-FP4_MAX, FP4_MAX))
    return values * _reciprocal(inverse)


MX_SCALE_RULES = ("floor", "even", "rceil")


def _mx_exponent(block_max: torch.Tensor, rule: str) -> torch.Tensor:
    """The E8M0 exponent of MXFP4 blocks by `rule` (see `MX_SCALE_RULES`):

    - "floor": floor(log2 max) - 2, the block max may clip to 6 (AutoRound's `quant_mx`, how it
      exports weights and how its CPU modules round inputs);
    - "even": the same after rounding the max's mantissa to E2M1 precision, the OCP rule
      (compressed-tensors `round_to_power_2`, vLLM's Triton quantizer and its emulation);
    - "rceil": ceil(log2(max / 6)), nothing clips (vLLM's FlashInfer kernels on Blackwell,
      AutoRound's `quant_mx_rceil`).
    """
    safe = torch.where(block_max == 0, 1.0, block_max)
    if rule == "rceil":
        return torch.ceil(torch.log2(safe / FP4_MAX)).clamp(-127, 127)
    if rule == "even":
        bits = safe.contiguous().view(torch.int32)
        safe = torch.bitwise_and(bits + (1 << 21), 0x7F800000).view(torch.float32)
    elif rule != "floor":
        raise QuantscopeError(f"unknown MX scale rule {rule!r}; use one of {', '.join(MX_SCALE_RULES)}")
    return (torch.floor(torch.log2(safe)) - 2).clamp(-127, 127)


def _qdq_mxfp4(groups: torch.Tensor, rule: str = "floor") -> torch.Tensor:
    groups = groups.float()
    scale = torch.pow(2.0, _mx_exponent(groups.abs().amax(dim=-1, keepdim=True), rule))
    values = round_to_e2m1((groups / scale).clamp(-FP4_MAX, FP4_MAX))
    return values * scale


def _qdq_fp8(groups: torch.Tensor, pow2: bool = False) -> torch.Tensor:
    """Dynamic FP8 per row of `groups`: scale |max| / 448, rounded up to a power of two first
    when `pow2` (DeepGEMM's UE8M0 scales: vLLM's `QuantFP8._quantize_group_native` with
    `use_ue8m0`, `model_executor/layers/quantization/input_quant_fp8.py`)."""
    scale = groups.abs().amax(dim=-1, keepdim=True).float() / FP8_E4M3_MAX
    if pow2:
        scale = torch.exp2(torch.ceil(torch.log2(scale)))
    scale = scale.clamp(min=_FP8_MIN_SCALE)
    values = round_to_e4m3((groups.float() / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX))
    return values * scale


def _qdq_fp8_block(weight: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Block-scaled FP8, computed wholly in the weight's dtype as AutoRound's block quantizer is."""
    rows, cols = weight.shape
    block_rows, block_cols = block
    padded = torch.nn.functional.pad(weight, (0, -cols % block_cols, 0, -rows % block_rows))
    tiles = padded.reshape(
        padded.shape[0] // block_rows, block_rows, padded.shape[1] // block_cols, block_cols
    )
    tiles = tiles.permute(0, 2, 1, 3)
    scale = (tiles.abs().amax(dim=(-2, -1), keepdim=True) / FP8_E4M3_MAX).clamp(min=_FP8_MIN_SCALE)
    fp8 = (tiles / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn).to(weight.dtype)
    return (fp8 * scale).permute(0, 2, 1, 3).reshape(padded.shape)[:rows, :cols]


def _qdq_rows(weight: torch.Tensor, spec: QdqSpec, global_scale: torch.Tensor | None) -> torch.Tensor:
    """Quantize-dequantize `[rows, cols]` (float32 result) whose groups never cross a row."""
    groups, pad = _grouped(weight, spec.group_size)
    if spec.kind not in _QUANTIZERS:
        raise QuantscopeError(f"unknown fake-quant kind {spec.kind!r}; use {', '.join(_QUANTIZERS)}")
    return _ungrouped(_QUANTIZERS[spec.kind](groups, spec, global_scale), weight.shape, pad)


# The quantizer of each kind (`QdqSpec.kind`, named by `formats.Family.qdq`), on `[groups, size]`
# rows: (groups, spec, global scale or None) -> float32 values. A family with a new rounding adds
# its function here; `_GLOBAL_SCALED` kinds also take one FP32 scale per tensor (or fused set).
_QUANTIZERS: dict[str, Callable[[torch.Tensor, QdqSpec, torch.Tensor | None], torch.Tensor]] = {
    "int": lambda groups, spec, _: _qdq_int(groups, spec),
    "nvfp4": lambda groups, _, global_scale: _qdq_nvfp4(groups, global_scale),
    "mxfp4": lambda groups, _spec, _scale: _qdq_mxfp4(groups),
    "fp8": lambda groups, _spec, _scale: _qdq_fp8(groups),
}
_GLOBAL_SCALED = frozenset({"nvfp4"})


def quantize_dequantize(
    weight: torch.Tensor, spec: QdqSpec, global_amax: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Return `weight` (`[out, in]`) after the format's quantize and dequantize, in its dtype.

    Computes on the weight's device, `_ROW_CHUNK` rows at a time for formats whose scales never
    span rows, in float32 except where the exporter rounds in the weight's dtype. `global_amax`
    is NVFP4's tensor |max| when several tensors must share one global scale (fused shards);
    by default the weight's own.
    """
    if weight.ndim != 2:
        raise QuantscopeError(
            f"fake quantization takes a 2D [out, in] weight, got shape {tuple(weight.shape)}"
        )
    if spec.block is not None:
        return _qdq_fp8_block(weight, spec.block).to(weight.dtype)
    if spec.group_size == 0:
        return _qdq_rows(weight, spec, None).to(weight.dtype)
    global_scale = None
    if spec.kind in _GLOBAL_SCALED:
        amax = weight.abs().amax().float() if global_amax is None else global_amax
        global_scale = nvfp4_global_scale(amax).to(weight.device)
    out = torch.empty_like(weight)
    for start in range(0, weight.shape[0], _ROW_CHUNK):
        chunk = weight[start : start + _ROW_CHUNK]
        out[start : start + _ROW_CHUNK] = _qdq_rows(chunk, spec, global_scale).to(weight.dtype)
    return out


# ---------------------------------------------------------------- checkpoint names -> parameters


@dataclass(frozen=True)
class ParamSlice:
    """Where one checkpoint weight lives in a loaded model.

    `param` is the model parameter name; `expert` indexes the first axis of a fused 3D expert
    parameter; `rows` (start, stop) selects a shard of fused rows (gate or up in `gate_up_proj`).
    """

    tensor: str
    param: str
    expert: int | None = None
    rows: tuple[int, int] | None = None

    def view(self, model: torch.nn.Module) -> torch.Tensor:
        """The `[out, in]` view of this weight inside the model's parameter (writes go through)."""
        data = model.get_parameter(self.param).data
        if self.expert is not None:
            data = data[self.expert]
        if self.rows is not None:
            data = data[self.rows[0] : self.rows[1]]
        return data


_EXPERT = re.compile(
    r"^(?P<prefix>.*\.experts)\.(?P<index>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$"
)
# Multimodal checkpoints nest the text model; text-only model classes do not.
_PREFIX_REWRITES = (
    ("model.language_model.", "model."),
    ("language_model.model.", "model."),
    ("language_model.", ""),
    ("model.", ""),
    ("", "model."),
)


def _candidate_names(name: str) -> Iterator[str]:
    yield name
    for old, new in _PREFIX_REWRITES:
        if name.startswith(old):
            yield new + name[len(old) :]


def _find_param(name: str, params: Mapping[str, torch.Tensor]) -> str | None:
    return next((candidate for candidate in _candidate_names(name) if candidate in params), None)


def _resolve_one(name: str, shape: tuple[int, ...], params: Mapping[str, torch.Tensor]) -> ParamSlice | None:
    found = _find_param(name, params)
    if found is not None:
        return ParamSlice(name, found) if tuple(params[found].shape) == shape else None
    match = _EXPERT.match(name)
    if match is None:
        return None
    fused = "down_proj" if match["proj"] == "down_proj" else "gate_up_proj"
    found = _find_param(f"{match['prefix']}.{fused}", params)
    if found is None:
        return None
    expert = int(match["index"])
    param_shape = tuple(params[found].shape)
    if len(param_shape) != 3 or expert >= param_shape[0] or param_shape[2] != shape[-1]:
        return None
    if fused == "down_proj":
        return ParamSlice(name, found, expert) if param_shape[1:] == shape else None
    half = param_shape[1] // 2
    if half != shape[0]:
        return None
    rows = (0, half) if match["proj"] == "gate_proj" else (half, 2 * half)
    return ParamSlice(name, found, expert, rows)


def resolve_targets(
    model: torch.nn.Module, tensors: Iterable[tuple[str, tuple[int, ...]]]
) -> list[ParamSlice]:
    """Map checkpoint weights `(name, shape)` onto `model`'s parameters.

    Handles checkpoint-vs-module prefixes (`model.language_model.` vs `model.`) and per-expert
    checkpoint names stored in a fused 3D parameter. A weight whose 2D `[out, in]` shape does not
    match where it lands raises QuantscopeError: quantizing the wrong axis would be silent damage.
    Names absent from the model (vision tower, MTP heads a text model drops) raise too; filter them
    with `loaded_tensors` first.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    slices = []
    for name, shape in tensors:
        found = _resolve_one(name, tuple(shape), params)
        if found is None:
            raise QuantscopeError(
                f"checkpoint tensor {name} {tuple(shape)} has no parameter of that shape in the loaded "
                f"{type(model).__name__}; profile only tensors the model class loads"
            )
        slices.append(found)
    return slices


def fused_expert_slice(model: torch.nn.Module, name: str) -> ParamSlice | None:
    """Where a per-expert checkpoint weight (`...experts.{i}.gate_proj.weight`) lives in a model
    that stores its experts fused, or None (not an expert name, or no fused parameter)."""
    match = _EXPERT.match(name)
    if match is None:
        return None
    params = dict(model.named_parameters(remove_duplicate=False))
    fused = "down_proj" if match["proj"] == "down_proj" else "gate_up_proj"
    found = _find_param(f"{match['prefix']}.{fused}", params)
    if found is None or params[found].ndim != 3:
        return None
    _, rows, cols = params[found].shape
    shape = (rows, cols) if fused == "down_proj" else (rows // 2, cols)
    return _resolve_one(name, shape, params)


def loaded_tensors(model: torch.nn.Module, names: Iterable[str]) -> set[str]:
    """The subset of checkpoint tensor `names` that `model` holds (by name, ignoring shapes)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    present = set()
    for name in names:
        match = _EXPERT.match(name)
        if _find_param(name, params) is not None:
            present.add(name)
        elif match is not None:
            fused = "down_proj" if match["proj"] == "down_proj" else "gate_up_proj"
            if _find_param(f"{match['prefix']}.{fused}", params) is not None:
                present.add(name)
    return present


# ---------------------------------------------------------------- in-place, reversible application


@dataclass(frozen=True)
class QdqTarget:
    """One weight to fake-quantize: where it lives, the format it will be stored in, and the
    dtype it has in the checkpoint (the exporter rounds from that; None: the parameter's own).
    """

    where: ParamSlice
    format: str
    source_dtype: torch.dtype | None = None


_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def checkpoint_dtype(safetensors_dtype: str) -> torch.dtype | None:
    """The torch dtype of a floating safetensors dtype string ("BF16", "F16", "F32"), else None."""
    return _SAFETENSORS_DTYPES.get(safetensors_dtype)


def _expert_pair(tensor: str) -> tuple[str, str] | None:
    """(expert module, "gate_up") for an expert's gate/up shard, which share an NVFP4 global scale."""
    match = _EXPERT.match(tensor)
    if match is None or match["proj"] == "down_proj":
        return None
    return f"{match['prefix']}.{match['index']}", "gate_up"


def shared_amax(
    model: torch.nn.Module, targets: Sequence[QdqTarget], fused_sets: Iterable[Sequence[str]]
) -> dict[str, torch.Tensor]:
    """NVFP4 global |max| per 2D checkpoint tensor, shared across the members of a fused layer.

    `fused_sets` lists module-name tuples (anatomy FusedSet members). vLLM runs a fused linear
    (qkv, gate_up, in_proj_qkvz, in_proj_ba) with one global scale, so the exporter gives every
    shard the scale of the set's largest value. A MoE layer's expert set is not one such layer:
    there each expert's gate and up share a scale (vLLM's w13), and down keeps its own.
    """
    nvfp4 = [t for t in targets if _global_scaled(t.format) and t.where.view(model).ndim == 2]
    amax = {t.where.tensor: t.where.view(model).abs().amax().float().cpu() for t in nvfp4}
    by_module = {t.where.tensor.removesuffix(".weight"): t.where.tensor for t in nvfp4}
    groups: list[list[str]] = [
        [by_module[m] for m in members if m in by_module]
        for members in fused_sets
        if not any(".experts." in f"{m}." for m in members)
    ]
    experts: dict[tuple[str, str], list[str]] = {}
    for tensor in amax:
        pair = _expert_pair(tensor)
        if pair is not None:
            experts.setdefault(pair, []).append(tensor)
    groups.extend(experts.values())
    for members in groups:
        if len(members) > 1:
            joint = torch.stack([amax[m] for m in members]).amax()
            amax.update(dict.fromkeys(members, joint))
    return amax


def _global_scaled(format_name: str) -> bool:
    """Whether `format_name` quantizes with one FP32 global scale per tensor (NVFP4's kinds)."""
    return format_name not in UNQUANTIZED and qdq_spec(format_name).kind in _GLOBAL_SCALED


def _qdq_into(view: torch.Tensor, target: QdqTarget, amax: torch.Tensor | None) -> None:
    """Overwrite `view` with its fake-quantized value; 3D fused experts go expert by expert."""
    spec = qdq_spec(target.format)
    source = view if target.source_dtype is None else view.to(target.source_dtype)
    if view.ndim == 3:
        for expert in range(view.shape[0]):
            view[expert].copy_(quantize_dequantize(source[expert], spec))
    else:
        view.copy_(quantize_dequantize(source, spec, amax))


@contextmanager
def fake_quantized(
    model: torch.nn.Module, targets: Sequence[QdqTarget], fused_sets: Iterable[Sequence[str]] = ()
) -> Iterator[None]:
    """Fake-quantize `targets` in place for the duration of the `with` block, then restore them.

    Weights are processed one at a time and only their originals are kept (on the CPU), so the
    extra memory is the size of the targets, not of the model. Restoration is bit-exact, also
    when the block raises. 16-bit targets are left alone.
    """
    amax = shared_amax(model, targets, fused_sets)
    originals: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for target in targets:
                if target.format in UNQUANTIZED:
                    continue
                view = target.where.view(model)
                originals.append((view, view.detach().to("cpu", copy=True)))
                _qdq_into(view, target, amax.get(target.where.tensor))
        yield
    finally:
        with torch.no_grad():
            for view, original in reversed(originals):
                view.copy_(original.to(view.device))


__all__ = [
    "FP4_MAX",
    "FP8_E4M3_MAX",
    "MX_SCALE_RULES",
    "SPECS",
    "UNQUANTIZED",
    "ParamSlice",
    "QdqSpec",
    "QdqTarget",
    "checkpoint_dtype",
    "fake_quantized",
    "fused_expert_slice",
    "loaded_tensors",
    "nvfp4_global_scale",
    "qdq_spec",
    "quantize_dequantize",
    "resolve_targets",
    "round_to_e2m1",
    "round_to_e4m3",
    "shared_amax",
]
