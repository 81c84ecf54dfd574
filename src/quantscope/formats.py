"""Storage formats: exactly which tensors a quantized linear weight becomes, and their bytes.

Each `Format` knows the tensors AutoRound 0.16 exports for one linear weight `[out, in]` (the
format vLLM then loads): e.g. W4A16 in the `auto_round` (auto_gptq-packed) format is
`qweight int32 [in/8, out]`, `qzeros int32 [in/g, out/8]`, `scales fp16 [in/g, out]`; NVFP4
in the `llm_compressor` format is `weight_packed uint8 [out, in/2]`, `weight_scale fp8 [out, in/16]`
plus two fp32 global scales. `stored_bytes` sums them, so a footprint is exact, not "bits × params".

`can_quantize` applies AutoRound's shape rules: a layer whose shape the scheme cannot hold is
left in 16-bit (the reason a "4-bit" checkpoint can be nearly as large as FP8).

The registry: every `Format` belongs to a `Family` (its `data_type`: "float", "int", "fp8",
"nvfp4", "mxfp4"), declared once in `FAMILIES` with everything the stages ask of it: the tensors
it exports and the shapes it holds, how AutoRound configs and ModelOpt algos name it
(recognition), its fake quantizer (`numerics.fakequant`) and declared activation rounding
(`numerics.served`). Each `Format` carries its export route (AutoRound scheme, `export_routes`).
Modules look these up instead of branching on the `data_type` string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from quantscope.errors import QuantscopeError

# Bytes per element of the dtypes the exports use.
_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E8M0": 1}


@dataclass(frozen=True)
class ExportedTensor:
    """One tensor a format writes for a quantized weight: name suffix, safetensors dtype, shape."""

    suffix: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of this tensor on disk."""
        return math.prod(self.shape) * _DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class Format:
    """A storage format for linear weights.

    `weight_bits`: bits per stored weight element (16 = unquantized). `group_size`: weights sharing
    one scale along the input dim (None: one scale per output channel, or no scale at all);
    `block`: 2-D scale block `(rows, cols)` for block-scaled FP8. `data_type`: "float", "int",
    "fp8", "nvfp4" or "mxfp4". `act_dynamic`: FP8 activation scales are computed from each input
    at run time (per token, or per token and 128 channels for block FP8), so no `input_scale` is
    stored; False for FP8 means one static per-tensor scale, calibrated and stored.
    `autoround_scheme` / `export_format`: how AutoRound produces it (`autoround_scheme` None for
    a quantized format: AutoRound has no preset, `quantize.autoround` builds a scheme dict), and
    the export format whose layout `exported_tensors` gives. `autoround_settings`: the explicit
    AutoRound settings a `layer_config` entry (and, unless `preset_exact`, the main scheme) uses
    instead of the preset. `export_routes`: the AutoRound `format=` values that can hold it, the
    default (the route vLLM 0.32 loads) first. `label`: what `checkpoint.contents` calls a weight
    stored exactly so ("" when its labels vary: any label of this format is exact); a stored weight
    with another label maps onto this format with other scales or activations (`plan.derive`).
    """

    name: str
    weight_bits: int
    group_size: int | None
    data_type: str
    sym: bool = True
    block: tuple[int, int] | None = None
    act_bits: int = 16
    act_dynamic: bool = False
    autoround_scheme: str | None = None
    export_format: str | None = None
    description: str = ""
    export_routes: tuple[str, ...] = ()
    autoround_settings: Mapping[str, Any] | None = field(default=None, compare=False)
    preset_exact: bool = True
    label: str = ""

    @property
    def is_quantized(self) -> bool:
        """True unless this is a 16-bit passthrough format."""
        return self.weight_bits < 16

    @property
    def family(self) -> Family:
        """This format's `Family` record (`FAMILIES[data_type]`)."""
        if self.data_type not in FAMILIES:
            raise QuantscopeError(
                f"format {self.name!r}: no family {self.data_type!r} in the registry "
                f"(quantscope.formats.FAMILIES: {', '.join(FAMILIES)})"
            )
        return FAMILIES[self.data_type]


