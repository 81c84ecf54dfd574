"""What each linear weight of a checkpoint is really stored as, from its headers and config only.

`stored_weights` groups a quantized checkpoint's tensors by module and recognises the storage
format from what is on disk (names, dtypes, shapes), so a mislabelled or mixed checkpoint is
described as it is, not as its label says:

Layouts, per `[out, in]` weight (b = bits, G = groups along the input):
- GPTQ / AutoRound `auto_round:auto_gptq`: `qweight I32 [in·b/32, out]`, `qzeros I32 [G, out·b/32]`,
  `scales F16 [G, out]`, and for GPTQ proper `g_idx I32 [in]`.
- AWQ (GEMM) / AutoRound `auto_awq`: `qweight I32 [in, out·b/32]`; qzeros and scales as GPTQ.
- compressed-tensors pack-quantized: `weight_packed I32 [out, in·b/32]`, `weight_scale [out, G]`,
  `weight_zero_point` when asymmetric, `weight_shape I64 [2]`; b comes from the config.
- compressed-tensors NVFP4 / MXFP4: `weight_packed U8 [out, in/2]` plus `weight_scale F8_E4M3
  [out, in/16]` and fp32 global scales, or `weight_scale U8 [out, in/32]` (E8M0).
- ModelOpt NVFP4 (and weight-only W4A16_NVFP4, no input_scale): `weight U8 [out, in/2]`,
  `weight_scale F8_E4M3 [out, in/16]`, `weight_scale_2 F32`, `input_scale F32`.
- FP8, any producer: `weight F8_E4M3` with `weight_scale` per tensor (1), per channel (`[out]`,
  `[out, 1]`), or per block (`weight_scale_inv [⌈out/128⌉, ⌈in/128⌉]`).
- GGUF: one tensor per weight in a GGML type (`Q4_K`, `IQ4_XS`…), read by `gguf_file`.

Layouts read from: vLLM `model_executor/layers/quantization/gptq.py` and `awq.py`
(`create_weights`), compressed-tensors `compressors/quantized_compressors/*.py`, ModelOpt
`torch/export/unified_export_hf.py`, and AutoRound 0.16 exports made here (tests/test_storage.py).

Every figure is exact: `nbytes` sums every tensor that stores the weight (packed values, scales,
zero points, `g_idx`, global and input scales) and `params` is the logical weight's element count,
so `bits_per_weight = 8 · nbytes / params` is what the weight costs, scales included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from quantscope.checkpoint.anatomy import (
    DTYPE_BITS,
    GROUPS,
    PARAM_SUFFIXES,
    Anatomy,
    TensorInfo,
    build_anatomy,
)
from quantscope.checkpoint.declared import auto_round_entry, quantization_section
from quantscope.errors import QuantscopeError

# The tensors that store a weight: every parameter of its module but the bias and the KV-cache
# scales ModelOpt and compressed-tensors hang on k_proj / v_proj.
_WEIGHT_PARAMS = frozenset(PARAM_SUFFIXES) - {"bias", "k_scale", "v_scale"}
_E8M0 = frozenset({"U8", "F8_E8M0"})  # power-of-two scales, stored as uint8 or float8_e8m0fnu
SIXTEEN = "16bit"  # the kind of a linear weight stored unquantized (16 or 32 bits)
_QUANT_METHOD_LABEL = {"auto-round": "AutoRound", "gptq": "GPTQ", "awq": "AWQ", "fp8": "FP8"}


@dataclass(frozen=True)
class StoredWeight:
    """One linear weight as stored: its format, logical shape and every byte it takes.

    `kind`: "int", "nvfp4", "mxfp4", "fp8", "16bit" or "gguf". `format`: a label, e.g. "INT4 g128",
    "NVFP4", "FP8 block 128×128", "BF16", "GGUF Q4_K". `layout`: who packed it ("gptq", "awq",
    "compressed-tensors", "modelopt", "auto_round", "gguf", "dense"). `bits`: bits of each stored value
    (4, 8, 16; GGUF: the type's average). `shape`: the logical `[out, in]` (or `[experts, out, in]`).
    `params`: logical elements. `nbytes`: bytes of every tensor in `tensors`. `scheme`: the quantscope
    format name that stores it the same way, or None when none does (GGUF, odd group sizes).
    """

    module: str
    group: str
    kind: str
    format: str
    layout: str
    bits: float
    shape: tuple[int, ...]
    params: int
    nbytes: int
    tensors: tuple[str, ...]
    scheme: str | None

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per logical weight, scales and zero points included."""
        return 8 * self.nbytes / self.params if self.params else 0.0

    @property
    def is_quantized(self) -> bool:
        """True unless the weight is stored in 16 or 32 bits."""
        return self.bits < 16


def stored_weights(anatomy: Anatomy, unrecognised: list[str] | None = None) -> dict[str, StoredWeight]:
    """Module name -> how its linear weight is stored, for every linear layer of `anatomy`.

    A module whose tensors fit no known layout raises QuantscopeError naming the checkpoint and
    the module, or, when `unrecognised` is given, is left out and its message appended there.
    """
    params: dict[str, dict[str, TensorInfo]] = {}
    for tensor in anatomy.tensors:
        # Fused 3-D experts (`mlp.experts.gate_up_proj`) are bare parameters: the tensor is the weight.
        param = tensor.param or ("weight" if tensor.is_linear_weight else "")
        if param in _WEIGHT_PARAMS:
            params.setdefault(tensor.module, {})[param] = tensor
    quant = quantization_config(anatomy.config)
    stored = {}
    for module, found in params.items():
        try:
            weight = _recognise(module, found, quant, anatomy)
        except QuantscopeError as error:
            if unrecognised is None:
                raise QuantscopeError(f"{anatomy.source}: {error}") from None
            unrecognised.append(str(error))
            continue
        if weight is not None:
            stored[module] = weight
    return stored


def quantization_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The checkpoint's quantization config: `quantization_config` from config.json, else ModelOpt's
    `hf_quant_config.json` "quantization" section (kept under `hf_quant_config` by `load_anatomy`);
    {} when it declares none (`declared.quantization_section` also says which file)."""
    found = quantization_section(config)
    return found[0] if found is not None else {}


def _recognise(
    module: str, found: Mapping[str, TensorInfo], quant: Mapping[str, Any], anatomy: Anatomy
) -> StoredWeight | None:
    if "qweight" in found:
        return _packed_int(module, found, quant)
    if "weight_packed" in found:
        return _compressed_tensors(module, found, quant)
    weight = found.get("weight")
    if weight is None:
        return None
    if weight.dtype not in DTYPE_BITS:  # a GGML type: the tensor comes from a GGUF file
        if not weight.is_linear_weight:
            return None
        from quantscope.checkpoint.gguf_file import gguf_bits_per_weight

        # The nominal bits are the type's digit (Q4_K, IQ4_XS: 4); scales make the average higher.
        nominal = re.search(r"(\d)", weight.dtype)
        bits = float(nominal.group(1)) if nominal else gguf_bits_per_weight(weight.dtype)
        return _stored(module, found, "gguf", f"GGUF {weight.dtype}", "gguf", bits, weight.shape, None)
    if weight.dtype == "U8" and "weight_scale" in found:
        return _modelopt_packed(module, found)
    if weight.dtype == "I8" and "weight_scale" in found:
        label = "INT8 per-channel"  # ModelOpt W8A16 / compressed-tensors int-quantized
        return _stored(module, found, "int", label, _layout_of(quant), 8, weight.shape, None)
    if not weight.is_linear_weight:
        return None
    if weight.dtype.startswith("F8_"):
        return _fp8(module, found, quant)
    shape = anatomy.weight_shape(weight)
    scheme = {"BF16": "bf16", "F16": "fp16"}.get(weight.dtype, "bf16")
    return _stored(module, found, SIXTEEN, weight.dtype, "dense", DTYPE_BITS[weight.dtype], shape, scheme)


def _stored(
    module: str,
    found: Mapping[str, TensorInfo],
    kind: str,
    label: str,
    layout: str,
    bits: float,
    shape: tuple[int, ...],
    scheme: str | None,
) -> StoredWeight:
    group = next(iter(found.values())).group
    tensors = tuple(t.name for t in found.values())
    nbytes = sum(t.nbytes for t in found.values())
    return StoredWeight(
        module, group, kind, label, layout, bits, shape, math.prod(shape), nbytes, tensors, scheme
    )


def _int_scheme(bits: int, group: int | None, sym: bool) -> str | None:
    """The quantscope integer format with this storage, if there is one (w4a16 / w8a16, g32-128)."""
    if bits not in (4, 8) or group not in (32, 64, 128):
        return None
    return f"w{bits}a16" + ("" if group == 128 else f"_g{group}") + ("" if sym else "_asym")


def _int_label(bits: int, group: int | None, sym: bool) -> str:
    size = f"g{group}" if group else "per-channel"
    return f"INT{bits} {size}" + ("" if sym else " asym")


def _packed_int(module: str, found: Mapping[str, TensorInfo], quant: Mapping[str, Any]) -> StoredWeight:
    """GPTQ (`qweight [in·b/32, out]`) or AWQ (`qweight [in, out·b/32]`) int32 packing."""
    qweight, scales, qzeros = found["qweight"], found.get("scales"), found.get("qzeros")
    if scales is None or qzeros is None or len(qweight.shape) != 2:
        raise QuantscopeError(f"{module}: a qweight without 2-D scales and qzeros is no GPTQ/AWQ layout")
    groups, out = scales.shape
    bits = 32 * qzeros.shape[1] // out  # both layouts pack the zero points along the output dim
    awq = qweight.shape[1] != out
    inputs = qweight.shape[0] if awq else qweight.shape[0] * 32 // bits
    group = _group_size(
        inputs, groups, _auto_round_entry(quant, module).get("group_size", quant.get("group_size"))
    )
    sym = _module_sym(quant, module, default=not awq)
    layout = (
        "awq"
        if awq
        else ("gptq" if "g_idx" in found or quant.get("quant_method") == "gptq" else "auto_round")
    )
    label = _int_label(bits, group, sym)
    return _stored(module, found, "int", label, layout, bits, (out, inputs), _int_scheme(bits, group, sym))


def _group_size(inputs: int, groups: int, declared: Any) -> int | None:
    """Weights per scale along the input dim; None for one scale per output channel. One group
    over the whole input is per-channel unless the config declares that group size (a 128-wide
    layer in group 128 stores one group too)."""
    if isinstance(declared, int) and declared > 0 and math.ceil(inputs / declared) == groups:
        return declared  # incl. a row shorter than one group (AutoRound stores it as one group)
    if groups > 1:  # a partial last group rounds up: the smallest power of two giving `groups`
        size = 2 ** math.ceil(math.log2(inputs / groups))
        return size if math.ceil(inputs / size) == groups else inputs // groups
    return None


def _module_sym(quant: Mapping[str, Any], module: str, default: bool) -> bool:
    if quant.get("quant_method") == "awq":
        return not quant.get("zero_point", True)
    entry = _auto_round_entry(quant, module)
    return bool(entry.get("sym", quant.get("sym", default)))


def _auto_round_entry(quant: Mapping[str, Any], module: str) -> Mapping[str, Any]:
    return auto_round_entry(quant, module) or {}


def _compressed_tensors(
    module: str, found: Mapping[str, TensorInfo], quant: Mapping[str, Any]
) -> StoredWeight:
    packed, scale = found["weight_packed"], found.get("weight_scale")
    out, cols = packed.shape[-2], packed.shape[-1]
    copies = packed.shape[:-2]
    if packed.dtype == "U8" and scale is not None:
        if "weight_global_scale" in found or scale.dtype == "F8_E4M3":
            # NVFP4A16 (compressed-tensors' weight-only preset) stores no input_global_scale
            a16 = "input_global_scale" not in found
            label, scheme = ("NVFP4 weight-only", "nvfp4a16") if a16 else ("NVFP4", "nvfp4")
            return _stored(
                module, found, "nvfp4", label, "compressed-tensors", 4, (*copies, out, 2 * cols), scheme
            )
        return _stored(
            module, found, "mxfp4", "MXFP4", "compressed-tensors", 4, (*copies, out, 2 * cols), "mxfp4"
        )
    weights = _compressed_weights(quant, module)
    bits = weights.get("num_bits")
    if packed.dtype != "I32" or scale is None or not isinstance(bits, int):
        raise QuantscopeError(
            f"{module}: weight_packed {packed.dtype} {list(packed.shape)} with no weight bits in the "
            "quantization_config's config_groups; not a compressed-tensors layout quantscope reads"
        )
    inputs = cols * 32 // bits
    group = _group_size(inputs, scale.shape[-1], weights.get("group_size"))
    sym = "weight_zero_point" not in found
    label = _int_label(bits, group, sym)
    return _stored(
        module,
        found,
        "int",
        label,
        "compressed-tensors",
        bits,
        (*copies, out, inputs),
        _int_scheme(bits, group, sym),
    )


def _compressed_weights(quant: Mapping[str, Any], module: str) -> Mapping[str, Any]:
    """The `weights` args of the compressed-tensors config group whose targets match `module`
    (targets are class names like "Linear", matching every linear, or "re:" regexes)."""
    groups = [g for g in (quant.get("config_groups") or {}).values() if isinstance(g.get("weights"), Mapping)]
    # compressed-tensors' precedence (`find_name_or_class_matches`): a layer name, then a regex,
    # then a class name such as "Linear".
    for matches in (
        lambda t: t == module,
        lambda t: t.startswith("re:") and re.match(t[3:], module) is not None,
        lambda t: not t.startswith("re:") and "." not in t,
    ):
        for group in groups:
            targets = group.get("targets") or ()
            if any(matches(t) for t in targets) and isinstance(group["weights"].get("num_bits"), int):
                return group["weights"]
    return {}


def _modelopt_packed(module: str, found: Mapping[str, TensorInfo]) -> StoredWeight:
    """ModelOpt's packed uint8 weights, told apart by the scale (its `unified_export_hf.py`):
    NVFP4 `weight [out, in/2]` + `weight_scale F8_E4M3 [out, in/16]`; MXFP4 the same with an E8M0
    (U8) scale per 32; INT4 AWQ `weight [out/2, in]` (packed along the output) + `weight_scale F32
    [out, in/g]`."""
    weight, scale = found["weight"], found["weight_scale"]
    *copies, rows, cols = weight.shape
    fp4 = (*copies, rows, 2 * cols)
    if scale.dtype == "F8_E4M3" and scale.shape:
        group = 2 * cols // scale.shape[-1] if scale.shape[-1] else 0
        if group != 16:  # e.g. ModelOpt's W4A8_NVFP4_FP8: E2M1 with an E4M3 scale per 32
            return _stored(module, found, "nvfp4", f"FP4 g{group}", "modelopt", 4, fp4, None)
        a16 = "input_scale" not in found  # ModelOpt's W4A16_NVFP4
        label, scheme = ("NVFP4 weight-only", "nvfp4a16") if a16 else ("NVFP4", "nvfp4")
        return _stored(module, found, "nvfp4", label, "modelopt", 4, fp4, scheme)
    if scale.dtype in _E8M0:
        return _stored(module, found, "mxfp4", "MXFP4", "modelopt", 4, fp4, "mxfp4")
    if len(scale.shape) == 2 and scale.shape[0] == 2 * rows and not copies:
        group = cols // scale.shape[1] if scale.shape[1] else None
        label = _int_label(4, group, True) + (" AWQ" if "pre_quant_scale" in found else "")
        return _stored(module, found, "int", label, "modelopt", 4, (2 * rows, cols), None)
    raise QuantscopeError(
        f"{module}: uint8 weight {list(weight.shape)} with a {scale.dtype} scale {list(scale.shape)} "
        "matches no ModelOpt layout quantscope reads (NVFP4, MXFP4, INT4 AWQ)"
    )


def _fp8(module: str, found: Mapping[str, TensorInfo], quant: Mapping[str, Any]) -> StoredWeight:
    weight = found["weight"]
    out, inputs = weight.shape[-2], weight.shape[-1]
    scale = found.get("weight_scale_inv") or found.get("weight_scale")
    layout = _layout_of(quant)
    if scale is not None and scale.dtype in _E8M0:  # an E8M0 scale per 32: MXFP8
        return _stored(module, found, "fp8", "MXFP8", layout, 8, weight.shape, None)
    # weight_scale_inv is always block-scaled (DeepSeek / Qwen FP8); so is a 2-D scale under a
    # config that declares a block (a layer of ≤128×128 then has a [1, 1] grid).
    inverse = "weight_scale_inv" in found or (
        scale is not None and len(scale.shape) >= 2 and _block_size(quant, module) is not None
    )
    if scale is None or (scale.numel == 1 and out > 1 and not inverse):
        label, scheme = "FP8 per-tensor", "fp8"
    elif scale.shape in ((out,), (out, 1)) and not inverse and "input_scale" in found:
        label, scheme = "FP8 per-channel", "fp8"
    elif scale.shape in ((out,), (out, 1)) and not inverse:
        # no stored input scale: the activations' scale is computed per token at run time
        # (compressed-tensors' FP8_DYNAMIC, ModelOpt's FP8_PER_CHANNEL_PER_TOKEN)
        label, scheme = "FP8 per-channel (dynamic)", "fp8_dynamic"
    else:
        # [⌈out/bo⌉, ⌈in/bi⌉], or ModelOpt's [⌈out/bo⌉, 1, ⌈in/bi⌉, 1]
        blocks = (scale.shape[0], scale.shape[2]) if len(scale.shape) == 4 else scale.shape[-2:]
        rows, cols = _block_size(quant, module) or _inferred_block(out, inputs, tuple(blocks))
        label, scheme = f"FP8 block {rows}×{cols}", "fp8_block" if (rows, cols) == (128, 128) else None
    return _stored(module, found, "fp8", label, layout, 8, weight.shape, scheme)


def _inferred_block(out: int, inputs: int, blocks: tuple[int, ...]) -> tuple[int, int]:
    """The block a scale grid implies: 128×128 whenever the grid is ⌈out/128⌉ × ⌈in/128⌉ (a 4-row
    layer has one 128-row block), else out and in divided by the grid."""
    if blocks == (math.ceil(out / 128), math.ceil(inputs / 128)):
        return 128, 128
    return math.ceil(out / blocks[0]), math.ceil(inputs / blocks[-1])


def _block_size(quant: Mapping[str, Any], module: str) -> tuple[int, int] | None:
    """The FP8 block a config declares: `weight_block_size` (fp8), AutoRound's 2-D `group_size`,
    or compressed-tensors' `block_structure`."""
    structure = _compressed_weights(quant, module).get("block_structure")
    size = quant.get("weight_block_size") or quant.get("group_size") or structure
    if isinstance(size, list) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def _layout_of(quant: Mapping[str, Any]) -> str:
    method = str(quant.get("quant_method", "")).replace("_", "-")
    return {"auto-round": "auto_round", "compressed-tensors": "compressed-tensors"}.get(
        method, method or "dense"
    )


# ---------------------------------------------------------------------------------------------
# What the checkpoint holds, per group, against its label
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupContents:
    """One anatomy group as stored: logical params, bytes on disk, and per format label the
    (params, bytes) of the linear weights stored that way."""

    group: str
    params: int
    nbytes: int
    formats: Mapping[str, tuple[int, int]]

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per logical parameter over every tensor of the group (norms, scales included)."""
        return 8 * self.nbytes / self.params if self.params else 0.0


@dataclass(frozen=True)
class Contents:
    """A checkpoint's stored formats: every linear weight, and per group what it holds."""

    anatomy: Anatomy
    weights: Mapping[str, StoredWeight]
    unrecognised: tuple[str, ...] = ()

    @cached_property
    def groups(self) -> dict[str, GroupContents]:
        """Per non-empty group, in `GROUPS` order."""
        params, nbytes = dict.fromkeys(GROUPS, 0), dict.fromkeys(GROUPS, 0)
        formats: dict[str, dict[str, list[int]]] = {group: {} for group in GROUPS}
        counted = {name for weight in self.weights.values() for name in weight.tensors}
        for tensor in self.anatomy.tensors:
            nbytes[tensor.group] += tensor.nbytes
            if tensor.name not in counted and not tensor.is_quant_artifact:
                params[tensor.group] += tensor.numel
        for weight in self.weights.values():
            params[weight.group] += weight.params
            entry = formats[weight.group].setdefault(weight.format, [0, 0])
            entry[0] += weight.params
            entry[1] += weight.nbytes
        return {
            group: GroupContents(
                group, params[group], nbytes[group], {k: (p, b) for k, (p, b) in formats[group].items()}
            )
            for group in GROUPS
            if nbytes[group] or params[group]
        }

    @property
    def params(self) -> int:
        """Logical parameters of the whole checkpoint (quantized weights counted unpacked)."""
        return sum(group.params for group in self.groups.values())

    @property
    def nbytes(self) -> int:
        """Bytes of every tensor on disk (headers excluded)."""
        return self.anatomy.total_bytes

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per logical parameter over the whole checkpoint."""
        return 8 * self.nbytes / self.params if self.params else 0.0

    @property
    def label(self) -> str:
        """What the checkpoint says it is (its quantization config or GGUF file type)."""
        return checkpoint_label(self.anatomy.config)

    @property
    def declared_in(self) -> str | None:
        """For an anatomy built from a bare config, the file its formats were declared in
        ("config.json" or "hf_quant_config.json"): the contents are as declared, none were read.
        None when the headers were read (or the config declares no quantization)."""
        derived = self.anatomy.config.get("quantscope_derived")
        note = derived.get("quantization") if isinstance(derived, Mapping) else None
        return note.get("declared_in") if isinstance(note, Mapping) else None

    @property
    def label_bits(self) -> int | None:
        """The weight bits the label names (4 for INT4 / NVFP4 / Q4_K_M…), None when mixed or absent."""
        return _label_bits(self.anatomy.config)

    def summary(self) -> str:
        """One line that sets the label against the contents."""
        return contents_summary(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: label, totals and per group the formats, params, bytes and bits per weight."""
        return {
            "label": self.label,
            "summary": self.summary(),
            "declared_in": self.declared_in,
            "contents_read": self.declared_in is None,
            "params": self.params,
            "bytes": self.nbytes,
            "bits_per_weight": self.bits_per_weight,
            "groups": {
                name: {
                    "params": group.params,
                    "bytes": group.nbytes,
                    "bits_per_weight": group.bits_per_weight,
                    "formats": {label: {"params": p, "bytes": b} for label, (p, b) in group.formats.items()},
                }
                for name, group in self.groups.items()
            },
        }


def read_contents(anatomy: Anatomy) -> Contents:
    """The stored format of every linear weight of `anatomy`, and what each group holds; modules in
    no known layout are listed in `unrecognised` (their tensors still count, as stored)."""
    unrecognised: list[str] = []
    weights = stored_weights(anatomy, unrecognised)
    return Contents(anatomy, weights, tuple(unrecognised))


def checkpoint_label(config: Mapping[str, Any]) -> str:
    """The label a checkpoint carries: e.g. "INT4 (GPTQ)", "NVFP4 (modelopt)", "GGUF MOSTLY_Q4_K_M",
    or "unquantized" when its config declares no quantization."""
    gguf = config.get("gguf")
    if isinstance(gguf, Mapping):
        return f"GGUF {gguf.get('file_type') or '?'}"
    quant = quantization_config(config)
    if not quant:
        return "unquantized"
    method = str(quant.get("quant_method", "?")).replace("_", "-")
    producer = _QUANT_METHOD_LABEL.get(method, method)
    if quant.get("quant_algo"):
        return f"{quant['quant_algo']} ({producer})"
    bits = _label_bits(config)
    data_type = str(quant.get("data_type") or "int")
    name = {"nv_fp": "NVFP", "mx_fp": "MXFP", "fp": "FP"}.get(data_type, "INT")
    if method == "compressed-tensors":
        return f"{_compressed_name(quant)} ({producer})"
    if method == "fp8":  # transformers' / vLLM's fine-grained FP8 (Qwen's and DeepSeek's checkpoints)
        block = quant.get("weight_block_size")
        return f"FP8 block {block[0]}×{block[1]} (fp8)" if isinstance(block, list) else "FP8 (fp8)"
    return f"{name}{bits} ({producer})" if bits else f"{quant.get('format') or 'quantized'} ({producer})"


def _compressed_name(quant: Mapping[str, Any]) -> str:
    """NVFP4 / MXFP4 / FP8 / INT4… from the config groups' weight args, or the packing format."""
    names = set()
    for group in (quant.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        bits, kind, size = weights.get("num_bits"), weights.get("type"), weights.get("group_size")
        if kind == "float" and bits in (4, 8) and size in (16, 32):
            names.add("NVFP4" if size == 16 else f"MXFP{bits}")
        elif isinstance(bits, int):
            names.add(f"{'FP' if kind == 'float' else 'INT'}{bits}")
    return "+".join(sorted(names)) or str(quant.get("format") or "quantized")


def _label_bits(config: Mapping[str, Any]) -> int | None:
    gguf = config.get("gguf")
    if isinstance(gguf, Mapping):
        match = re.search(r"I?Q(\d)", str(gguf.get("file_type", "")))
        return int(match.group(1)) if match else None
    quant = quantization_config(config)
    algo = str(quant.get("quant_algo") or "")
    if algo:
        match = re.search(r"(?:FP|INT|W)(\d)", algo)
        return int(match.group(1)) if match and algo != "MIXED_PRECISION" else None
    if isinstance(quant.get("bits"), int):
        return int(quant["bits"])
    if quant.get("quant_method") == "fp8":
        return 8
    bits = {(g.get("weights") or {}).get("num_bits") for g in (quant.get("config_groups") or {}).values()} - {
        None
    }
    return int(next(iter(bits))) if len(bits) == 1 else None


def contents_summary(contents: Contents) -> str:
    """E.g. "labelled INT4 (GPTQ): 4-bit weights hold 62% of the parameters and 31% of the bytes;
    16-bit: full_attn, linear_attn, lm_head; 6.1 bits per weight overall"."""
    params, nbytes = contents.params, contents.nbytes
    if not any(weight.is_quantized for weight in contents.weights.values()):
        dtypes = sorted({weight.format for weight in contents.weights.values()}) or ["no linear weights"]
        return (
            f"labelled {contents.label}: every linear weight is {'/'.join(dtypes)}; "
            f"{contents.bits_per_weight:.1f} bits per weight overall"
        )
    bits = contents.label_bits
    where = contents.declared_in
    parts = [f"labelled {contents.label}" + (f" in {where}; contents not read" if where else "")]
    shares = ": as declared, " if where else ": "
    if bits is not None and bits < 16:
        held = [w for w in contents.weights.values() if round(w.bits) == bits]
        share_p = sum(w.params for w in held) / params if params else 0.0
        share_b = sum(w.nbytes for w in held) / nbytes if nbytes else 0.0
        parts[0] += (
            f"{shares}{bits}-bit weights hold {share_p:.0%} of the parameters and {share_b:.0%} of the bytes"
        )
    else:
        mix = _format_shares(contents)
        parts[0] += f"{shares}{mix}" if mix else ""
    sixteen = [g for g in _mostly_sixteen_bit(contents) if g not in ("embed", "norm")]
    parts.append("16-bit: " + (", ".join(sixteen) if sixteen else "none of the linear groups"))
    parts.append(f"{contents.bits_per_weight:.1f} bits per weight overall")
    return "; ".join(parts)


def _format_shares(contents: Contents) -> str:
    totals: dict[str, int] = {}
    for weight in contents.weights.values():
        totals[weight.format] = totals.get(weight.format, 0) + weight.params
    params = contents.params or 1
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return ", ".join(f"{label} holds {count / params:.0%} of the parameters" for label, count in ranked[:4])


def _mostly_sixteen_bit(contents: Contents) -> list[str]:
    """Groups whose linear weights are mostly (by params) stored in 16 or 32 bits."""
    sixteen: dict[str, list[int]] = {}
    for weight in contents.weights.values():
        entry = sixteen.setdefault(weight.group, [0, 0])
        entry[0] += weight.params if not weight.is_quantized else 0
        entry[1] += weight.params
    return [g for g in GROUPS if g in sixteen and sixteen[g][0] * 2 > sixteen[g][1]]


# ---------------------------------------------------------------------------------------------
# The unquantized checkpoint a quantized one came from
# ---------------------------------------------------------------------------------------------


def logical_anatomy(contents: Contents, dtype: str = "BF16") -> Anatomy:
    """The anatomy of the unquantized model behind `contents`: each quantized weight becomes one
    `<module>.weight` of its logical shape in `dtype`, quantization artifacts are dropped, and the
    config loses its quantization section. Plans and recipe derivation run on it."""
    replaced = {
        name for weight in contents.weights.values() if weight.is_quantized for name in weight.tensors
    }
    headers = [
        (t.name, t.dtype, t.shape, t.nbytes)
        if t.dtype in DTYPE_BITS
        else (t.name, dtype, t.shape, t.numel * DTYPE_BITS[dtype] // 8)  # a GGML type (GGUF embeddings)
        for t in contents.anatomy.tensors
        if t.name not in replaced and not t.is_quant_artifact
    ]
    for weight in contents.weights.values():
        if weight.is_quantized:
            headers.append(
                (f"{weight.module}.weight", dtype, weight.shape, weight.params * DTYPE_BITS[dtype] // 8)
            )
    config = {
        k: v
        for k, v in contents.anatomy.config.items()
        if k not in ("quantization_config", "hf_quant_config")
    }
    return build_anatomy(contents.anatomy.source, config, headers, contents.anatomy.files)
