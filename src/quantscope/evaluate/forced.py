"""Forced answers: what would a sample have answered had it been made to stop at B tokens?

The censored budget curve (`analysis.metrics`) counts a sample as correct at budget B only when it
finished within B completion tokens. A forced answer asks the model instead: for every stored
sample that did not finish within B (B in completion tokens; B = the cap included, where the
samples that hit the cap are forced), its completion is cut at B tokens, its thinking closed
with `</think>` and the model's answer prefix (`close`) when the cut falls inside the thinking,
and at most `answer_tokens` answer tokens are generated after it. The answer is judged as the
run's are, and stored as its own row keyed by (sample, budget) in the store's `forced` table.

The store keeps text, not token ids, so the completion is re-tokenized: the cut is made only when
re-tokenizing the stored text gives back as many tokens as the engine generated and the first B
of them decode to a prefix of the text; otherwise the sample is skipped and counted (a cut at
another place would not be the model's own prefix). Requests go through the run's engine with the
cut text as the assistant turn's `continuation`: plain prompts on transformers, token prompts on
vLLM (whose prefix caching reuses the prompt's KV), and `/v1/completions` with the prompt
rendered here on OpenAI-compatible servers (a chat request cannot carry it: Qwen3.5's chat
template re-renders the reasoning of an assistant turn). Sampling is the run's, with each
sample's own seed; only max_tokens changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from quantscope.engines.base import (
    THINK_CLOSE,
    ChatRequest,
    Engine,
    Generation,
    RequestFailure,
    split_thinking,
)
from quantscope.errors import QuantscopeError
from quantscope.store.database import Store
from quantscope.store.rows import ForcedRow
from quantscope.tasks.base import Sample, Task

FORCED_CLOSE = "\n</think>\n\n"
"""What closes a cut thinking: Qwen3 / Qwen3.5's (and the bundled reasoner's) own close."""
DEFAULT_ANSWER_TOKENS = 512


@dataclass(frozen=True)
class ForcedSummary:
    """One task's forced pass: answers generated now, samples skipped because re-tokenizing
    their text did not give back the engine's tokens (`skipped`, with one example reason), and
    requests that failed."""

    task: str
    budgets: tuple[int, ...]
    generated: int
    skipped: int
    failed: int
    skip_reason: str = ""


def needs_forcing(row: Mapping[str, Any], budget: int) -> bool:
    """Whether a stored sample did not finish within `budget` completion tokens."""
    counted = row["completion_tokens"]  # None: unknown (an imported row), so not known to have finished
    return not (row["finish_reason"] == "stop" and counted is not None and int(counted) <= budget)


def cut_at(tokenizer: Any, row: Mapping[str, Any], budget: int, close: str = FORCED_CLOSE) -> str:
    """The continuation for a stored sample cut at `budget` completion tokens: its first `budget`
    tokens, plus `close` when the cut falls inside the thinking. QuantscopeError saying why when
    re-tokenizing its text does not reproduce the engine's tokens."""
    text = row["text"]
    if row["completion_tokens"] is None:
        raise QuantscopeError("its token count is unknown (imported without one): no B-token cut to make")
    ids = tokenizer.encode(text, add_special_tokens=False)
    generated = int(row["completion_tokens"]) - (row["finish_reason"] == "stop")  # the end-of-turn token
    if len(ids) != generated:
        raise QuantscopeError(f"re-tokenized to {len(ids)} tokens, the engine generated {generated}")
    prefix = tokenizer.decode(ids[:budget], skip_special_tokens=False)
    if not text.startswith(prefix):
        raise QuantscopeError(
            f"the first {budget} tokens decode to text that is not a prefix of the sample's"
        )
    still_thinking = int(row["thinking_tokens"]) >= budget and THINK_CLOSE not in prefix and row["thinking"]
    return prefix + close if still_thinking else prefix


def forced_answer(continuation: str, generation: Generation, thinking: bool) -> str:
    """The final answer a forced generation gives: what follows `</think>` in the cut text and
    the generated continuation together."""
    _, answer = split_thinking(continuation + generation.text, thinking)
    return answer


def run_forced(
    spec: Any,
    task: Task,
    samples: Sequence[Sample],
    store: Store,
    engine: Engine,
    *,
    chunk: int = 32,
) -> ForcedSummary:
    """Force answers for every (stored sample, budget in `spec.forced_budgets`) of (spec's
    variant, `task`) that needs one and is not stored yet; commit them in chunks of `chunk`."""
    from quantscope.evaluate.requests import chat_request, engine_stream

    budgets = tuple(sorted(set(spec.forced_budgets)))
    over = [b for b in budgets if b > spec.max_tokens]
    if over:
        raise QuantscopeError(
            f"--forced-budgets {over}: above the cap of {spec.max_tokens} tokens; a budget is at most the cap"
        )
    variant, by_id = spec.variant_name, {s.id: s for s in samples}
    done = {(r.item_id, r.sample, r.budget) for r in store.forced(variant, task.name)}
    tokenizer = engine_tokenizer(engine)
    requests: list[ChatRequest] = []
    keys: list[tuple[Sample, int, int, str]] = []
    skipped, reason = 0, ""
    for row in store.rows(variant, task.name):
        sample = by_id.get(str(row["item_id"]))
        for budget in budgets:
            if sample is None or (sample.id, row["sample"], budget) in done or not needs_forcing(row, budget):
                continue
            try:
                continuation = cut_at(tokenizer, row, budget)
            except QuantscopeError as error:
                skipped, reason = skipped + 1, reason or f"{sample.id} sample {row['sample']}: {error}"
                continue
            request = chat_request(spec, sample, int(row["sample"]))
            sampling = replace(request.sampling, max_tokens=spec.forced_answer_tokens)
            requests.append(replace(request, continuation=continuation, sampling=sampling))
            keys.append((sample, int(row["sample"]), budget, continuation))
    generated = failed = 0
    batch: list[ForcedRow] = []
    for index, outcome in engine_stream(engine, requests, spec.batch_size):
        if isinstance(outcome, RequestFailure):
            failed += 1
            continue
        sample, j, budget, continuation = keys[index]
        batch.append(_row(variant, task, sample, j, budget, continuation, outcome, spec.thinking))
        if len(batch) >= chunk:
            generated += store.write_forced(batch)
            batch = []
    generated += store.write_forced(batch)
    return ForcedSummary(task.name, budgets, generated, skipped, failed, reason)


def _row(
    variant: str,
    task: Task,
    sample: Sample,
    j: int,
    budget: int,
    continuation: str,
    g: Generation,
    thinking: bool,
) -> ForcedRow:
    answer = forced_answer(continuation, g, thinking)
    judgement = task.judge(sample, answer)
    return ForcedRow(
        variant=variant,
        task=task.name,
        item_id=sample.id,
        sample=j,
        budget=budget,
        text=g.text,
        answer=answer,
        answer_tokens=g.completion_tokens,
        finish_reason=g.finish_reason,
        **asdict(judgement),  # correct, extracted
        created=time.time(),
    )


def engine_tokenizer(engine: Engine) -> Any:
    """The tokenizer an engine renders prompts with (the OpenAI engine's `tokenizer` option)."""
    tokenizer = getattr(engine, "tokenizer", None)
    if callable(tokenizer) and not hasattr(tokenizer, "encode"):
        tokenizer = tokenizer()
    if tokenizer is None or not hasattr(tokenizer, "encode"):
        raise QuantscopeError(
            f"engine {getattr(engine, 'name', engine)!r} has no tokenizer to cut samples with"
        )
    return tokenizer
