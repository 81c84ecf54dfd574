"""MMLU-Pro: 12,032 multiple-choice questions with up to 10 options (A–J) across 14 subjects.

Hub source: `TIGER-Lab/MMLU-Pro`, split `test`. Fields: `question` (str), `options` (list of str;
10 for most items, fewer for some, the letters follow the count), `answer` (str, the letter),
`question_id` (int; optional in local files, the row index is used then), `category` and `src`
(optional); `answer_index` and `cot_content` are unused. A local `path=` file must have the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from quantscope.errors import QuantscopeError
from quantscope.tasks.answers import CHOICE_LETTERS, choice_letters, same_choice_answer
from quantscope.tasks.base import HubDataset, Judgement, Sample
from quantscope.tasks.choice import choice_sample, judge_choice
from quantscope.tasks.loading import HubTask, row_id

HUB = HubDataset(
    repo_id="TIGER-Lab/MMLU-Pro", split="test", required=("question", "options", "answer"), items=12032
)


@dataclass(frozen=True)
class MMLUProTask(HubTask):
    """MMLU-Pro in dataset order; the target is the answer letter and the options keep the dataset's
    order. `path`: a local file in the hub schema instead of the hub; `seed` is accepted, and
    nothing depends on it."""

    name: str = field(default="mmlu_pro", init=False)
    hub: ClassVar[HubDataset] = HUB
    same_answer = staticmethod(same_choice_answer)
    """How two extracted answers compare (maj@k votes): by letter, as the judge does."""

    def sample(self, row: Mapping[str, Any], index: int, source: str) -> Sample:
        """The question with its 2 to 10 options; the answer must be one of their letters."""
        choices = tuple(str(option).strip() for option in row["options"])
        if not 2 <= len(choices) <= len(CHOICE_LETTERS):
            raise QuantscopeError(
                f"{source}: row {index} has {len(choices)} options; MMLU-Pro items have 2 to 10"
            )
        target = str(row["answer"]).strip().upper()
        letters = choice_letters(len(choices))
        if target not in letters:
            raise QuantscopeError(
                f"{source}: row {index} has answer {row['answer']!r}, "
                f"not one of the letters {letters} of its {len(choices)} options"
            )
        category, src = row.get("category"), row.get("src")
        return choice_sample(
            row_id(row, "question_id", index),
            str(row["question"]),
            choices,
            target,
            source=source,
            category=category,
            src=src,
        )

    def judge(self, sample: Sample, answer: str) -> Judgement:
        """Correct when the answer names the target letter."""
        return judge_choice(sample, answer)
