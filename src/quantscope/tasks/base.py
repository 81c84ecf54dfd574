"""The task protocol: a benchmark is a list of `Sample`s and a judge of final answers, plus the
hooks the stages read from its class (where its dataset lives, its levels, its trace patterns)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class Sample:
    """One benchmark item: the user prompt, the gold answer and (for multiple choice) choices."""

    id: str
    prompt: str
    target: str
    choices: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HubDataset:
    """Where a benchmark lives on the Hugging Face Hub and which fields each row must have."""

    repo_id: str
    split: str
    required: tuple[str, ...]
    config: str | None = None
    access_note: str = ""
    """Extra advice when the hub load fails (e.g. how to get access to a gated dataset)."""
    items: int | None = None
    """The split's published size (rows), for estimates made without downloading it."""


@dataclass(frozen=True)
class Judgement:
    """Whether a final answer is right, and the answer as extracted from the text (None: none found)."""

    correct: bool
    extracted: str | None


class Task(Protocol):
    """A benchmark. Implementations live in `quantscope.tasks.<name>`; the hub benchmarks subclass
    `tasks.loading.HubTask`, which gives the hooks below their defaults (no levels, not math, the
    judge's own comparison unknown). The stages read the hooks from the task's class, so a listing
    or a sweep's dry run never loads a dataset."""

    name: str
    hub: ClassVar[HubDataset | None]
    """The published dataset (its item count sizes a sweep's dry run); None: generated locally."""
    stratify: ClassVar[str | None]
    """The key of `Sample.metadata` holding each item's level (the runner records it, analysis
    reports per level); None: no levels."""
    answer_patterns: ClassVar[tuple[str, ...] | None]
    """A math task's own regexes (MULTILINE, one group) for an answer stated in the thinking, ()
    for the default patterns only; None: not a math task (no "found the answer" signal)."""
    hesitation_patterns: ClassVar[tuple[str, ...]]
    """The task's own regexes (MULTILINE) for a hesitation in its trace format, beside the markers."""
    same_answer: ClassVar[Callable[[str, str], bool] | None]
    """How two extracted answers compare, as the judge compares an answer with the gold (maj@k
    votes, answer agreement); None: unknown (compared as text)."""

    def load(self, limit: int | None = None) -> list[Sample]:
        """The items, in a fixed order (first `limit` of them when given)."""
        ...

    def judge(self, sample: Sample, answer: str) -> Judgement:
        """Score the final answer text (the part after the thinking), never the thinking."""
        ...
