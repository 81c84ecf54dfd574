"""What an export's weights really are, and whether they hold the source's within rounding.

`dequantized_weight` reads the `[out, in]` weight a loaded quantized module computes with, so a
twin (`quantscope.quantize.twin`) evaluates exactly the export's rounding and `verify` can compare it
with the source. `weight_errors` measures, per quantized module, the export's relative error
against the source next to the error plain round-to-nearest (`profile.fakequant`) makes in the
same format. A legitimate export is within rounding of its source: RTN matches it, AutoRound's
optimised RTN and its tuning move values by about a step (measured ratios 0.84–1.32, see
`MAX_ERROR_RATIO`). A layer whose scales are off by a factor of 2 has an error of about 1, five
to forty times its rounding error, and two swapped experts about 1.4; the KL divergence alone
cannot tell every such layer from a legitimately coarse format.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError
from quantscope.quantize.checks import Check, detail_list

MAX_ERROR_RATIO = 3.0
"""A quantized module fails when its error against the source exceeds this multiple of RTN's.
Measured (benchmarks/real_model.py and tests/test_verify_broken.py): legitimate exports 0.84–1.32
on the bundled model and SmolLM2-135M across W4A16, NVFP4, MXFP4 and FP8 (RTN and AutoRound's
optimised RTN); one layer's scales doubled 8.6–39; two experts swapped 14–57."""

_READ_COLUMNS = 1024  # input columns read per forward pass when dequantizing a layer


def input_features(module: Any) -> int | None:
    """The input width of a linear-like module (transformers' `in_features`, AutoGPTQ's `infeatures`)."""
    return getattr(module, "in_features", None) or getattr(module, "infeatures", None)


@contextmanager
def _activations_off(module: Any) -> Iterator[None]:
    """AutoRound's W4A4 / W8A8 modules round their input first; off while reading the weight."""
    saved = module.__dict__.get("pre_dequantized_input")
    if hasattr(module, "qdq_input"):
        module.qdq_input = lambda x: x
    if hasattr(module, "pre_dequantized_input"):
        module.pre_dequantized_input = True
    try:
        yield
    finally:
        module.__dict__.pop("qdq_input", None)
        if saved is not None:
            module.pre_dequantized_input = saved


def dequantized_weight(module: Any) -> Any:
    """The `[out, in]` float32 weight a loaded quantized module computes with: its output for each
    unit input vector minus its bias, `_READ_COLUMNS` columns per pass (any AutoRound module)."""
    import torch

    weight, scale = getattr(module, "weight", None), getattr(module, "weight_scale", None)
    if getattr(module, "quantization_scheme", None) is not None and weight is not None:
        if _still_compressed(module) and scale is not None:
            # compressed-tensors FP8 (`float-quantized`) stays compressed in transformers: E4M3
            # values and their scale (`[out, 1]` per channel, `[1]` per tensor); vLLM multiplies
            # them in its fp32 epilogue, so read the exact product.
            return (weight.detach().float() * scale.detach().float()).cpu()
        return weight.detach().float().cpu()  # compressed-tensors, decompressed by `_decompress`
    if weight is not None and scale is not None and scale.ndim == 1 and weight.shape[:1] == scale.shape:
        # Per-channel FP8: AutoRound's CPU module holds the E4M3 values (exact in bf16) and multiplies
        # the scale out in bf16 (`qmodules/fp8_static.py`); vLLM applies it in the fp32 GEMM
        # epilogue, so read the exact product.
        return (weight.float() * scale.float().unsqueeze(1)).cpu()
    columns = input_features(module)
    device = next((t.device for t in module.buffers()), torch.device("cpu"))
    with torch.no_grad(), _activations_off(module):
        bias = module(torch.zeros(1, columns, device=device)).float()
        parts = []
        for start in range(0, columns, _READ_COLUMNS):
            stop = min(columns, start + _READ_COLUMNS)
            unit = torch.zeros(stop - start, columns, device=device)
            unit[:, start:stop] = torch.eye(stop - start, device=device)
            parts.append((module(unit).float() - bias).T)
    return torch.cat(parts, dim=1).cpu()


def _still_compressed(module: Any) -> bool:
    from compressed_tensors.quantization import QuantizationStatus

    return getattr(module, "quantization_status", None) == QuantizationStatus.COMPRESSED


def export_weights(model: Any, assignment: Mapping[str, str]) -> dict[str, Any]:
    """Module name -> the `[out, in]` float32 weight a loaded export computes with, for every
    quantized entry of `assignment`: read from its quantized module, or, for MoE experts that
    transformers decompressed into its fused 3-D parameters (compressed-tensors MXFP4/NVFP4), from
    the expert's slice. Raises QuantscopeError naming a layer transformers built as a plain 16-bit
    layer or not at all: its stored weights were not read as the export stores them."""
    from quantscope.formats import get_format
    from quantscope.numerics.fakequant import fused_expert_slice

    _decompress(model)
    modules = dict(model.named_modules())
    weights = {}
    for name, fmt in assignment.items():
        if not get_format(fmt).is_quantized:
            continue
        module = modules.get(name)
        plain = type(module).__name__ == "Linear" and getattr(module, "quantization_scheme", None) is None
        if module is not None and not plain and input_features(module):
            weights[name] = dequantized_weight(module)
            continue
        where = fused_expert_slice(model, f"{name}.weight") if module is None else None
        if where is None:
            raise QuantscopeError(
                f"transformers built no quantized layer for {name} ({fmt}), so its stored weights "
                "were not read; the checkpoint's quantization_config does not describe this layer"
            )
        weights[name] = where.view(model).detach().float().cpu()
    return weights


