"""Judging multiple-choice answers (GPQA-Diamond, MMLU-Pro): the option letter the answer names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quantscope.tasks.answers import choice_letters, clip, extract_choice, final_answer_text, last_boxed
from quantscope.tasks.base import Judgement, Sample
from quantscope.tasks.prompts import choice_prompt


def choice_sample(
    item_id: str, question: str, choices: Sequence[str], target: str, **metadata: Any
) -> Sample:
    """One multiple-choice item: the prompt lists `choices` lettered A, B, …; `target` is the letter."""
    return Sample(
        id=item_id,
        prompt=choice_prompt(question, choices),
        target=target,
        choices=tuple(choices),
        metadata=metadata,
    )


def judge_choice(sample: Sample, answer: str) -> Judgement:
    """Correct when the answer names the target letter (see `answers.extract_choice` for the forms read).

    When no valid letter is found, `extracted` is the raw content of the last `\\boxed{}` (so a
    report can show what the model said instead) or None.
    """
    text = final_answer_text(answer)
    letter = extract_choice(text, choice_letters(len(sample.choices)), sample.choices)
    if letter is None:
        return Judgement(correct=False, extracted=clip(last_boxed(text)))
    return Judgement(correct=letter == sample.target, extracted=letter)