# Export routes (`Format.export_routes`, AutoRound `format=` values), the default first: the route
# vLLM 0.32 loads (`quantize.vllm_check` asks its classes; tests/test_vllm_check.py). "auto_round"
# is AutoRound's own layout (vLLM: quant_method "auto-round", `INCConfig`, which accepts integer
# and block-FP8 packings but refuses NVFP4 ("Unsupported data_type: nv_fp") and per-channel FP8
# ("Unsupported packing_format: auto_round:fp8_static"): vllm/.../quantization/inc/inc.py);
# "llm_compressor" is compressed-tensors (`CompressedTensorsConfig`). Notes on the second route:
# - transformers (<= 5.19) drops the per-expert `weight_global_scale` of compressed-tensors NVFP4
#   experts; `quantscope.checkpoint.compressed_experts` puts them back when it loads one, so verify checks it;
# - AutoRound 0.16.1 leaves lm_head out of the compressed-tensors `ignore` list, so loaders would
#   build it as FP8 without scales (NaN logits): `complete_ignore_list` adds every kept module;
# - fp8_block: both routes serve in vLLM, neither loads in transformers (`transformers_load_problem`);
# - fp8 (static activations) on MoE experts has no route vLLM 0.32 loads:
#   `CompressedTensorsW8A8Fp8MoEMethod` takes per-tensor/per-tensor, per-channel/dynamic per-token
#   or block scales, not per-channel weights with static activations, and INC refuses fp8_static;
#   verify fails such an export. fp8_dynamic (the fp8 preset) is per-channel/dynamic per-token.

# FP8 per-channel weights with dynamic per-token FP8 activations (compressed-tensors' FP8_DYNAMIC,
# the W8A8 layout vLLM's FP8 MoE method takes with per-channel weights), which AutoRound 0.16 has
# no preset for (auto_round/schemes.py): group_size -1 is one scale per output channel, and the
# llm_compressor export writes act_group_size -1 as strategy "token" with dynamic true and no
# input_scale (auto_round/export/export_to_llmcompressor/export.py, `_get_act_scheme_strategy`).
FP8_DYNAMIC_SCHEME: Mapping[str, Any] = {
    "bits": 8,
    "group_size": -1,
    "sym": True,
    "data_type": "fp",
    "act_bits": 8,
    "act_group_size": -1,
    "act_data_type": "fp",
    "act_dynamic": True,
    "act_sym": True,
}

NVFP4A16_SCHEME: Mapping[str, Any] = {
    "bits": 4,
    "group_size": 16,
    "sym": True,
    "data_type": "nv_fp",
    "act_bits": 16,
}

