"""Judging multiple-choice answers (GPQA-Diamond, MMLU-Pro): the option letter the answer names."""

from __future__ import annotations

from quantscope.tasks.answers import choice_letters, clip, extract_choice, final_answer_text, last_boxed
from quantscope.tasks.base import Judgement, Sample


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
