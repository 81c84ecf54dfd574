"""MMLU-Pro: 12,032 multiple-choice questions with up to 10 options (A–J) across 14 subjects.

Hub source: `TIGER-Lab/MMLU-Pro`, split `test`. Fields: `question` (str), `options` (list of str;
10 for most items, fewer for some, the letters follow the count), `answer` (str, the letter),
`question_id` (int; optional in local files, the row index is used then), `category` and `src`
(optional); `answer_index` and `cot_content` are unused. A local `path=` file must have the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from quantscope.errors import QuantscopeError
from quantscope.tasks.answers import CHOICE_LETTERS, choice_letters
from quantscope.tasks.base import Judgement, Sample
from quantscope.tasks.choice import judge_choice
from quantscope.tasks.loading import HubDataset, load_rows, row_id
from quantscope.tasks.prompts import choice_prompt

HUB = HubDataset(repo_id="TIGER-Lab/MMLU-Pro", split="test", required=("question", "options", "answer"))


@dataclass(frozen=True)
class MMLUProTask:
    """MMLU-Pro in dataset order. `path`: a local file in the hub schema instead of the hub.

    `seed` is accepted so every task takes the same options; the options keep the dataset's order.
    """

    path: str | Path | None = None
    seed: int = 0
    name: str = field(default="mmlu_pro", init=False)

    def load(self, limit: int | None = None) -> list[Sample]:
        """The questions in dataset order (the first `limit` when given); the target is the answer letter."""
        loaded = load_rows(HUB, self.path, limit)
        samples = []
        for index, row in enumerate(loaded.rows):
            choices = tuple(str(option).strip() for option in row["options"])
            if not 2 <= len(choices) <= len(CHOICE_LETTERS):
                raise QuantscopeError(
                    f"{loaded.source}: row {index} has {len(choices)} options; MMLU-Pro items have 2 to 10"
                )
            target = str(row["answer"]).strip().upper()
            if target not in choice_letters(len(choices)):
                raise QuantscopeError(
                    f"{loaded.source}: row {index} has answer {row['answer']!r}, "
                    f"not one of the letters {choice_letters(len(choices))} of its {len(choices)} options"
                )
            samples.append(
                Sample(
                    id=row_id(row, "question_id", index),
                    prompt=choice_prompt(str(row["question"]), choices),
                    target=target,
                    choices=choices,
                    metadata={
                        "source": loaded.source,
                        "category": row.get("category"),
                        "src": row.get("src"),
                    },
                )
            )
        return samples

    def judge(self, sample: Sample, answer: str) -> Judgement:
        """Correct when the answer names the target letter."""
        return judge_choice(sample, answer)