_BASE_FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("bf16", 16, None, "float", description="bfloat16, unquantized"),
        Format("fp16", 16, None, "float", description="float16, unquantized"),
        Format(
            "fp8",
            8,
            None,
            "fp8",
            act_bits=8,
            autoround_scheme="FP8_STATIC",
            export_format="llm_compressor",
            description="FP8 E4M3 weights, one scale per output channel, static FP8 activations",
            export_routes=("llm_compressor", "auto_round"),
            label="FP8 per-channel",
        ),
        Format(
            "fp8_dynamic",
            8,
            None,
            "fp8",
            act_bits=8,
            act_dynamic=True,
            export_format="llm_compressor",
            description="FP8 E4M3 weights, one scale per output channel, dynamic per-token FP8 activations",
            export_routes=("llm_compressor",),
            autoround_settings=FP8_DYNAMIC_SCHEME,
            label="FP8 per-channel (dynamic)",
        ),
        Format(
            "fp8_block",
            8,
            None,
            "fp8",
            block=(128, 128),
            act_bits=8,
            act_dynamic=True,
            autoround_scheme="FP8_BLOCK",
            export_format="auto_round",
            description="FP8 E4M3 weights, one scale per 128×128 block, dynamic FP8 activations",
            export_routes=("llm_compressor", "auto_round"),
            label="FP8 block 128×128",
        ),
        Format(
            "nvfp4",
            4,
            16,
            "nvfp4",
            act_bits=4,
            autoround_scheme="NVFP4",
            export_format="llm_compressor",
            description="FP4 E2M1 weights, FP8 E4M3 scale per 16, fp32 global scale (native on Blackwell)",
            export_routes=("llm_compressor", "auto_round"),
            label="NVFP4",
        ),
        Format(
            "nvfp4a16",
            4,
            16,
            "nvfp4",
            export_format="llm_compressor",
            description="NVFP4 weights, 16-bit activations (compressed-tensors NVFP4A16, ModelOpt "
            "W4A16_NVFP4)",
            export_routes=("llm_compressor",),
            autoround_settings=NVFP4A16_SCHEME,
            label="NVFP4 weight-only",
        ),
        Format(
            "mxfp4",
            4,
            32,
            "mxfp4",
            act_bits=4,
            autoround_scheme="MXFP4",
            export_format="llm_compressor",
            description="FP4 E2M1 weights, E8M0 power-of-two scale per 32",
            export_routes=("llm_compressor", "auto_round"),
            label="MXFP4",
        ),
    )
}

_INT_RE = re.compile(r"^w(?P<bits>[348])a16(?:_g(?P<group>\d+))?(?P<asym>_asym)?$")


@lru_cache(maxsize=256)
def get_format(name: str) -> Format:
    """The Format called `name`.

    Names: "bf16", "fp16", "fp8", "fp8_dynamic", "fp8_block", "nvfp4", "mxfp4", and the integer weight-only
    family "w4a16" / "w8a16" / "w3a16" (group 128, symmetric) with optional `_g32` / `_g64` / `_g128`
    and `_asym`, e.g. "w4a16_g32_asym". Raises QuantscopeError listing the valid names.
    """
    key = name.strip().lower().replace("-", "_")
    if key in _BASE_FORMATS:
        return _BASE_FORMATS[key]
    match = _INT_RE.match(key)
    if match:
        return _int_format(
            int(match.group("bits")), int(match.group("group") or 128), not match.group("asym")
        )
    raise QuantscopeError(
        f"unknown scheme {name!r}; use one of: {', '.join(FORMAT_NAMES)} "
        "(integer schemes take _g32/_g64/_g128 and _asym, e.g. w4a16_g32_asym)"
    )


def _int_format(bits: int, group: int, sym: bool) -> Format:
    if group not in (32, 64, 128):
        raise QuantscopeError(f"w{bits}a16 group size must be 32, 64 or 128, not {group}")
    name = f"w{bits}a16" + ("" if group == 128 else f"_g{group}") + ("" if sym else "_asym")
    return Format(
        name,
        bits,
        group,
        "int",
        sym=sym,
        autoround_scheme=f"W{bits}A16",
        export_format="auto_round",
        description=f"INT{bits} weights, fp16 scale + packed zero point per {group}, 16-bit activations",
        export_routes=("auto_round", "llm_compressor"),
        # every layer_config entry spells the settings out; the W{bits}A16 preset is group 128, symmetric
        autoround_settings={
            "bits": bits,
            "group_size": group,
            "sym": sym,
            "data_type": "int",
            "act_bits": 16,
        },
        preset_exact=group == 128 and sym,
    )


FORMAT_NAMES: tuple[str, ...] = (*_BASE_FORMATS, "w8a16", "w4a16", "w4a16_g64", "w4a16_g32", "w3a16")


