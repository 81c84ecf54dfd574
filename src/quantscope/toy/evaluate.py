"""Greedy evaluation of a toy checkpoint on benchmark problems with plain transformers `generate`.

Used by the training script (a quick held-out check every few hundred steps) and by
`benchmarks/toy_eval.py` (the numbers in the model card).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from quantscope.toy.problems import Problem, check_answer
from quantscope.toy.tokenizer import THINK_END, build_tokenizer

DEFAULT_MAX_NEW_TOKENS = 512
"""The benchmark's default token cap: above the longest BF16 trace with one redo at the hardest level."""


@dataclass(frozen=True)
class Outcome:
    """One greedy generation: correctness, tokens before `</think>`, and whether it hit the cap."""

    problem: Problem
    text: str
    correct: bool
    thinking_tokens: int
    completion_tokens: int
    truncated: bool
    retries: int


@dataclass(frozen=True)
class LevelSummary:
    """Aggregates over one level's outcomes (tokens are thinking tokens)."""

    level: int
    count: int
    correct: int
    truncated: int
    retries: int
    mean_thinking: float
    median_thinking: float

    @property
    def accuracy(self) -> float:
        """Fraction correct."""
        return self.correct / self.count if self.count else 0.0


def prompt_ids(tokenizer, problem: Problem, thinking: bool = True) -> list[int]:
    """Token ids of the chat prompt for `problem`, ending with the generation prompt."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem.prompt}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=thinking,
    )
    return tokenizer(text, add_special_tokens=False).input_ids


def judge(problem: Problem, answer: str) -> bool:
    """True when the integer in the last `\\boxed{}` of `answer` equals the problem's sum."""
    return check_answer(answer, problem.answer)[0]


def _outcome(
    tokenizer, problem: Problem, new_ids: list[int], cap: int, close_id: int, thinking_on: bool
) -> Outcome:
    eos = tokenizer.eos_token_id
    ids = new_ids[: new_ids.index(eos) + 1] if eos in new_ids else new_ids
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if thinking_on:
        thinking_tokens = ids.index(close_id) if close_id in ids else len(ids)
        thinking, closed, answer = text.partition(THINK_END)
    else:  # the prompt already closed the think block: everything is answer
        thinking_tokens, thinking, closed, answer = 0, "", "closed", text
    return Outcome(
        problem=problem,
        text=text,
        correct=bool(closed) and judge(problem, answer),
        thinking_tokens=thinking_tokens,
        completion_tokens=len(ids),
        truncated=eos not in new_ids and len(new_ids) >= cap,
        retries=thinking.count(" wait"),
    )


@torch.no_grad()
def generate_outcomes(
    model,
    problems: Sequence[Problem],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 64,
    thinking: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Greedy-generate every problem (left-padded batches of similar prompt length), in input order.

    `max_new_tokens` is the cap in tokens (characters, for this tokenizer); `progress` is called
    with the number of problems finished after each batch.
    """
    tokenizer = build_tokenizer()
    close_id = tokenizer.convert_tokens_to_ids(THINK_END)
    device = next(model.parameters()).device
    prompts = [prompt_ids(tokenizer, p, thinking) for p in problems]
    order = sorted(range(len(problems)), key=lambda i: (problems[i].level, len(prompts[i])))
    results: dict[int, Outcome] = {}
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in chunk)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor(
            [[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk], device=device
        )
        mask = (
            torch.arange(width, device=device)[None, :]
            >= (width - torch.tensor([len(prompts[i]) for i in chunk], device=device))[:, None]
        ).long()
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row, index in enumerate(chunk):
            new_ids = out[row, width:].tolist()
            results[index] = _outcome(tokenizer, problems[index], new_ids, max_new_tokens, close_id, thinking)
        if progress is not None:
            progress(len(chunk))
    return [results[i] for i in range(len(problems))]


def summarize(outcomes: Sequence[Outcome]) -> list[LevelSummary]:
    """Per-level accuracy, truncations, retries and mean/median thinking tokens, by level number."""
    summaries = []
    for level in sorted({o.problem.level for o in outcomes}):
        rows = [o for o in outcomes if o.problem.level == level]
        tokens = [o.thinking_tokens for o in rows]
        summaries.append(
            LevelSummary(
                level=level,
                count=len(rows),
                correct=sum(o.correct for o in rows),
                truncated=sum(o.truncated for o in rows),
                retries=sum(o.retries for o in rows),
                mean_thinking=statistics.fmean(tokens),
                median_thinking=statistics.median(tokens),
            )
        )
    return summaries


def format_summary(summaries: Sequence[LevelSummary], seconds: float | None = None) -> str:
    """A plain-text table of `summarize` output (one line per level, then the total)."""
    lines = ["level  n    correct  acc     trunc  retries  mean_think  median_think"]
    for s in summaries:
        lines.append(
            f"{s.level:<6} {s.count:<4} {s.correct:<8} {s.accuracy:6.1%}  {s.truncated:<6} {s.retries:<8} "
            f"{s.mean_thinking:<11.1f} {s.median_thinking:.1f}"
        )
    total = sum(s.count for s in summaries)
    correct = sum(s.correct for s in summaries)
    suffix = f"  ({seconds:.1f} s)" if seconds is not None else ""
    lines.append(f"all    {total:<4} {correct:<8} {correct / max(total, 1):6.1%}{suffix}")
    return "\n".join(lines)


def timed_outcomes(model, problems: Sequence[Problem], **options) -> tuple[list[Outcome], float]:
    """`generate_outcomes` plus its wall time in seconds."""
    start = time.perf_counter()
    outcomes = generate_outcomes(model, problems, **options)
    return outcomes, time.perf_counter() - start
