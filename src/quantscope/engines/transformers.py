"""The transformers engine: the CPU / offline default, and the reference the other engines match.

Requests are templated with the model's chat template (`enable_thinking` passed through),
sorted by prompt length and run in left-padded batches through `model.generate`. Sampling is
done per row by `_RowSampler`, a logits processor that draws each row's token with that row's
temperature / top-p / top-k and its own seeded `torch.Generator`, then hands `generate` a
one-hot score so its greedy step picks it. That keeps a request's samples reproducible from its
seed alone, and lets one batch mix greedy and sampled requests, which `generate`'s global RNG
cannot. Requests that differ in `max_tokens` go into different batches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor

from quantscope.checkpoint.modeling import DTYPES, load_causal_lm
from quantscope.engines.base import (
    ChatRequest,
    Generation,
    Outcome,
    ProgressCallback,
    RequestFailure,
    SamplingParams,
    chat_prompt,
    collect,
    count_thinking_tokens,
    split_thinking,
    think_close_id,
)
from quantscope.engines.options import TransformersOptions
from quantscope.errors import QuantscopeError
from quantscope.store.settings import text_fingerprint


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) everything outside each row's top-k tokens and top-p nucleus ([rows, vocab])."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already cover top_p (the first always stays)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits


def _min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Mask every token whose probability is below `min_p` times the row's top probability."""
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))


def _penalize(
    scores: torch.Tensor, prompt: torch.Tensor, output: torch.Tensor, p: SamplingParams
) -> torch.Tensor:
    """One row's logits with vLLM's penalties (`vllm/model_executor/layers/utils.py`,
    `apply_penalties`): the repetition penalty divides the positive logits (multiplies the
    negative ones) of every token in the prompt or the output; the presence penalty is
    subtracted from the logits of every token already generated."""
    seen_output = torch.zeros_like(scores, dtype=torch.bool).index_fill_(0, output, True)
    if p.repetition_penalty != 1.0:
        seen = seen_output.clone().index_fill_(0, prompt, True)
        scale = torch.where(scores > 0, 1.0 / p.repetition_penalty, p.repetition_penalty)
        scores = torch.where(seen, scores * scale, scores)
    return scores - p.presence_penalty * seen_output