def _matrix_dims(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(copies, out, in) of a linear weight `[out, in]` or fused experts `[experts, out, in]`."""
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    raise QuantscopeError(f"a linear weight has 2 or 3 dims ([out, in] or [experts, out, in]), got {shape}")


@lru_cache(maxsize=4096)
def can_quantize(shape: tuple[int, ...], fmt: Format) -> bool:
    """Whether AutoRound quantizes a linear weight of this shape in `fmt` (else it stays 16-bit).

    Integer weight-only schemes need both dims divisible by 32 (AutoRound 0.16's auto_gptq
    packing) and an input dim the group size divides (or one group per row when the input is
    shorter than a group). AutoRound itself would pad a partial last group, but nothing loads that:
    transformers builds such layers as `FakeActQuantLinear` with the weight missing (random values;
    seen on SmolLM2-135M, whose 576-wide inputs are 4.5 groups of 128), and vLLM's Marlin needs the
    group to divide the input (`verify_marlin_supports_shape`). So those layers stay 16-bit here and
    the plan shows it. NVFP4/MXFP4 need the input dim divisible by the group size. FP8 has no shape
    rule here (but see `vllm_builds`). 16-bit formats are no-ops.
    """
    if not fmt.is_quantized:
        return True
    _, out_features, in_features = _matrix_dims(shape)
    return fmt.family.fits(out_features, in_features, fmt)


def _int_fits(out_features: int, in_features: int, fmt: Format) -> bool:
    group = fmt.group_size or in_features
    whole_groups = in_features <= group or in_features % group == 0
    return out_features % 32 == 0 and in_features % 32 == 0 and whole_groups


def _grouped_fits(out_features: int, in_features: int, fmt: Format) -> bool:
    return in_features % (fmt.group_size or 1) == 0


def _any_shape(out_features: int, in_features: int, fmt: Format) -> bool:
    return True


@lru_cache(maxsize=4096)
def vllm_builds(shape: tuple[int, ...], fmt: Format) -> bool:
    """Whether vLLM 0.32 builds a weight of this shape in `fmt`, where AutoRound would store it
    anyway, so a recipe keeps it 16-bit. Block FP8 needs the rows divisible by the block's: vLLM
    refuses a merged layer whose members (all but the last) are not (`validate_fp8_block_shape`,
    quantization/utils/fp8_utils.py; seen through `quantize.vllm_check`), and Qwen3.5's in_proj_b
    and in_proj_a (one row per value head: 32 to 64) are merged. Applied to every block weight: on
    Qwen3.5 it changes nothing else."""
    _, out_features, _ = _matrix_dims(shape)
    return not fmt.block or out_features % fmt.block[0] == 0


def exported_tensors(shape: tuple[int, ...], fmt: Format) -> tuple[ExportedTensor, ...]:
    """The tensors `fmt` stores for one linear weight `[out, in]` (per expert for 3-D experts).

    Assumes `can_quantize(shape, fmt)`; for 16-bit formats it is the weight itself.
    """
    _, out_features, in_features = _matrix_dims(shape)
    return fmt.family.layout(out_features, in_features, fmt)


def _float_tensors(out_features: int, in_features: int, fmt: Format) -> tuple[ExportedTensor, ...]:
    return (ExportedTensor("weight", "BF16" if fmt.name == "bf16" else "F16", (out_features, in_features)),)


def _nvfp4_tensors(out_features: int, in_features: int, fmt: Format) -> tuple[ExportedTensor, ...]:
    return (
        ExportedTensor("weight_packed", "U8", (out_features, in_features // 2)),
        ExportedTensor("weight_scale", "F8_E4M3", (out_features, in_features // 16)),
        ExportedTensor("weight_global_scale", "F32", (1,)),
        # weight-only NVFP4 (compressed-tensors NVFP4A16) stores no activation scale
        *((ExportedTensor("input_global_scale", "F32", (1,)),) if fmt.act_bits == 4 else ()),
    )


def _mxfp4_tensors(out_features: int, in_features: int, fmt: Format) -> tuple[ExportedTensor, ...]:
    return (
        ExportedTensor("weight_packed", "U8", (out_features, in_features // 2)),
        ExportedTensor("weight_scale", "U8", (out_features, in_features // 32)),
    )


def _int_tensors(out_features: int, in_features: int, fmt: Format) -> tuple[ExportedTensor, ...]:
    # auto_gptq packing: `bits` bits per value packed across int32 words along the input dim
    # (qweight) and the output dim (qzeros), so 3-bit packs 32 values into 3 words (an AutoRound
    # 0.16 W3A16 export of the toy: qweight [12, 128] for in 128); zero points are stored even
    # for symmetric schemes.
    bits = fmt.weight_bits
    groups = math.ceil(in_features / (fmt.group_size or in_features))
    return (
        ExportedTensor("qweight", "I32", (math.ceil(in_features * bits / 32), out_features)),
        ExportedTensor("qzeros", "I32", (groups, math.ceil(out_features * bits / 32))),
        ExportedTensor("scales", "F16", (groups, out_features)),
    )


def _fp8_tensors(out_features: int, in_features: int, fmt: Format) -> tuple[ExportedTensor, ...]:
    # AutoRound writes FP8 scales in the model's 16-bit dtype (BF16 for Qwen checkpoints).
    weight = ExportedTensor("weight", "F8_E4M3", (out_features, in_features))
    if fmt.block:
        rows, cols = fmt.block
        scale_shape = (math.ceil(out_features / rows), math.ceil(in_features / cols))
        return (weight, ExportedTensor("weight_scale_inv", "BF16", scale_shape))
    # Per-channel FP8 goes through compressed-tensors (the route vLLM loads): one scale per row as a
    # column `[out, 1]` (AutoRound's own format wrote `[out]`); static activations add their one
    # calibrated `input_scale`, dynamic ones store nothing (their scale is computed per token).
    channel = (weight, ExportedTensor("weight_scale", "BF16", (out_features, 1)))
    return channel if fmt.act_dynamic else (*channel, ExportedTensor("input_scale", "BF16", (1,)))


# ---------------------------------------------------------------- the family registry


@dataclass(frozen=True)
class Family:
    """A weight-format family: what every `Format` with this `data_type` (`name`) shares.

    `layout(out, in, fmt)`: the tensors one `[out, in]` weight is exported as; `fits(out, in,
    fmt)`: AutoRound's shape rule (else the layer stays 16-bit). Recognition: `from_autoround`
    names the format an AutoRound config's settings (`bits`, `group_size`, `sym`, `data_type`,
    `act_bits`) store, or None; `autoround_kind(data_type, bits)` whether vLLM's INC loader builds
    such a layer as this family; `autoround_packings` the AutoRound `packing_format`s whose tensors
    `layout` gives; `compressed_tensors(weights)` whether a compressed-tensors `weights` block
    (`num_bits`, `type`, `group_size`) is this family; `modelopt_algos` the ModelOpt `quant_algo`s
    vLLM 0.32 builds as it. Emulation: `qdq` the fake quantizer's kind in `numerics.fakequant`
    ("" none), `declared_act(fmt)` the activation rounding the format declares
    (`numerics.served.ACT_NAMES`). `run_time_act_scales`: activation scales are always computed
    from each input at run time (MX formats), whatever `Format.act_dynamic` says. `rtn_writer`: who
    writes a layer AutoRound never sees in this family ("autoround": its RTN of the copied MTP head;
    "compressed-tensors": `quantize.rtn_layers`; "" nobody: it stays 16-bit); see `rtn_writer()`.
    """

    name: str
    layout: Callable[[int, int, Format], tuple[ExportedTensor, ...]]
    fits: Callable[[int, int, Format], bool] = _any_shape
    from_autoround: Callable[[Mapping[str, Any]], str | None] = lambda settings: None
    autoround_kind: Callable[[str, int], bool] = lambda data_type, bits: False
    autoround_packings: tuple[str, ...] = ()
    compressed_tensors: Callable[[Mapping[str, Any]], bool] = lambda weights: False
    modelopt_algos: tuple[str, ...] = ()
    qdq: str = ""
    declared_act: Callable[[Format], str] = lambda fmt: ""
    run_time_act_scales: bool = False
    rtn_writer: str = ""


def _registered(family: str, act_bits: Any) -> str:
    """The registered format of `family` with `act_bits`-bit activations, else a name that
    `get_format` refuses (naming what is missing)."""
    for fmt in _BASE_FORMATS.values():
        if fmt.data_type == family and fmt.act_bits == act_bits:
            return fmt.name
    return f"{family} with {act_bits}-bit activations"


def _int_from_autoround(settings: Mapping[str, Any]) -> str | None:
    if str(settings["data_type"] or "int") != "int":
        return None
    size = "" if settings["group_size"] == 128 else f"_g{settings['group_size']}"
    return f"w{settings['bits']}a16{size}{'' if settings['sym'] in (True, None) else '_asym'}"


def _fp4_from_autoround(
    prefix: str, family: str, group: int, by_act: bool
) -> Callable[[Mapping[str, Any]], str | None]:
    """An FP4 family's AutoRound recognition: `data_type` starting with `prefix`, 4 bits, `group`;
    `by_act`: the family's formats differ in activations (else named by the weights alone)."""

    def recognise(settings: Mapping[str, Any]) -> str | None:
        data_type = str(settings["data_type"] or "int")
        if not (data_type.startswith(prefix) and settings["bits"] == 4 and settings["group_size"] == group):
            return None
        return _registered(family, settings["act_bits"]) if by_act else family

    return recognise


