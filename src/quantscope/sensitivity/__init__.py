"""Sensitivity profiling and recipe search: which parts of a model survive quantization.

`numerics.fakequant` quantize-dequantizes weights in place exactly as each format rounds; `units` groups
the weights a recipe quantizes; `meter` measures the KL divergence of next-token distributions
against the original model, overall and by token position; `profiler` runs it for every unit
(and `run_profile` is the whole `quantscope profile` command); `records` is the profile on disk;
`search` picks the recipe with the least summed damage that fits a memory budget.

The names below load on first use, so `import quantscope.sensitivity` stays cheap.
"""

from quantscope.util import lazy_attributes

_EXPORTS = {
    name: f"quantscope.sensitivity.{module}:{name}"
    for name, module in {
        "Damage": "records",
        "SensitivityProfile": "records",
        "UnitProfile": "records",
        "load_profile": "records",
        "save_profile": "records",
        "Profiler": "profiler",
        "ProfileOptions": "profiler",
        "ProfileRun": "profiler",
        "profile_model": "profiler",
        "run_profile": "profiler",
        "SearchResult": "search",
        "search_recipe": "search",
    }.items()
}
# Quantize-dequantize lives one floor down, in `numerics/`, shared with the loader and quantize.
_EXPORTS |= {
    name: f"quantscope.numerics.fakequant:{name}" for name in ("fake_quantized", "quantize_dequantize")
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_attributes(__name__, _EXPORTS)