class _RowSampler(LogitsProcessor):
    """Picks each row's next token with its own sampling params and seeded generator.

    In vLLM's order (`vllm/v1/sample/sampler.py`): penalties (`_penalize`, greedy rows too), then
    for sampled rows temperature, min_p, top-k and top-p, and a draw from the row's own generator,
    so its tokens depend on its seed only; rows with the same (temperature, top_k, top_p, min_p)
    are filtered together. Greedy rows take the argmax. Also notes when each row first emits an
    end-of-sequence token, for per-request latency. `width` is the padded prompt length and
    `lengths` each row's own prompt length.
    """

    def __init__(
        self,
        params: Sequence[SamplingParams],
        eos_ids: set[int],
        device: torch.device,
        width: int = 0,
        lengths: Sequence[int] = (),
    ) -> None:
        self.params = list(params)
        self.generators = [self._generator(p, device) for p in params]
        self.groups: dict[tuple[float, int, float, float], list[int]] = {}
        for row, p in enumerate(params):
            if p.temperature > 0:
                self.groups.setdefault((p.temperature, p.top_k, p.top_p, p.min_p), []).append(row)
        self.penalized = [
            r for r, p in enumerate(params) if p.presence_penalty or p.repetition_penalty != 1.0
        ]
        self.width, self.lengths = width, list(lengths) or [width] * len(params)
        self.eos = torch.tensor(sorted(eos_ids), device=device)
        self.finished_at: list[float | None] = [None] * len(params)

    @staticmethod
    def _generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
        if params.temperature <= 0:
            return None
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        return torch.Generator(device=device).manual_seed(seed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in self.penalized:
            prompt = input_ids[row, self.width - self.lengths[row] : self.width]
            scores[row] = _penalize(scores[row], prompt, input_ids[row, self.width :], self.params[row])
        chosen = scores.argmax(dim=-1)
        for (temperature, top_k, top_p, min_p), rows in self.groups.items():
            logits = scores[rows].float() / temperature
            logits = _min_p(logits, min_p) if min_p > 0 else logits
            probs = torch.softmax(_filter_logits(logits, top_k, top_p), dim=-1)
            for i, row in enumerate(rows):
                chosen[row] = torch.multinomial(probs[i], 1, generator=self.generators[row])[0]
        self._note_finished(chosen)
        if not self.groups and not self.penalized:
            return scores
        onehot = torch.full_like(scores, float("-inf"))
        return onehot.scatter_(1, chosen.unsqueeze(1), 0.0)

    def _note_finished(self, chosen: torch.Tensor) -> None:
        hits = torch.isin(chosen, self.eos)
        if bool(hits.any()):
            now = time.perf_counter()
            for row in hits.nonzero().flatten().tolist():
                if self.finished_at[row] is None:
                    self.finished_at[row] = now


class TransformersEngine:
    """Batched generation with a Hugging Face causal LM (see the module docstring)."""

    name = "transformers"

    def __init__(self, model: str, options: TransformersOptions | None = None) -> None:
        self.options = options or TransformersOptions()
        if self.options.dtype not in DTYPES:
            raise QuantscopeError(
                f"engine option dtype={self.options.dtype!r}: use one of {', '.join(DTYPES)}"
            )
        if self.options.batch_size < 1:
            raise QuantscopeError(f"engine option batch_size={self.options.batch_size}: must be at least 1")
        self.device = torch.device(_resolve_device(self.options.device))
        self.tokenizer, self.model = _load(model, self.options, self.device)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        # Hub checkpoints ship sampling defaults (temperature, top_k, repetition penalty) in
        # generation_config.json; sampling is ours, so generate starts from a clean config.
        self.model.generation_config = GenerationConfig()
        self.close_id = think_close_id(self.tokenizer)

    def stream(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Outcome]]:
        """Every request's outcome as its batch finishes: batches of `batch_size` requests of the
        same cap and similar prompt length (length-sorted; `generate` cannot take new rows into a
        running batch). A batch that raises (out of memory, say) fails its requests, not the run."""
        return self._outcomes(requests)

    def generate(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[Generation]:
        """Complete every request (in batches of similar prompt length); the result is in request
        order; `progress` hears of each batch. QuantscopeError when a request failed."""
        return collect(self._outcomes(requests, progress), len(requests), self.name)

    def _outcomes(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[int, Outcome]]:
        for batch, outcomes in self._batch_outcomes(requests):
            yield from zip(batch, outcomes, strict=True)
            if progress is not None:
                progress(len(batch))

    def _batch_outcomes(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[list[int], list[Outcome]]]:
        prompts = [
            self.tokenizer(chat_prompt(self.tokenizer, r), add_special_tokens=False).input_ids
            for r in requests
        ]
        for batch in _batches(requests, prompts, self.options.batch_size):
            try:
                outputs = self._generate_batch([requests[i] for i in batch], [prompts[i] for i in batch])
            except (RuntimeError, ValueError) as error:  # e.g. CUDA out of memory
                failure = RequestFailure(f"{type(error).__name__}: {error}")
                yield batch, [failure] * len(batch)
                continue
            yield batch, list(outputs)

    def _generate_batch(self, requests: list[ChatRequest], prompts: list[list[int]]) -> list[Generation]:
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampler = _RowSampler(
            [r.sampling for r in requests], self.eos_ids, self.device, width, [len(p) for p in prompts]
        )
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=requests[0].sampling.max_tokens,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=pad,
        )
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                generation_config=config,
                logits_processor=[sampler],
            )
        end = time.perf_counter()
        return [
            self._record(request, out[row, width:].tolist(), (sampler.finished_at[row] or end) - start)
            for row, request in enumerate(requests)
        ]

    def _record(self, request: ChatRequest, new_ids: list[int], seconds: float) -> Generation:
        stop = next((i for i, t in enumerate(new_ids) if t in self.eos_ids), None)
        ids = new_ids if stop is None else new_ids[:stop]
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        thinking, answer = split_thinking(text, request.thinks)
        return Generation(
            text=text,
            thinking=thinking,
            answer=answer,
            completion_tokens=len(ids) + (stop is not None),
            thinking_tokens=_thinking_tokens(self.tokenizer, self.close_id, ids, thinking, request),
            finish_reason="length" if stop is None else "stop",
            seconds=seconds,
        )

    @property
    def device_name(self) -> str:
        """The device generating: the GPU's name, or "cpu"."""
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return self.device.type

    def served(self) -> dict[str, str]:
        """What this engine serves that changes outputs: the chat template's hash."""
        return {"chat_template_sha": text_fingerprint(self.tokenizer.chat_template or "")}

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _thinking_tokens(
    tokenizer: Any, close_id: int | None, ids: list[int], thinking: str, req: ChatRequest
) -> int:
    if close_id is not None:
        return count_thinking_tokens(ids, close_id, req.thinks)
    return len(tokenizer.encode(thinking, add_special_tokens=False)) if thinking else 0


def _batches(requests: Sequence[ChatRequest], prompts: list[list[int]], size: int) -> list[list[int]]:
    """Request indices grouped by max_tokens, sorted by prompt length, cut into batches of `size`."""
    order = sorted(range(len(requests)), key=lambda i: (requests[i].sampling.max_tokens, len(prompts[i])))
    batches: list[list[int]] = []
    for i in order:
        last = batches[-1] if batches else None
        same_cap = (
            last is not None and requests[last[0]].sampling.max_tokens == requests[i].sampling.max_tokens
        )
        if last is not None and same_cap and len(last) < size:
            last.append(i)
        else:
            batches.append([i])
    return batches


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QuantscopeError(f"engine option device={device!r}: no CUDA device is visible; use device=cpu")
    return device


def _load(model: str, options: TransformersOptions, device: torch.device) -> tuple[Any, Any]:
    loaded = load_causal_lm(
        model,
        device=str(device),
        dtype=options.dtype,
        revision=options.revision,
        trust_remote_code=options.trust_remote_code,
    )
    tokenizer = loaded.tokenizer
    if tokenizer.chat_template is None:
        raise QuantscopeError(
            f"model {model!r}: the tokenizer has no chat template; use an instruct/chat checkpoint"
        )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, loaded.model


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends a turn: the tokenizer's eos and the checkpoint's generation eos ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for source in (model.config, model.generation_config):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids
