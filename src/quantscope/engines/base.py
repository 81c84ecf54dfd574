"""The engine protocol: a batch of chat requests in, one `Generation` per request out.

Every backend (transformers, vLLM offline, any OpenAI-compatible server) returns the same
record, so the runner, the store and the analysis never know which engine produced a row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings for one request. temperature 0 means greedy; top_k 0 means off."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 32768
    seed: int | None = None


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One conversation to complete, with its sampling and whether the model may think first."""

    messages: tuple[Message, ...]
    sampling: SamplingParams
    enable_thinking: bool = True


@dataclass(frozen=True)
class Generation:
    """What one request produced.

    `text` is the whole completion; `thinking` is what came before `</think>` and `answer`
    what came after it (empty when the generation was cut inside the thinking).
    Token counts are completion tokens (thinking included); `finish_reason` is "stop" or
    "length" (hit `max_tokens`); `seconds` is the wall time attributed to this request.
    """

    text: str
    thinking: str
    answer: str
    completion_tokens: int
    thinking_tokens: int
    finish_reason: str
    seconds: float

    @property
    def truncated(self) -> bool:
        """True when generation stopped at the token cap."""
        return self.finish_reason == "length"


ProgressCallback = Callable[[int], None]
"""Called with the number of requests just completed."""


class Engine(Protocol):
    """A generation backend. Implementations live in `quantscope.engines.<name>`."""

    name: str

    def generate(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[Generation]:
        """Complete every request; the result is in request order."""
        ...

    def close(self) -> None:
        """Release the model / connections."""
        ...
