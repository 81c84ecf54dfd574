"""The engine protocol: chat requests in, each one's outcome out as soon as it is finished.

`Engine.stream(requests)` yields `(index, outcome)` pairs in completion order, where the outcome
is a `Generation`, or a `RequestFailure` for a request that failed after its retries (the others
go on). Each engine keeps its own queue full (vLLM's scheduler gets every request, a server gets
`concurrency` at a time), so a long generation never holds back the short ones. `generate`
collects a stream into request order for callers that want a list. Every backend (transformers,
vLLM offline, any OpenAI-compatible server) returns the same records, so the runner, the store
and the analysis never know which engine produced a row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from quantscope.errors import QuantscopeError

DEFAULT_MAX_TOKENS = 32768
"""The default generation cap (tokens): the study's reasoning cap. The one definition: a run's and a
sweep's `max_tokens` and the serving plan's context default to it."""

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings for one request, with vLLM's meanings: temperature 0 is greedy; top_k 0,
    min_p 0, presence_penalty 0 and repetition_penalty 1 are off. `presence_penalty` subtracts
    from the logit of every token already generated; `repetition_penalty` divides positive logits
    (multiplies negative ones) of every token in the prompt or the output."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None
    min_p: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One conversation to complete, with its sampling and whether the model may think first.
    `continuation`: text the assistant's turn already holds, appended to the rendered prompt (a
    forced answer: thinking cut at a budget and closed); the completion is what follows it."""

    messages: tuple[Message, ...]
    sampling: SamplingParams
    enable_thinking: bool = True
    continuation: str = ""

    @property
    def thinks(self) -> bool:
        """Whether the completion starts inside the thinking (on, and not closed by the continuation)."""
        return self.enable_thinking and THINK_CLOSE not in self.continuation


@dataclass(frozen=True)
class Generation:
    """What one request produced.

    `text` is the whole completion; `thinking` is what came before `</think>` and `answer`
    what came after it (empty when the generation was cut inside the thinking); see
    `split_thinking`. `completion_tokens` counts every generated token (thinking and the final
    end-of-turn token included, as vLLM's `usage.completion_tokens` does); `thinking_tokens` the
    tokens before `</think>` (all of them when cut inside the thinking, 0 with thinking off).
    `finish_reason` is "stop" or "length" (hit `max_tokens`; any other reason, such as vLLM's
    "abort", makes the request a `RequestFailure`); `seconds` is the request's latency:
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
    (`enable_thinking` passed to the template, as `chat_template_kwargs` does in vLLM), then
    the request's `continuation`."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=request.enable_thinking
    )
    return rendered + request.continuation


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


FINISHED = ("stop", "length")
"""Finish reasons of a generation that ended normally; any other (vLLM's "abort") is a failure."""


@dataclass(frozen=True)
class RequestFailure:
    """A request that produced no usable generation after `attempts` tries, and why."""

    error: str
    attempts: int = 1


Outcome = Generation | RequestFailure
ProgressCallback = Callable[[int], None]
"""Called with the number of requests just completed."""


class Engine(Protocol):
    """A generation backend. Implementations live in `quantscope.engines.<name>`."""

    name: str

    def stream(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Outcome]]:
        """Every request's outcome, `(index into requests, outcome)`, as each finishes."""
        ...

    def generate(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[Generation]:
        """Complete every request; the result is in request order (QuantscopeError on failures)."""
        ...

    def close(self) -> None:
        """Release the model / connections."""
        ...


def collect(
    completions: Iterable[tuple[int, Outcome]],
    count: int,
    engine: str,
    progress: ProgressCallback | None = None,
) -> list[Generation]:
    """A stream's outcomes in request order; QuantscopeError naming the failures, if any."""
    results: list[Generation | None] = [None] * count
    failures: list[tuple[int, RequestFailure]] = []
    for index, outcome in completions:
        if isinstance(outcome, RequestFailure):
            failures.append((index, outcome))
        else:
            results[index] = outcome
        if progress is not None:
            progress(1)
    if failures:
        index, first = min(failures, key=lambda f: f[0])
        raise QuantscopeError(
            f"engine {engine!r}: {len(failures)} of {count} requests failed (request {index}: {first.error})"
        )
    return [g for g in results if g is not None]


def stream_in_chunks(
    engine: Any, requests: Sequence[ChatRequest], size: int
) -> Iterator[tuple[int, Outcome]]:
    """The stream of an engine that only has `generate`: chunks of `size` requests, one call each."""
    for start in range(0, len(requests), size):
        chunk = requests[start : start + size]
        generations = engine.generate(chunk)
        if len(generations) != len(chunk):
            raise QuantscopeError(
                f"engine {getattr(engine, 'name', '?')!r} returned {len(generations)} generations for "
                f"{len(chunk)} requests"
            )
        yield from ((start + i, g) for i, g in enumerate(generations))


def outcome_of(generation: Generation) -> Outcome:
    """`generation`, or a RequestFailure when it did not finish normally (see `FINISHED`)."""
    if generation.finish_reason in FINISHED:
        return generation
    return RequestFailure(f"finish_reason {generation.finish_reason!r}")
