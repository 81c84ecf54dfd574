"""GPQA-Diamond: 198 graduate-level 4-way multiple-choice science questions.

Hub source: `Idavidrein/gpqa`, config `gpqa_diamond`, split `train` (the only split). The dataset
is gated: accept its terms on huggingface.co/datasets/Idavidrein/gpqa and log in (`hf auth login`
or `HF_TOKEN`). Fields used: `Question`, `Correct Answer`, `Incorrect Answer 1`, `Incorrect Answer 2`,
`Incorrect Answer 3` (str), `Record ID` (str; optional in local files, the row index is used then),
`Subdomain` and `High-level domain` (optional). A local `path=` file must have the same fields.

The dataset always lists the correct answer first, so the options are shuffled per item with
`random.Random(f"gpqa:{seed}:{id}")`: the same order on every run and machine for a given seed,
independent of `limit`, and the target letter follows the correct answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from quantscope.tasks.answers import choice_letters, same_choice_answer
from quantscope.tasks.base import HubDataset, Judgement, Sample
from quantscope.tasks.choice import choice_sample, judge_choice
from quantscope.tasks.loading import HubTask, row_id

_OPTIONS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
HUB = HubDataset(
    repo_id="Idavidrein/gpqa",
    config="gpqa_diamond",
    split="train",
    required=("Question", *_OPTIONS),
    items=198,
    access_note=(
        "GPQA is gated: accept its terms at https://huggingface.co/datasets/Idavidrein/gpqa and log in "
        "(hf auth login, or set HF_TOKEN)."
    ),
)


@dataclass(frozen=True)
class GPQADiamondTask(HubTask):
    """GPQA-Diamond in dataset order, options shuffled per item. `path`: a local file; `seed`: the
    shuffle seed."""

    name: str = field(default="gpqa_diamond", init=False)
    hub: ClassVar[HubDataset] = HUB
    same_answer = staticmethod(same_choice_answer)
    """How two extracted answers compare (maj@k votes): by letter, as the judge does."""

    def sample(self, row: Mapping[str, Any], index: int, source: str) -> Sample:
        """The question with its options in the item's seeded order."""
        item_id = row_id(row, "Record ID", index)
        choices, target = shuffled_options(row, item_id, self.seed)
        subdomain, domain = row.get("Subdomain"), row.get("High-level domain")
        return choice_sample(
            item_id, str(row["Question"]), choices, target, source=source, subdomain=subdomain, domain=domain
        )

    def judge(self, sample: Sample, answer: str) -> Judgement:
        """Correct when the answer names the letter the correct option was shuffled to."""
        return judge_choice(sample, answer)


def shuffled_options(row: Mapping[str, Any], item_id: str, seed: int) -> tuple[tuple[str, ...], str]:
    """The four options of a GPQA row in a seeded per-item order, and the letter of the correct one."""
    options = [str(row[name]).strip() for name in _OPTIONS]
    order = list(range(len(options)))
    random.Random(f"gpqa:{seed}:{item_id}").shuffle(order)
    choices = tuple(options[i] for i in order)
    return choices, choice_letters(len(choices))[order.index(0)]
