"""What to evaluate and how: the run spec (model, engine, tasks, thinking, sampling, cap, k, seed,
limit), its defaults and sampling presets, read from YAML with flags on top.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from quantscope.engines.base import DEFAULT_MAX_TOKENS, SamplingParams
from quantscope.engines.registry import output_engine_options
from quantscope.errors import invalid
from quantscope.records import read_yaml
from quantscope.store.settings import OutputSettings

DEFAULT_K = 1
"""Samples per item a run and a sweep draw unless told."""
DEFAULT_BATCH_SIZE = 32

# Sampling presets. The Qwen3.5 ones are the model card's "Best Practices" (huggingface.co/Qwen/
# Qwen3.5-397B-A17B, read 2026-12): thinking, general tasks: temperature 1.0, top_p 0.95, top_k 20,
# min_p 0, presence_penalty 1.5; thinking, precise coding tasks: 0.6 / 0.95 / 20 / 0, no presence
# penalty; instruct (thinking off), general: 0.7 / 0.8 / 20 / 0, presence_penalty 1.5; instruct,
# reasoning tasks: 1.0 / 1.0 / 40 / 0, presence_penalty 2.0; repetition_penalty 1.0 in all. The
# card notes the presence penalty (0-2) curbs endless repetition at some cost in language mixing.
# The Qwen3 ones are the Qwen3 cards' (no penalties). "greedy" is for debugging and smoke tests;
# the cards warn greedy decoding makes thinking models loop.
SAMPLING_PRESETS: dict[str, SamplingParams] = {
    "qwen3.5-thinking": SamplingParams(temperature=1.0, top_p=0.95, top_k=20, presence_penalty=1.5),
    "qwen3.5-thinking-precise": SamplingParams(temperature=0.6, top_p=0.95, top_k=20),
    "qwen3.5-instruct": SamplingParams(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5),
    "qwen3.5-instruct-reasoning": SamplingParams(temperature=1.0, top_p=1.0, top_k=40, presence_penalty=2.0),
    "qwen3-thinking": SamplingParams(temperature=0.6, top_p=0.95, top_k=20),
    "qwen3-instruct": SamplingParams(temperature=0.7, top_p=0.8, top_k=20),
    "greedy": SamplingParams(temperature=0.0, top_p=1.0, top_k=0),
}
DEFAULT_THINKING_PRESET = "qwen3.5-thinking"
DEFAULT_INSTRUCT_PRESET = "qwen3.5-instruct"


class TaskSpec(BaseModel):
    """One benchmark of a run: its registry name, an optional local file, and task options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        """`NAME` or `NAME=PATH` (a local JSONL/Parquet file in the task's schema)."""
        name, _, path = text.partition("=")
        return cls(name=name.strip(), path=path.strip() or None)


class RunSpec(BaseModel):
    """What to evaluate and how. Defaults: transformers engine, thinking on with the
    `qwen3.5-thinking` preset (`qwen3.5-instruct` with thinking off), max_tokens 32768, k 1,
    seed 0, every item, commit windows of at most 32 rows. `temperature` / `top_p` / `top_k` /
    `min_p` / `presence_penalty` / `repetition_penalty` override the preset's values;
    `engine_options` go to the engine (e.g. dtype, batch_size); `recipe`, `baseline`,
    `memory_bytes` (bytes of weights) and `memory_from` (a checkpoint or hub id holding the same
    weights, for a model behind a server) describe the variant for later comparison.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    tasks: tuple[TaskSpec, ...] = Field(min_length=1)
    variant: str | None = None
    engine: str = "transformers"
    thinking: bool = True
    preset: str | None = None
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    k: int = Field(default=DEFAULT_K, ge=1)
    seed: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)
    base_url: str | None = None
    engine_options: dict[str, Any] = Field(default_factory=dict)
    recipe: str | None = None
    baseline: bool = False
    memory_bytes: int | None = Field(default=None, ge=0)
    memory_from: str | None = None
    forced_budgets: tuple[int, ...] = ()
    """Budgets (completion tokens, at most the cap) at which stored samples are forced to answer
    (`quantscope.forced`); empty: none."""
    forced_answer_tokens: int = Field(default=512, ge=1)

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks_from_strings(cls, value: Any) -> Any:
        if isinstance(value, str | dict):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(TaskSpec.parse(v) if isinstance(v, str) else v for v in value)
        return value

    @field_validator("forced_budgets")
    @classmethod
    def _positive_budgets(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in value):
            raise ValueError(f"forced budgets are token counts of at least 1, got {list(value)}")
        return value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in SAMPLING_PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of {', '.join(SAMPLING_PRESETS)}")
        return value

    @property
    def variant_name(self) -> str:
        """The variant's name: `variant`, else the model directory's (or hub id's) last part."""
        return self.variant or self.model.rstrip("/").split("/")[-1]

    @property
    def model_ref(self) -> str:
        """The model as stored: an absolute path for a local directory, else the id as given."""
        path = Path(self.model).expanduser()
        return str(path.resolve()) if path.exists() else self.model

    def sampling(self) -> SamplingParams:
        """The resolved sampling settings (preset, then explicit overrides; seed left unset)."""
        name = self.preset or (DEFAULT_THINKING_PRESET if self.thinking else DEFAULT_INSTRUCT_PRESET)
        overrides = {
            name: getattr(self, name)
            for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "repetition_penalty")
            if getattr(self, name) is not None
        }
        return replace(SAMPLING_PRESETS[name], **overrides, max_tokens=self.max_tokens, seed=None)

    def output_settings(self, task: TaskSpec) -> OutputSettings:
        """Everything this spec sets that changes what (variant, task) generates (`served` is
        filled in once the engine is built)."""
        sampling = self.sampling()
        return OutputSettings(
            engine=self.engine,
            model=self.model_ref,
            task=task.name,
            thinking=self.thinking,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_tokens=self.max_tokens,
            seed=self.seed,
            min_p=sampling.min_p,
            presence_penalty=sampling.presence_penalty,
            repetition_penalty=sampling.repetition_penalty,
            task_path=str(Path(task.path).expanduser().resolve()) if task.path else None,
            task_options=task.options,
            engine_options=output_engine_options(self.engine, self.engine_options),
        )

    def generation_hash(self, task: TaskSpec) -> str:
        """A short hash of everything that changes what (variant, task) generates: the spec hash
        of a new run."""
        return self.output_settings(task).hash

    def v1_hash(self, task: TaskSpec) -> str:
        """The spec hash quantscope 0.1 gave (variant, task) (runs stored before their settings
        were recorded carry it)."""
        sampling = self.sampling()
        key = {
            "model": self.model_ref,
            "engine": self.engine,
            "task": task.name,
            "task_path": str(Path(task.path).expanduser().resolve()) if task.path else None,
            "task_options": task.options,
            "thinking": self.thinking,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }
        text = json.dumps(key, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_spec(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Build a RunSpec from a YAML file (optional) with `overrides` (e.g. CLI flags) on top.

    Override values that are None are ignored, so unset flags keep the file's values. Unknown
    keys and bad values raise QuantscopeError naming the file and field.
    """
    data = read_yaml(path, "run spec") if path is not None else {}
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return RunSpec.model_validate(data)
    except ValidationError as error:
        where = f"invalid run spec ({path if path is not None else 'command line'})"
        raise invalid(error, where, RunSpec.model_fields) from None
