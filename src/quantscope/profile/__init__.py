"""Sensitivity profiling and recipe search: which parts of a model survive quantization.

`fakequant` quantize-dequantizes weights in place exactly as each format rounds;
`sensitivity` measures, per group of layers, the KL divergence of next-token distributions
against the original model, overall and by token position; `search` picks the recipe with the
least summed damage that fits a memory budget.

The names below load on first use, so `import quantscope.profile` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Damage": "sensitivity",
    "Profiler": "sensitivity",
    "SensitivityProfile": "sensitivity",
    "UnitProfile": "sensitivity",
    "load_profile": "sensitivity",
    "profile_model": "sensitivity",
    "save_profile": "sensitivity",
    "SearchResult": "search",
    "search_recipe": "search",
    "fake_quantized": "fakequant",
    "quantize_dequantize": "fakequant",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'quantscope.profile' has no attribute {name!r}")
    return getattr(importlib.import_module(f"quantscope.profile.{_EXPORTS[name]}"), name)