def _fp8_from_autoround(settings: Mapping[str, Any]) -> str | None:
    if not (str(settings["data_type"] or "int").startswith("fp") and settings["bits"] == 8):
        return None
    group = settings["group_size"]
    return "fp8_block" if isinstance(group, list) and list(group) == [128, 128] else "fp8"


def _fp8_act(fmt: Format) -> str:
    if fmt.block:
        return "fp8_group"
    return "fp8_token" if fmt.act_dynamic else "fp8_tensor"


def _not_int(weights: Mapping[str, Any]) -> bool:
    return weights.get("type") != "int"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("float", _float_tensors),
        Family(
            "fp8",
            _fp8_tensors,
            from_autoround=_fp8_from_autoround,
            autoround_kind=lambda data_type, bits: data_type in ("fp", "float") and bits == 8,
            autoround_packings=("auto_round:fp8_static", "auto_round:fp8"),
            compressed_tensors=lambda weights: _not_int(weights) and weights.get("num_bits") == 8,
            modelopt_algos=("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO", "MXFP8"),
            qdq="fp8",
            declared_act=_fp8_act,
            rtn_writer="compressed-tensors",
        ),
        Family(
            "nvfp4",
            _nvfp4_tensors,
            fits=_grouped_fits,
            from_autoround=_fp4_from_autoround("nv_fp", "nvfp4", 16, by_act=True),
            autoround_kind=lambda data_type, bits: data_type.startswith("nv_fp"),
            autoround_packings=("auto_round:llm_compressor",),
            compressed_tensors=lambda weights: (
                _not_int(weights) and weights.get("num_bits") != 8 and weights.get("group_size") == 16
            ),
            modelopt_algos=("NVFP4", "W4A16_NVFP4"),
            qdq="nvfp4",
            declared_act=lambda fmt: "nvfp4" if fmt.act_bits == 4 else "",
            rtn_writer="compressed-tensors",
        ),
        Family(
            "mxfp4",
            _mxfp4_tensors,
            fits=_grouped_fits,
            from_autoround=_fp4_from_autoround("mx_fp", "mxfp4", 32, by_act=False),
            autoround_kind=lambda data_type, bits: data_type.startswith("mx_fp"),
            autoround_packings=("auto_round:llm_compressor",),
            compressed_tensors=lambda weights: (
                _not_int(weights) and weights.get("num_bits") != 8 and weights.get("group_size") != 16
            ),
            modelopt_algos=(),
            qdq="mxfp4",
            declared_act=lambda fmt: "mxfp4",
            run_time_act_scales=True,  # OCP MX: one E8M0 scale per 32 inputs, from the inputs
            rtn_writer="compressed-tensors",
        ),
        Family(
            "int",
            _int_tensors,
            fits=_int_fits,
            from_autoround=_int_from_autoround,
            # vLLM's INC loader builds every data_type it does not name otherwise as integer
            autoround_kind=lambda data_type, bits: True,
            autoround_packings=("auto_round", "auto_round:auto_gptq"),
            compressed_tensors=lambda weights: weights.get("type") == "int",
            modelopt_algos=("W4A16_AWQ", "W4A8_AWQ"),
            qdq="int",
            rtn_writer="autoround",
        ),
    )
}
"""The weight-format families by `Format.data_type`. Order matters for recognition: the first
family whose predicate matches wins, and "int" (vLLM INC's catch-all) comes last."""


