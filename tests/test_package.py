"""The package's front door: the README's library verbs resolve, lazily, and neither `import
quantscope` nor the CLI's start-up imports torch."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys

import pytest

import quantscope

# The README's library verbs and where each lives, written out here (not read from `_EXPORTS`).
HOMES = {
    "load_anatomy": "quantscope.checkpoint.load",
    "read_contents": "quantscope.checkpoint.contents",
    "derive_recipe": "quantscope.plan.derive",
    "plan_like": "quantscope.plan.derive",
    "Recipe": "quantscope.plan.recipe",
    "load_recipe": "quantscope.plan.recipe",
    "predict_footprint": "quantscope.plan.recipe",
    "plan_recipes": "quantscope.plan.recipe",
    "ServingOptions": "quantscope.plan.serving",
    "cache_shape": "quantscope.plan.serving",
    "cache_layout": "quantscope.plan.serving",
    "serve_recipes": "quantscope.plan.serving",
    "GpuBudget": "quantscope.plan.serving",
    "load_causal_lm": "quantscope.checkpoint.modeling",
    "QuantizeOptions": "quantscope.quantize.pipeline",
    "quantize_model": "quantscope.quantize.pipeline:quantize",
    "verify": "quantscope.quantize.verify",
    "RunSpec": "quantscope.evaluate.spec",
    "load_spec": "quantscope.evaluate.spec",
    "run_eval": "quantscope.evaluate.runner",
    "Store": "quantscope.store.database",
    "analyze": "quantscope.analysis.compare",
    "recommend": "quantscope.analysis.recommend",
    "build_report": "quantscope.report.build",
    "ProfileOptions": "quantscope.sensitivity.profiler",
    "profile_model": "quantscope.sensitivity.profiler",
    "run_profile": "quantscope.sensitivity.profiler",
    "search_recipe": "quantscope.sensitivity.search",
    "run_demo": "quantscope.demo",
}


def test_every_front_door_name_resolves_to_its_home() -> None:
    assert set(quantscope.__all__) == {"QuantscopeError", "__version__", *HOMES}
    for name, home in HOMES.items():
        module, _, attribute = home.partition(":")
        expected = getattr(importlib.import_module(module), attribute or name)
        assert getattr(quantscope, name) is expected, name
        # Defined there, not re-exported from elsewhere (Python records where a def/class ran).
        assert expected.__module__ == module, (name, expected.__module__)
    assert quantscope.QuantscopeError is importlib.import_module("quantscope.errors").QuantscopeError
    assert quantscope.__version__ == importlib.metadata.version("quantscope")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = quantscope.nothing


@pytest.mark.parametrize("module", ["quantscope", "quantscope.cli"])
def test_importing_the_package_or_the_cli_loads_no_torch(module: str) -> None:
    heavy = "[m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]"
    code = f"import sys, {module}; print({heavy})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_default_export_routes_need_no_extra() -> None:
    """`pip install -e . && quantscope demo` (the README's first command) quantizes the fp8 preset
    through AutoRound's llm_compressor export, which imports compressed-tensors without declaring
    it: the package's own requirements (as pip recorded them, no extra) must carry it."""
    from packaging.requirements import Requirement

    from quantscope.formats import get_format
    from quantscope.plan.recipe import PRESETS

    requirements = [Requirement(r) for r in importlib.metadata.requires("quantscope") or []]
    base = {r.name for r in requirements if r.marker is None or "extra" not in str(r.marker)}
    routes = {get_format(recipe.scheme).export_format for recipe in PRESETS.values()}
    assert "llm_compressor" in routes
    assert "compressed-tensors" in base
