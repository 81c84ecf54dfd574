"""The task protocol: a benchmark is a list of `Sample`s and a judge of final answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Sample:
    """One benchmark item: the user prompt, the gold answer and (for multiple choice) choices."""

    id: str
    prompt: str
    target: str
    choices: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Judgement:
    """Whether a final answer is right, and the answer as extracted from the text (None: none found)."""

    correct: bool
    extracted: str | None


class Task(Protocol):
    """A benchmark. Implementations live in `quantscope.tasks.<name>`."""

    name: str

    # A benchmark with levels also sets `stratify` (a ClassVar): the key of `Sample.metadata`
    # holding each item's level; the runner records it and analysis reports per level.

    def load(self, limit: int | None = None) -> list[Sample]:
        """The items, in a fixed order (first `limit` of them when given)."""
        ...

    def judge(self, sample: Sample, answer: str) -> Judgement:
        """Score the final answer text (the part after the thinking), never the thinking."""
        ...
