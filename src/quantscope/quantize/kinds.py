"""What a checkpoint stores, and what its quantization_config tells vLLM, per linear module.

`stored_kinds` reads the safetensors headers (packed int, NVFP4, MXFP4, FP8 or 16-bit, via `storage`);
`declared_kind` resolves a module against the `quantization_config` the way vLLM's loaders do
(AutoRound's `extra_config` as its INC loader matches it, compressed-tensors' `ignore` list).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from quantscope.anatomy import Anatomy
from quantscope.errors import QuantscopeError
from quantscope.formats import get_format
from quantscope.storage import SIXTEEN, auto_round_entry, stored_weights

_REGEX_CHARS = set(r"*+?^$()[]{}|\\")


def kind_of_format(name: str) -> str:
    """The stored kind of a quantscope format: "int", "nvfp4", "mxfp4", "fp8" or "16bit"."""
    fmt = get_format(name)
    return fmt.data_type if fmt.is_quantized else SIXTEEN


def stored_kinds(export: Anatomy) -> dict[str, str]:
    """Exported linear module -> the kind its tensors on disk hold (from headers only; the
    recognition itself is `storage.stored_weights`)."""
    return {module: weight.kind for module, weight in stored_weights(export).items()}


def declared_kind(quant_config: Mapping[str, Any], module: str) -> str:
    """The kind a checkpoint's quantization_config tells vLLM to build `module` as."""
    method = str(quant_config.get("quant_method", "")).replace("_", "-")
    if method == "auto-round":
        return _auto_round_kind(quant_config, module)
    if method == "compressed-tensors":
        return _compressed_tensors_kind(quant_config, module)
    if method == "modelopt":
        return modelopt_kind(quant_config, module)
    raise QuantscopeError(
        f"quant_method {method!r} is not one quantscope reads (auto-round, compressed-tensors, modelopt)"
    )


# ModelOpt quant_algo -> stored kind, for the algos vLLM's ModelOpt loader builds
# (vllm/model_executor/layers/quantization/modelopt.py, QUANT_ALGOS).
_MODELOPT_KINDS = {
    "NVFP4": "nvfp4",
    "W4A16_NVFP4": "nvfp4",
    "FP8": "fp8",
    "FP8_PER_CHANNEL_PER_TOKEN": "fp8",
    "FP8_PB_WO": "fp8",
    "MXFP8": "fp8",
    "W4A16_AWQ": "int",
    "W4A8_AWQ": "int",
}


def modelopt_algo(config: Mapping[str, Any], module: str) -> str | None:
    """The ModelOpt quant_algo `module` is stored in, or None when it stays 16-bit.

    Resolved as vLLM's ModelOpt loader does (`_resolve_quant_algo`, `is_layer_excluded`):
    MIXED_PRECISION looks the module up in `quantized_layers` (exactly, or under a listed parent
    such as a fused `mlp.experts` container: ModelOpt lists the container and exports per-expert
    weights), unlisted modules are 16-bit; otherwise `quant_algo` applies unless an
    `exclude_modules` (hf_quant_config.json) or `ignore` (config.json) entry matches: exactly, as a
    substring, or as an fnmatch pattern (`name*` also meaning `name` and `name.*`).
    """
    algo = str(config.get("quant_algo") or "").upper()
    if algo == "MIXED_PRECISION":
        layers = config.get("quantized_layers") or {}
        for candidate in _modelopt_names(module):
            parts = candidate.split(".")
            for end in range(len(parts), 0, -1):  # the module itself, then each parent
                entry = layers.get(".".join(parts[:end]))
                if entry is not None:
                    return str(entry.get("quant_algo", "")).upper() or None
        return None
    excluded = _exclusion_regex(tuple(config.get("exclude_modules") or config.get("ignore") or ()))
    if excluded is not None and any(excluded.search(name) for name in _modelopt_names(module)):
        return None
    return algo or None


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


def modelopt_kind(config: Mapping[str, Any], module: str) -> str:
    """The stored kind ("nvfp4", "fp8", "int" or "16bit") ModelOpt declares for `module`."""
    algo = modelopt_algo(config, module)
    if algo is None:
        return SIXTEEN
    if algo not in _MODELOPT_KINDS:
        raise QuantscopeError(f"{module}: ModelOpt quant_algo {algo!r} is not one quantscope reads")
    return _MODELOPT_KINDS[algo]


def _auto_round_data_kind(entry: Mapping[str, Any], default: Mapping[str, Any]) -> str:
    bits = entry.get("bits", default.get("bits", 16))
    if bits >= 16:
        return SIXTEEN
    data_type = str(entry.get("data_type", default.get("data_type", "int")))
    if data_type.startswith("nv_fp"):
        return "nvfp4"
    if data_type.startswith("mx_fp"):
        return "mxfp4"
    if data_type in ("fp", "float") and bits == 8:
        return "fp8"
    return "int"


def _auto_round_kind(config: Mapping[str, Any], module: str) -> str:
    # Mirrors vLLM's INC resolution: an exact extra_config key, a key that is a suffix of the
    # name, then regex keys (searched); otherwise quantized iff inside block_name_to_quantize.
    ignored = set(config.get("ignored_layers") or ())
    if module in ignored:
        return SIXTEEN
    entry = auto_round_entry(config, module)
    if entry is not None:
        return _auto_round_data_kind(entry, config)
    blocks = config.get("block_name_to_quantize") or config.get("to_quant_block_names") or ()
    blocks = blocks.split(",") if isinstance(blocks, str) else list(blocks)
    inside = any(module.startswith(block) for block in blocks) if blocks else True
    return _auto_round_data_kind({}, config) if inside else SIXTEEN


def _compressed_tensors_kind(config: Mapping[str, Any], module: str) -> str:
    for target in config.get("ignore") or ():
        if (target.startswith("re:") and re.match(target[3:], module)) or target == module:
            return SIXTEEN
    for group in (config.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        bits, kind, size = weights.get("num_bits", 16), weights.get("type"), weights.get("group_size")
        if bits >= 16:
            continue
        if kind == "int":
            return "int"
        if bits == 8:
            return "fp8"
        return "nvfp4" if size == 16 else "mxfp4"
    return SIXTEEN
