"""The engine protocol: a batch of chat requests in, one `Generation` per request out.

Every backend (transformers, vLLM offline, any OpenAI-compatible server) returns the same
record, so the runner, the store and the analysis never know which engine produced a row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    what came after it (empty when the generation was cut inside the thinking); see
    `split_thinking`. `completion_tokens` counts every generated token (thinking and the final
    end-of-turn token included, as vLLM's `usage.completion_tokens` does); `thinking_tokens` the
    tokens before `</think>` (all of them when cut inside the thinking, 0 with thinking off).
    `finish_reason` is "stop" or "length" (hit `max_tokens`); `seconds` is the request's latency:
    wall time from when the engine started working on it (its batch, its HTTP call) to its last token.
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


def split_thinking(text: str, thinking: bool = True) -> tuple[str, str]:
    """Split a completion into (thinking, answer), both stripped of surrounding whitespace.

    Qwen3 / Qwen3.5 chat templates put `<think>\n` into the prompt, so a completion usually
    holds only `reasoning</think>answer` (a `<think>` the model writes itself is dropped).
    With `thinking` on, a completion without `</think>` was cut (or ended) inside the thinking:
    it is all thinking and the answer is empty. With `thinking` off the template already closed
    the think block: all of it is answer. Stray `</think>` tags in the answer are dropped. This
    is how vLLM's qwen3 reasoning parser splits, so every engine reports the same fields.
    """
    if not thinking:
        return "", text.replace(THINK_CLOSE, "").strip()
    head, closed, tail = text.partition(THINK_CLOSE)
    if not closed:
        return head.replace(THINK_OPEN, "").strip(), ""
    return head.replace(THINK_OPEN, "").strip(), tail.replace(THINK_CLOSE, "").strip()


def chat_prompt(tokenizer: Any, request: ChatRequest) -> str:
    """The request rendered by the tokenizer's chat template, ready for the assistant's turn
    (`enable_thinking` passed to the template, as `chat_template_kwargs` does in vLLM)."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=request.enable_thinking
    )


def think_close_id(tokenizer: Any) -> int | None:
    """The id of `</think>` when the tokenizer encodes it as one token (Qwen3 / Qwen3.5 do), else None."""
    ids = tokenizer.encode(THINK_CLOSE, add_special_tokens=False)
    return int(ids[0]) if len(ids) == 1 else None


def count_thinking_tokens(token_ids: Sequence[int], close_id: int, thinking: bool = True) -> int:
    """Number of completion tokens before the first `</think>` token (all of them when it never came).

    `token_ids` are the generated ids, `close_id` the id of `</think>` (see `think_close_id`).
    The tag itself is not counted: it belongs to neither the reasoning nor the answer.
    With `thinking` off the count is 0.
    """
    if not thinking:
        return 0
    for i, token in enumerate(token_ids):
        if token == close_id:
            return i
    return len(token_ids)


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
