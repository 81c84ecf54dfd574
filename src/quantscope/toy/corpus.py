"""The toy task's text: one-turn conversations rendered exactly as the toy's chat template does.

Training reads them as (prompt, completion) pairs; calibration (`quantscope.calibration`, source
"toy") reads whole conversations, drawn like training examples from a seeded generator.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from quantscope.toy.problems import Problem, final_answer, training_example
from quantscope.toy.tokenizer import IM_END


def example_text(problem: Problem, thinking: str | None) -> tuple[str, str]:
    """(prompt, completion) exactly as the chat template renders a one-turn conversation."""
    prompt = f"<|im_start|>user\n{problem.prompt}{IM_END}\n<|im_start|>assistant\n<think>\n"
    answer = final_answer(problem.answer) + IM_END
    if thinking is None:
        return prompt + "\n</think>\n\n", answer
    return prompt, f"{thinking}\n</think>\n\n{answer}"


def conversations(seed: int = 0) -> Iterator[str]:
    """An endless stream of whole conversations (prompt, thinking, answer) drawn with `seed`."""
    rng = random.Random(seed)
    while True:
        prompt, completion = example_text(*training_example(rng))
        yield prompt + completion