def calibrates_activations(fmt: Format) -> bool:
    """Whether an export of `fmt` stores activation scales measured on calibration data (static
    FP8's `input_scale`, NVFP4 W4A4's `input_global_scale`). Dynamic FP8 and MX formats scale
    each input at run time; weight-only formats have no activation scale."""
    return fmt.act_bits < 16 and not (fmt.act_dynamic or fmt.family.run_time_act_scales)


def rtn_writer(fmt: Format) -> str:
    """Who writes a layer AutoRound never sees (Qwen3.5's MTP head; an opted-in vision tower) in
    `fmt`: "autoround" (its RTN of the MTP tensors it copies, integer formats), "compressed-tensors"
    (`quantize.rtn_layers`) or "" (nobody: the layer stays 16-bit). Nothing runs these layers on
    calibration data, so no format whose export stores calibrated activation scales can hold them
    (`calibrates_activations`)."""
    if not fmt.is_quantized or calibrates_activations(fmt):
        return ""
    return fmt.family.rtn_writer


def format_from_autoround(settings: Mapping[str, Any]) -> str:
    """The quantscope format name AutoRound `settings` (`bits`, `group_size`, `sym`, `data_type`,
    `act_bits`; quantized) store, or a description of them that `get_format` refuses."""
    for family in FAMILIES.values():
        name = family.from_autoround(settings)
        if name is not None:
            return name
    data_type = str(settings["data_type"] or "int")
    return f"{data_type} {settings['bits']}-bit group {settings['group_size']}"


