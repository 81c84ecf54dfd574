"""AIME 2025: 30 problems with integer answers 0–999 (AIME I and II), judged on the last `\\boxed{}`.

Hub source: `math-ai/aime25`, split `test`, one config. Fields: `problem` (str, LaTeX),
`answer` (str, e.g. "70"), `id` (str; optional in local files, the row index is used then).
A local `path=` file (JSONL or Parquet) must have the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from quantscope.errors import QuantscopeError
from quantscope.tasks.answers import parse_integer, same_integer_answer
from quantscope.tasks.base import HubDataset, Judgement, Sample
from quantscope.tasks.loading import HubTask, row_id
from quantscope.tasks.math_check import judge_integer
from quantscope.tasks.prompts import math_prompt

HUB = HubDataset(repo_id="math-ai/aime25", split="test", required=("problem", "answer"), items=30)


@dataclass(frozen=True)
class AIME25Task(HubTask):
    """AIME 2025 (30 items), in dataset order; the target is the integer answer. `path`: a local
    file in the hub schema instead of the hub; `seed` is accepted, and nothing depends on it."""

    name: str = field(default="aime25", init=False)
    hub: ClassVar[HubDataset] = HUB
    answer_patterns: ClassVar[tuple[str, ...]] = ()
    """A math task: `analysis.traces` looks for the answer in the thinking (its default patterns)."""
    same_answer = staticmethod(same_integer_answer)
    """How two extracted answers compare (maj@k votes): as integers, as the judge does."""

    def sample(self, row: Mapping[str, Any], index: int, source: str) -> Sample:
        """The problem with the model card's math instruction; its answer must be an integer."""
        answer = parse_integer(str(row["answer"]))
        if answer is None:
            raise QuantscopeError(
                f"{source}: row {index} has answer {row['answer']!r}; AIME answers are integers"
            )
        return Sample(
            id=row_id(row, "id", index),
            prompt=math_prompt(str(row["problem"])),
            target=str(answer),
            metadata={"source": source},
        )

    def judge(self, sample: Sample, answer: str) -> Judgement:
        """Correct when the last `\\boxed{}` of the answer equals the integer target (`042` == `42`)."""
        return judge_integer(int(sample.target), answer)
