"""What a checkpoint stores, and what its quantization_config tells vLLM, per linear module.

`stored_kinds` reads the safetensors headers (packed int, NVFP4, MXFP4, FP8 or 16-bit, via `contents`);
`declared_kind` resolves a module against the `quantization_config` the way vLLM's loaders do
(AutoRound's `extra_config` as its INC loader matches it, compressed-tensors' `ignore` list).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from quantscope.checkpoint.anatomy import Anatomy
from quantscope.checkpoint.contents import SIXTEEN, stored_weights
from quantscope.checkpoint.declared import auto_round_settings, modelopt_algo
from quantscope.errors import QuantscopeError
from quantscope.formats import (
    family_from_autoround,
    family_from_compressed_tensors,
    family_from_modelopt,
    get_format,
)

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


def modelopt_kind(config: Mapping[str, Any], module: str) -> str:
    """The stored kind ("nvfp4", "fp8", "int" or "16bit") ModelOpt declares for `module`."""
    algo = modelopt_algo(config, module)
    if algo is None:
        return SIXTEEN
    # the algos vLLM 0.32's ModelOpt loader builds (vllm/model_executor/layers/quantization/
    # modelopt.py, LINEAR_ALGOS), plus ModelOpt's INT4 AWQ exports, which quantscope reads and sizes
    # but vLLM 0.32 does not load: `Family.modelopt_algos` in the format registry
    family = family_from_modelopt(algo)
    if family is None:
        raise QuantscopeError(f"{module}: ModelOpt quant_algo {algo!r} is not one quantscope reads")
    return family


def _auto_round_data_kind(entry: Mapping[str, Any], default: Mapping[str, Any]) -> str:
    bits = entry.get("bits", default.get("bits", 16))
    if bits >= 16:
        return SIXTEEN
    return family_from_autoround(str(entry.get("data_type", default.get("data_type", "int"))), bits)


def _auto_round_kind(config: Mapping[str, Any], module: str) -> str:
    settings = auto_round_settings(config, module)
    return SIXTEEN if settings is None else _auto_round_data_kind(settings, {})


def _compressed_tensors_kind(config: Mapping[str, Any], module: str) -> str:
    for target in config.get("ignore") or ():
        if (target.startswith("re:") and re.match(target[3:], module)) or target == module:
            return SIXTEEN
    for group in (config.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        if weights.get("num_bits", 16) < 16:
            return family_from_compressed_tensors(weights)
    return SIXTEEN
