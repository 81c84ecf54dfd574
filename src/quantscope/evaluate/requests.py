"""The requests a run sends: one chat request per (item, sample), and the engine's stream of them.
Shared by the runner and by forced answers, which replay stored samples through the same engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from quantscope.engines.base import ChatRequest, Engine, Message, Outcome, stream_in_chunks
from quantscope.evaluate.spec import RunSpec
from quantscope.tasks.base import Sample


def chat_request(spec: RunSpec, sample: Sample, index: int) -> ChatRequest:
    """The request for sample `index` of `sample` under `spec` (its seed: spec.seed + index)."""
    return ChatRequest(
        messages=(Message(role="user", content=sample.prompt),),
        sampling=replace(spec.sampling(), seed=spec.seed + index),
        enable_thinking=spec.thinking,
    )


def engine_stream(
    engine: Engine, requests: Sequence[ChatRequest], batch_size: int
) -> Iterator[tuple[int, Outcome]]:
    """The engine's own stream (it keeps its queue full), or, for an engine with only `generate`,
    chunks of `batch_size` requests."""
    if callable(getattr(engine, "stream", None)):
        return engine.stream(requests)
    return stream_in_chunks(engine, requests, batch_size)
