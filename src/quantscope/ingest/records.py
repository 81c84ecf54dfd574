"""What every harness reader produces: one `Generated` per generation, the `SourceSettings` the
files recorded, and the one error message for malformed input.

A reader reads only what its harness wrote; everything quantscope derives (the thinking split,
token counts, inferred finish reasons, judgements) happens later, in `ingest.rows`, the same way
for every format. `None` always means "the source did not record it".
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from quantscope.errors import QuantscopeError


@dataclass(frozen=True)
class Generated:
    """One generation as a harness recorded it (None: the harness did not record it)."""

    where: str
    """Names it for messages ("FILE, line N")."""
    item_id: str
    """The benchmark item."""
    sample: int
    """The generation's index among that item's (0-based)."""
    prompt: str
    """What the model was asked (the harness's rendering of it)."""
    text: str
    """The completion, or only its final content when the harness kept the reasoning apart."""
    reasoning: str | None = None
    """The reasoning kept apart (vLLM's `reasoning` / `reasoning_content`)."""
    gold: str | None = None
    """The reference answer."""
    choices: tuple[str, ...] = ()
    """A multiple-choice item's options."""
    completion_tokens: int | None = None
    thinking_tokens: int | None = None
    finish_reason: str | None = None
    """As the harness wrote it."""
    correct: bool | None = None
    """The harness's own verdict."""
    seconds: float | None = None
    """The request's latency (s)."""
    seed: int | None = None
    """The sample's seed."""
    prompt_hash: str | None = None
    """The harness's fingerprint of the item (prompt and reference), kept as the row's `prompt_sha`
    so rows from the same harness pair by it (default: quantscope's own of prompt and gold)."""
    finish_inferred: bool = False
    """The harness itself had inferred the finish reason (e.g. quantscope's EEE export of an import)."""


@dataclass(frozen=True)
class SourceSettings:
    """The generation settings a source recorded (or the user declared with flags); None: unknown.

    As in `store.settings.OutputSettings`: `max_tokens` the cap in tokens, sampling as vLLM's
    (temperature 0 = greedy, top_k 0 = off), `seed` the base seed; `model` the model the harness
    names, `task` its task name, `chat_template_sha` a hash of the chat template it used.
    """

    task: str | None = None
    model: str | None = None
    thinking: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    chat_template_sha: str | None = None

    def over(self, other: SourceSettings) -> SourceSettings:
        """These settings, with `other`'s filling in what these leave unknown (flags over a file)."""
        return SourceSettings(
            **{f.name: _first(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)}
        )


@dataclass(frozen=True)
class Source:
    """What one file held: its generations (in file order) and the settings it recorded."""

    path: Path
    records: tuple[Generated, ...]
    settings: SourceSettings = field(default_factory=SourceSettings)


def _first(mine: object, theirs: object) -> object:
    return theirs if mine is None else mine


def malformed(path: Path | str, line: int | None, name: str, problem: str, fix: str) -> QuantscopeError:
    """The one message for malformed input: the file, the line (1-based; None for a whole-file
    problem), the field, what is wrong and what to do."""
    at = f"{path}, line {line}" if line is not None else str(path)
    return QuantscopeError(f"{at}, field {name!r}: {problem}; {fix}")