def family_from_autoround(data_type: str, bits: int) -> str:
    """The family vLLM's INC loader builds a quantized AutoRound layer of `data_type` as."""
    return next(f.name for f in FAMILIES.values() if f.autoround_kind(data_type, bits))


def family_from_compressed_tensors(weights: Mapping[str, Any]) -> str:
    """The family of a quantized compressed-tensors `weights` block (its `config_groups`)."""
    return next(f.name for f in FAMILIES.values() if f.compressed_tensors(weights))


def family_from_modelopt(algo: str) -> str | None:
    """The family vLLM 0.32 builds a ModelOpt `quant_algo` as, or None for an algo it does not."""
    return next((f.name for f in FAMILIES.values() if algo in f.modelopt_algos), None)


@lru_cache(maxsize=4096)
def stored_bytes(shape: tuple[int, ...], fmt: Format) -> int:
    """Exact bytes on disk of one linear weight (`[out, in]` or `[experts, out, in]`) stored in `fmt`.

    Counts every exported tensor (packed weight, scales, zeros, global scales). A shape the format
    cannot hold (see `can_quantize`) is counted as the 16-bit weight AutoRound leaves behind.
    """
    copies, _, _ = _matrix_dims(shape)
    effective = fmt if can_quantize(shape, fmt) else _BASE_FORMATS["bf16"]
    return copies * sum(tensor.nbytes for tensor in exported_tensors(shape, effective))


def bits_per_weight(shape: tuple[int, ...], fmt: Format) -> float:
    """Average stored bits per weight element, scales and zeros included."""
    copies, out_features, in_features = _matrix_dims(shape)
    return 8 * stored_bytes(shape, fmt) / (copies * out_features * in_features)
