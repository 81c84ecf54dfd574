"""Prompts in the format the Qwen3 / Qwen3.5 model cards recommend for benchmarking.

The cards' "Standardize Output Format" advice: math problems get "Please reason step by step,
and put your final answer within \\boxed{}."; multiple-choice questions get "Please show your
choice in the `answer` field with only the choice letter, e.g., `"answer": "C"`." The judges
read exactly those forms first (and tolerate `\\boxed{C}`, "Answer: C", "The answer is (C)").
"""

from __future__ import annotations

from collections.abc import Sequence

from quantscope.tasks.answers import choice_letters

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = (
    'Please show your choice in the `answer` field with only the choice letter, e.g., `"answer": "C"`.'
)


def math_prompt(problem: str) -> str:
    """The user message for an open-answer math problem."""
    return f"{problem.strip()}\n\n{MATH_INSTRUCTION}"


def choice_prompt(question: str, choices: Sequence[str]) -> str:
    """The user message for a multiple-choice question: the question, lettered options, the instruction."""
    letters = choice_letters(len(choices))
    options = "\n".join(f"{letter}. {text.strip()}" for letter, text in zip(letters, choices, strict=True))
    return f"{question.strip()}\n\n{options}\n\n{CHOICE_INSTRUCTION}"
