"""What a quantized checkpoint's config declares per linear module, and the tensors its producer
writes for that declaration.

A bare `config.json` has no weights to read, but a quantized checkpoint's `quantization_config`
(or ModelOpt's `hf_quant_config.json` beside it) says which format each linear module is stored
in. `declared_headers` turns the unquantized layout transformers builds from the config
(`from_config`) into the layout the producer writes under that declaration, tensor by tensor,
so `contents.read_contents` labels and sizes it exactly as it would the real headers:

- ModelOpt (`quant_method: modelopt`, or `hf_quant_config.json`): `modelopt_algo` resolves each
  module as vLLM's ModelOpt loader does; the tensors per algo follow vLLM's `create_weights`
  (`model_executor/layers/quantization/modelopt.py`): NVFP4 `weight U8 [out, in/2]`, `weight_scale
  F8_E4M3 [out, in/16]`, `weight_scale_2 F32 []`, and for W4A4 (not W4A16_NVFP4) `input_scale F32
  []`; FP8 `weight F8_E4M3 [out, in]` with FP32 `weight_scale` and `input_scale` scalars.
- compressed-tensors: its own matching (`match_targets`, `is_match` on `config_groups` and
  `ignore`), `initialize_module_for_quantization` and compressors, run on a meta `nn.Linear` of
  each shape: exactly the tensors `ModelCompressor.compress_model` saves.
- AutoRound (`quant_method: auto-round`): each module's `extra_config` entry (or the global
  settings inside `block_name_to_quantize`) as the quantscope format with that storage, laid out
  by `formats.exported_tensors` (AutoRound's own export layouts).

Not laid out: KV-cache scales (a few bytes per attention layer). Anything else (GPTQ, AWQ, MLX,
bitsandbytes, a packing quantscope does not know) is refused with a QuantscopeError naming the
field: a footprint from a config is the declaration or nothing, never "unquantized".
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from quantscope.checkpoint.anatomy import Anatomy, TensorInfo
from quantscope.errors import QuantscopeError
from quantscope.formats import can_quantize, exported_tensors, format_from_autoround, get_format

Header = tuple[str, str, tuple[int, ...], int]
_LAID_OUT = "modelopt, compressed-tensors and auto-round"
_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E8M0": 1}


_REGEX_CHARS = frozenset(r"*+?^$()[]{}|\\")


def auto_round_entry(quant: Mapping[str, Any], module: str) -> Mapping[str, Any] | None:
    """AutoRound's `extra_config` entry for `module`, resolved as vLLM's INC loader does: an exact
    key, a key the name ends with, then regex keys (searched); None when no key applies."""
    extra = quant.get("extra_config") or {}
    if module in extra:
        return extra[module]
    for key, entry in extra.items():
        if module.endswith(f".{key}"):
            return entry
    for key, entry in extra.items():
        if any(char in _REGEX_CHARS for char in key) and re.search(key, module):
            return entry
    return None


def quantization_section(config: Mapping[str, Any]) -> tuple[Mapping[str, Any], str] | None:
    """The quantization config a loader reads for this config, and the file it is in: config.json's
    `quantization_config` (vLLM prefers it), else ModelOpt's `hf_quant_config.json` "quantization"
    section kept under `hf_quant_config` (as `contents.quantization_config` reads them)."""
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping):
        return quant, "config.json"
    sidecar = config.get("hf_quant_config")
    if isinstance(sidecar, Mapping):
        section = sidecar.get("quantization", sidecar)
        if isinstance(section, Mapping):
            return {"quant_method": "modelopt", **section}, "hf_quant_config.json"
    return None


def sidecar_disagreements(
    anatomy: Anatomy, quant: Mapping[str, Any], sidecar: Mapping[str, Any], shown: int = 5
) -> list[str]:
    """Where ModelOpt's `hf_quant_config.json` declares another algo than config.json's
    `quantization_config` (vLLM reads config.json's), e.g. "mlp.gate_proj: FP8 vs W4A16_NVFP4";
    [] when they agree on every linear module, or the file is not ModelOpt's."""
    section = sidecar.get("quantization", sidecar)
    if str(quant.get("quant_method")) != "modelopt" or not isinstance(section, Mapping):
        return []
    # The lists never name single experts: one expert stands for all of its layer.
    modules = {re.sub(r"\.experts\.\d+\.", ".experts.0.", m) for m in anatomy.linear_weights}
    algos = {m: (modelopt_algo(quant, m) or "16-bit", modelopt_algo(section, m) or "16-bit") for m in modules}
    differ = [f"{m}: {ours} vs {theirs}" for m, (ours, theirs) in sorted(algos.items()) if ours != theirs]
    return differ[:shown] + ([f"+{len(differ) - shown} more"] if len(differ) > shown else [])


def declared_headers(anatomy: Anatomy, quant: Mapping[str, Any], where: str) -> list[Header]:
    """`anatomy`'s header entries with every linear weight replaced by the tensors its producer
    writes for the format `quant` declares (see the module docstring); other tensors unchanged.

    `anatomy` is the unquantized layout (`from_config`); `where` names the config in errors.
    Raises QuantscopeError for a quantization config quantscope cannot lay out.
    """
    layout = _layout(quant, where)
    headers: list[Header] = []
    for tensor in anatomy.tensors:
        if not tensor.is_linear_weight or tensor.group == "router":
            # Routers stay 16-bit: transformers builds Qwen3.5's as a TopKRouter (no nn.Linear, so no
            # producer's Linear target matches it) and vLLM builds it with quant_config=None.
            headers.append(_unchanged(tensor))
            continue
        headers += layout(tensor)
    return headers


def _unchanged(tensor: TensorInfo) -> Header:
    return tensor.name, tensor.dtype, tensor.shape, tensor.nbytes


def _matrix(tensor: TensorInfo, where: str) -> tuple[int, int]:
    """`(out, in)` of a weight the declaration quantizes; a fused 3-D experts tensor is refused."""
    if len(tensor.shape) != 2:
        raise QuantscopeError(
            f"{where}: {tensor.name} is a fused {list(tensor.shape)} experts tensor; how the producer "
            "splits it is not in the config, so read the checkpoint's safetensors headers"
        )
    return tensor.shape[0], tensor.shape[1]


def _layout(quant: Mapping[str, Any], where: str):
    """The per-weight layout function of `quant`'s producer."""
    method = str(quant.get("quant_method") or "").replace("_", "-")
    if method == "modelopt":
        return lambda tensor: _modelopt_tensors(tensor, modelopt_algo(quant, tensor.module), where)
    if method == "compressed-tensors":
        return _compressed_tensors_layout(quant, where)
    if method == "auto-round":
        return lambda tensor: _auto_round_tensors(tensor, quant, where)
    named = f"quant_method {method!r}" if method else f"no quant_method (keys: {', '.join(sorted(quant))})"
    raise QuantscopeError(
        f"{where}: its quantization_config has {named}; quantscope lays out only {_LAID_OUT} "
        "checkpoints from a config alone. Inspect the checkpoint's safetensors headers instead (its "
        "directory or hub id; no weights are read)"
    )


def _header(name: str, dtype: str, shape: tuple[int, ...]) -> Header:
    count = 1
    for dim in shape:
        count *= dim
    return name, dtype, shape, count * _BYTES[dtype]


# ---- ModelOpt ---------------------------------------------------------------------------------


def modelopt_algo(config: Mapping[str, Any], module: str) -> str | None:
    """The ModelOpt quant_algo `module` is stored in, or None when it stays 16-bit.

    Resolved as vLLM's ModelOpt loader does (`get_quant_method`: `is_layer_excluded`, then
    `_resolve_quant_algo`): an `exclude_modules` (hf_quant_config.json) or `ignore` (config.json)
    entry that matches exactly, as a substring, or as an fnmatch pattern (`name*` also meaning
    `name` and `name.*`) keeps it 16-bit; MIXED_PRECISION then looks the module up in
    `quantized_layers` (exactly, or under a listed parent such as a fused `mlp.experts` container:
    ModelOpt lists the container and exports per-expert weights), unlisted modules are 16-bit;
    otherwise `quant_algo` applies.
    """
    excluded = _exclusion_regex(tuple(config.get("exclude_modules") or config.get("ignore") or ()))
    if excluded is not None and any(excluded.search(name) for name in _modelopt_names(module)):
        return None
    algo = str(config.get("quant_algo") or "").upper()
    if algo != "MIXED_PRECISION":
        return algo or None
    layers = config.get("quantized_layers") or {}
    for candidate in _modelopt_names(module):
        parts = candidate.split(".")
        for end in range(len(parts), 0, -1):  # the module itself, then each parent
            entry = layers.get(".".join(parts[:end]))
            if entry is not None:
                return str(entry.get("quant_algo", "")).upper() or None
    return None


def _modelopt_names(module: str) -> tuple[str, ...]:
    # vLLM maps a multimodal checkpoint's `model.language_model.` to `language_model.model.`;
    # accept either spelling of the module name.
    swapped = module.replace("model.language_model.", "language_model.model.", 1)
    return (module,) if swapped == module else (module, swapped)


@lru_cache(maxsize=64)
def _exclusion_regex(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for a ModelOpt exclude list (a 400B MoE has ~95k modules and ~200 patterns):
    `name*` matches names starting with `name`, other wildcards are fnmatch patterns, and a plain
    name matches as a substring (vLLM's legacy rule, which also covers the exact match)."""
    parts = []
    for pattern in patterns:
        if pattern.endswith("*") and "*" not in pattern[:-1] and not pattern.endswith(".*"):
            parts.append("^" + re.escape(pattern[:-1]))
        elif any(char in pattern for char in "*?["):
            parts.append("^" + fnmatch.translate(pattern))
        else:
            parts.append(re.escape(pattern))
    return re.compile("|".join(f"(?:{part})" for part in parts)) if parts else None


def _modelopt_tensors(tensor: TensorInfo, algo: str | None, where: str) -> list[Header]:
    """What ModelOpt's unified HF export writes for one `[out, in]` weight under `algo`."""
    if algo is None:
        return [_unchanged(tensor)]
    module, (out, inputs) = tensor.module, _matrix(tensor, where)
    if algo in ("NVFP4", "W4A16_NVFP4") and inputs % 16 == 0:
        headers = [
            _header(f"{module}.weight", "U8", (out, inputs // 2)),
            _header(f"{module}.weight_scale", "F8_E4M3", (out, inputs // 16)),
            _header(f"{module}.weight_scale_2", "F32", ()),
        ]
        return headers + ([_header(f"{module}.input_scale", "F32", ())] if algo == "NVFP4" else [])
    if algo == "FP8":
        return [
            _header(f"{module}.weight", "F8_E4M3", (out, inputs)),
            _header(f"{module}.weight_scale", "F32", ()),
            _header(f"{module}.input_scale", "F32", ()),
        ]
    raise QuantscopeError(
        f"{where}: {module}: ModelOpt quant_algo {algo!r} on a {list(tensor.shape)} weight; quantscope lays "
        "out NVFP4, W4A16_NVFP4 and FP8 from a config. Read the checkpoint's safetensors headers instead"
    )


# ---- compressed-tensors -----------------------------------------------------------------------


def _compressed_tensors_layout(quant: Mapping[str, Any], where: str):
    """The layout function of a compressed-tensors config, run through the library itself."""
    from compressed_tensors.quantization import QuantizationConfig

    try:
        config = QuantizationConfig.model_validate(dict(quant))
    except ValueError as error:
        raise QuantscopeError(
            f"{where}: compressed-tensors cannot read its quantization_config ({error})"
        ) from None
    target_to_scheme: dict[str, Any] = {}
    for scheme in config.config_groups.values():  # later groups win a shared target, as in `apply`
        for target in scheme.targets:
            target_to_scheme[target] = scheme
    global_format = None if config.format in (None, "mixed-precision") else config.format
    cache: dict[tuple, list[tuple[str, str, tuple[int, ...]]]] = {}

    def layout(tensor: TensorInfo) -> list[Header]:
        scheme = _ct_scheme(tensor, target_to_scheme, config.ignore or [])
        if scheme is None:
            return [_unchanged(tensor)]
        key = (scheme.model_dump_json(), _matrix(tensor, where), tensor.dtype)
        if key not in cache:
            cache[key] = _ct_compressed(scheme, global_format, tensor, where)
        return [_header(f"{tensor.module}.{suffix}", dtype, shape) for suffix, dtype, shape in cache[key]]

    return layout


def _meta_linear(tensor: TensorInfo):
    import torch

    from quantscope.checkpoint.anatomy import torch_dtype

    out, inputs = tensor.shape
    with torch.device("meta"):
        return torch.nn.Linear(inputs, out, bias=False, dtype=torch_dtype(tensor.dtype))


@lru_cache(maxsize=2)
def _stand_in(linear: bool):
    """A meta module to match targets against, only its class matters: an nn.Linear, or for
    lm_head a plain Module, since vLLM builds lm_head as a ParallelLMHead (an embedding), which a
    class target such as "Linear" does not match (`compressed_tensors/utils.py`,
    `find_matched_target`): only its name or a regex quantizes it."""
    import torch

    with torch.device("meta"):
        return torch.nn.Linear(1, 1, bias=False) if linear else torch.nn.Module()


def _ct_scheme(tensor: TensorInfo, target_to_scheme: Mapping[str, Any], ignore: Iterable[str]) -> Any:
    """The scheme compressed-tensors' `apply_quantization_config` attaches to this linear weight's
    module, or None: its `match_targets` precedence (name, regex, class), minus `ignore`."""
    from compressed_tensors.utils.match import is_match, match_targets

    stand_in = _stand_in(tensor.group != "lm_head")
    matched = match_targets(tensor.module, stand_in, target_to_scheme)
    if not matched or is_match(tensor.module, stand_in, list(ignore)):
        return None
    return target_to_scheme[matched[0]]


def _ct_compressed(
    scheme: Any, global_format: str | None, tensor: TensorInfo, where: str
) -> list[tuple[str, str, tuple[int, ...]]]:
    """(suffix, safetensors dtype, shape) of what compressed-tensors saves for one module."""
    from compressed_tensors.compressors.base import compress_module
    from compressed_tensors.quantization.lifecycle.initialize import initialize_module_for_quantization
    from compressed_tensors.utils import get_direct_state_dict

    from quantscope.checkpoint.anatomy import safetensors_dtype

    linear = _meta_linear(tensor)
    scheme = copy.deepcopy(scheme)
    try:
        initialize_module_for_quantization(linear, scheme, force_zero_point=False)
        compress_module(linear, scheme.format or global_format)
    except (ValueError, NotImplementedError, TypeError) as error:
        raise QuantscopeError(
            f"{where}: {tensor.module}: compressed-tensors cannot lay out its scheme on a "
            f"{list(tensor.shape)} weight ({error})"
        ) from None
    return [
        (name, safetensors_dtype(value.dtype), tuple(int(d) for d in value.shape))
        for name, value in get_direct_state_dict(linear).items()
        if value is not None  # the bias a bias-free Linear lists as None
    ]


# ---- AutoRound --------------------------------------------------------------------------------


def auto_round_settings(quant: Mapping[str, Any], module: str) -> dict[str, Any] | None:
    """The AutoRound settings (`bits`, `group_size`, `sym`, `data_type`, `act_bits`) an AutoRound
    config applies to `module`, or None when it leaves the module alone.

    Resolved as vLLM's INC loader does: `ignored_layers`, then the module's `extra_config` entry
    (`auto_round_entry`), else the global settings when the module is inside
    `block_name_to_quantize`. An entry with `bits` >= 16 is returned as is (16-bit).
    """
    if module in set(quant.get("ignored_layers") or ()):
        return None
    entry = auto_round_entry(quant, module)
    if entry is None:
        blocks = quant.get("block_name_to_quantize") or quant.get("to_quant_block_names") or ()
        blocks = blocks.split(",") if isinstance(blocks, str) else list(blocks)
        if blocks and not any(module.startswith(block) for block in blocks):
            return None
        entry = {}
    settings = {key: entry.get(key, quant.get(key)) for key in ("bits", "group_size", "sym", "data_type")}
    settings["bits"] = settings["bits"] if isinstance(settings["bits"], int) else 16
    settings["act_bits"] = entry.get("act_bits", quant.get("act_bits", 16))
    return settings


def auto_round_format(quant: Mapping[str, Any], module: str) -> str | None:
    """The quantscope format an AutoRound config stores `module` in (see `auto_round_settings`),
    or None for 16-bit. Raises QuantscopeError for settings no quantscope format stores."""
    settings = auto_round_settings(quant, module)
    if settings is None or settings["bits"] >= 16:
        return None
    return format_from_autoround(settings)


def _auto_round_tensors(tensor: TensorInfo, quant: Mapping[str, Any], where: str) -> list[Header]:
    """AutoRound's export of one weight: its declared format laid out by `formats`."""
    try:
        name = auto_round_format(quant, tensor.module)
        fmt = get_format(name) if name is not None else None
    except QuantscopeError as error:
        raise QuantscopeError(f"{where}: {tensor.module}: {error}") from None
    if fmt is None or not fmt.is_quantized or not can_quantize(_matrix(tensor, where), fmt):
        return [_unchanged(tensor)]
    packing = str(quant.get("packing_format") or "auto_round")
    if packing not in fmt.family.autoround_packings:
        raise QuantscopeError(
            f"{where}: AutoRound packing_format {packing!r} for {fmt.name}: quantscope lays out "
            "auto_round:auto_gptq (INT), auto_round:llm_compressor (NVFP4 / MXFP4) and "
            "auto_round:fp8_static / fp8 from a config. Read the checkpoint's safetensors headers instead"
        )
    # `formats` writes "BF16" for scales AutoRound stores in the model's own 16-bit dtype, and the
    # compressed-tensors per-channel FP8 scale `[out, 1]`, which AutoRound's own format stores `[out]`.
    return [
        _header(
            f"{tensor.module}.{t.suffix}",
            tensor.dtype if t.dtype == "BF16" else t.dtype,
            t.shape[:1] if packing == "auto_round:fp8_static" and t.suffix == "weight_scale" else t.shape,
        )
        for t in exported_tensors(tensor.shape, fmt)
    ]