def quantized_inputs(model: Any) -> dict[str, str]:
    """Modules of a loaded export whose forward rounds their input, with the MXFP4 exponent rule
    it uses (`profile.fakequant.MX_SCALE_RULES`): AutoRound's W4A4 / W8A8 modules ("floor", its
    `quant_mx`) and compressed-tensors layers with input activations ("even", its
    `round_to_power_2`). What the CPU path quantizes."""
    found = {}
    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        if hasattr(module, "qdq_input"):
            found[name] = "floor"
        elif scheme is not None and scheme.input_activations is not None:
            found[name] = "even"
    return found


def load_export_float32(export: Path | str) -> Any:
    """An export as transformers' CPU path runs it (AutoRound's or compressed-tensors' modules,
    activation quantization as they declare it), in float32 throughout: compressed-tensors layers
    and the experts it decompresses come out in bf16, so decompress first, then upcast."""
    from quantscope.checkpoint.modeling import load_causal_lm

    model = load_causal_lm(export, dtype="float32", tokenizer=False).model
    _decompress(model)
    for child in model.children():  # transformers refuses model.float() on a quantized model
        child.float()
    return model


def _decompress(model: Any) -> None:
    """Compressed-tensors layers loaded by transformers hold packed weights until the first
    forward pass; decompress them now, as transformers' own `dequantize=True` path does
    (`quantizers/quantizer_compressed_tensors.py`, `_process_model_after_weight_loading`)."""
    packed = any(hasattr(m, "weight_packed") and not hasattr(m, "weight") for m in model.modules())
    compressor = getattr(getattr(model, "hf_quantizer", None), "compressor", None)
    if packed and compressor is not None:
        compressor.decompress_model(model=model)


@dataclass(frozen=True)
class WeightError:
    """One quantized module: `error` = ||W_export - W_source|| / ||W_source||, `rtn_error` the same
    for the source rounded to nearest in `format`; `ratio` = error / rtn_error."""

    module: str
    format: str
    error: float
    rtn_error: float

    @property
    def ratio(self) -> float:
        """How many times RTN's rounding error the export is away from its source."""
        return (
            self.error / self.rtn_error if self.rtn_error > 0 else (0.0 if self.error == 0 else float("inf"))
        )


def weight_errors(
    export_model: Any, source_model: Any, assignment: Mapping[str, str], fused_sets: Sequence[Sequence[str]]
) -> list[WeightError]:
    """The error of every quantized module of a loaded export against the loaded source."""
    import torch

    from quantscope.numerics.fakequant import (
        QdqTarget,
        qdq_spec,
        quantize_dequantize,
        resolve_targets,
        shared_amax,
    )

    weights = export_weights(export_model, assignment)
    slices = resolve_targets(
        source_model, [(f"{name}.weight", tuple(w.shape)) for name, w in weights.items()]
    )
    targets = [QdqTarget(where, assignment[name]) for name, where in zip(weights, slices, strict=True)]
    amax = shared_amax(source_model, targets, fused_sets)
    errors = []
    with torch.no_grad():
        for (name, weight), target in zip(weights.items(), targets, strict=True):
            source = target.where.view(source_model)
            rounded = quantize_dequantize(
                source, qdq_spec(target.format), amax.get(target.where.tensor)
            ).float()
            source = source.float()
            norm = float(source.norm()) or 1.0
            errors.append(
                WeightError(
                    name,
                    target.format,
                    float((weight - source).norm()) / norm,
                    float((rounded - source).norm()) / norm,
                )
            )
    return errors


WEIGHTS_CHECK = "weights match the source within rounding"


def weight_check(errors: Sequence[WeightError], max_ratio: float = MAX_ERROR_RATIO) -> Check:
    """Fails every module further from the source than `max_ratio` times RTN's rounding error."""
    name = WEIGHTS_CHECK
    if not errors:  # ran: an export without quantized modules has nothing to compare
        return Check(name, True, "no quantized modules")
    bad = sorted((e for e in errors if e.ratio > max_ratio), key=lambda e: -e.ratio)
    worst = max(errors, key=lambda e: e.ratio)
    if not bad:
        return Check(
            name, True, f"{len(errors)} modules, worst {worst.ratio:.2f}× RTN's error ({worst.module})"
        )
    problems = [
        f"{e.module} ({e.format}): error {e.error:.3f} vs {e.rtn_error:.3f} from rounding ({e.ratio:.1f}×)"
        for e in bad
    ]
    return Check(
        name,
        False,
        detail_list(f"{len(bad)} of {len(errors)} modules off by more than {max_ratio:g}×", problems),
    )
