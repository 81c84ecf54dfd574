"""The rows the results database holds: a variant, the settings a run was made under, one judged
generation, one forced answer, one failed request. `database.Store` writes and reads them; the
evaluate stage makes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """A model variant under evaluation: its name, where it lives, and what it costs in memory.

    `memory_bytes` is the weights' size in bytes (None when unknown) and `memory_source` where
    that figure came from (e.g. "checkpoint files", "hub headers", "given"); `recipe` the
    quantization recipe name (None for an original checkpoint); `is_baseline` marks the
    reference the others are compared against.
    """

    name: str
    model_path: str
    memory_bytes: int | None = None
    recipe: str | None = None
    is_baseline: bool = False
    memory_source: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """The settings a (variant, task)'s rows were generated under, one row of the runs table;
    `spec_hash` names them. Sampling settings and seed are None when unknown (an import whose
    source kept none)."""

    spec_hash: str
    variant: str
    task: str
    engine: str
    model_path: str
    thinking_mode: bool
    """Whether the chat template asked the model to think."""
    temperature: float | None
    top_p: float | None
    top_k: int | None
    max_tokens: int
    """The generation cap (tokens)."""
    seed: int | None
    """The base seed: sample j used seed + j."""
    spec_json: str
    """The whole run spec as JSON."""
    created: float
    """When the run was recorded (unix seconds)."""
    settings_json: str | None = None
    """Every output setting (`store.settings.OutputSettings` as JSON; None for runs stored by
    quantscope < 0.2)."""
    environment_json: str | None = None
    """Where the run happened (library versions, device; never compared)."""


@dataclass(frozen=True)
class ResultRow:
    """One generation of one benchmark item and its judgement (see `store.database`'s docstring for
    units). Token counts are None when unknown (an import without counts or a tokenizer);
    `finish_inferred` marks a finish reason inferred rather than recorded."""

    variant: str
    task: str
    item_id: str
    sample: int
    spec_hash: str
    seed: int | None
    target: str
    text: str
    thinking: str
    answer: str
    completion_tokens: int | None
    thinking_tokens: int | None
    answer_tokens: int | None
    finish_reason: str
    seconds: float
    correct: bool
    extracted: str | None
    created: float
    prompt_sha: str | None = None
    finish_inferred: bool = False


@dataclass(frozen=True)
class ForcedRow:
    """A forced answer: sample (variant, task, item_id, sample) cut at `budget` completion
    tokens and made to answer (see the module docstring)."""

    variant: str
    task: str
    item_id: str
    sample: int
    budget: int
    text: str
    answer: str
    answer_tokens: int
    finish_reason: str
    correct: bool
    extracted: str | None
    created: float


@dataclass(frozen=True)
class Failure:
    """A request that failed after its retries: the row it would have been, the error and how many
    attempts were made. A later success for the same key removes it."""

    variant: str
    task: str
    item_id: str
    sample: int
    spec_hash: str
    error: str
    attempts: int
    created: float


@dataclass(frozen=True)
class SignalRow:
    """One generation's trace signals: its key (variant, task, item_id, sample), the version of the
    rules that produced them, and one value per column of its `SignalBatch`."""

    key: tuple[str, str, str, int]
    rules: str
    values: tuple[int | float | str | None, ...]


@dataclass(frozen=True)
class SignalBatch:
    """Trace signals to store (`analysis.signal_table` declares them): the (name, SQL type) of
    each column and one `SignalRow` per generation."""

    columns: tuple[tuple[str, str], ...]
    rows: tuple[SignalRow, ...]


__all__ = ["Failure", "ForcedRow", "ResultRow", "RunRecord", "SignalBatch", "SignalRow", "Variant"]
