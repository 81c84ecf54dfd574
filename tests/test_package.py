"""The package's front door: the README's library verbs resolve, lazily, and neither `import
quantscope` nor the CLI's start-up imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import quantscope


def test_every_front_door_name_resolves_to_its_home() -> None:
    from quantscope.analysis.compare import analyze
    from quantscope.quantize.pipeline import quantize
    from quantscope.store import Store

    for name in quantscope.__all__:
        assert getattr(quantscope, name) is not None, name
    assert (quantscope.analyze, quantscope.quantize_model, quantscope.Store) == (analyze, quantize, Store)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = quantscope.nothing


@pytest.mark.parametrize("module", ["quantscope", "quantscope.cli"])
def test_importing_the_package_or_the_cli_loads_no_torch(module: str) -> None:
    heavy = "[m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]"
    code = f"import sys, {module}; print({heavy})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
