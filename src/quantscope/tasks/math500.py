"""MATH-500: 500 competition problems with LaTeX answers, judged with math_verify on the last `\\boxed{}`.

Hub source: `HuggingFaceH4/MATH-500`, split `test`. Fields: `problem` (str), `answer` (str, LaTeX
such as `\\frac{14}{3}`, `\\left( 3, \\frac{\\pi}{2} \\right)`, `[-2,7]`), `unique_id` (str, e.g.
"test/precalculus/807.json"; optional in local files), `subject` and `level` (optional), `solution`
(unused). A local `path=` file (JSONL or Parquet) must have the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from quantscope.tasks.base import HubDataset, Judgement, Sample
from quantscope.tasks.loading import HubTask, row_id
from quantscope.tasks.math_check import judge_math, same_math_answer
from quantscope.tasks.prompts import math_prompt

HUB = HubDataset(repo_id="HuggingFaceH4/MATH-500", split="test", required=("problem", "answer"), items=500)


@dataclass(frozen=True)
class Math500Task(HubTask):
    """MATH-500, in dataset order; the target is the LaTeX answer; `limit` takes the same number of
    problems from each of its five levels. `path`: a local file in the hub schema instead of the
    hub; `seed` is accepted, and nothing depends on it."""

    name: str = field(default="math500", init=False)
    hub: ClassVar[HubDataset] = HUB
    stratify: ClassVar[str | None] = "level"
    answer_patterns: ClassVar[tuple[str, ...]] = ()
    """A math task: `analysis.traces` looks for the answer in the thinking (its default patterns)."""
    same_answer = staticmethod(same_math_answer)
    """How two extracted answers compare (maj@k votes): with math_verify, as the judge does."""

    def sample(self, row: Mapping[str, Any], index: int, source: str) -> Sample:
        """The problem with the model card's math instruction."""
        metadata = {"source": source, "subject": row.get("subject"), "level": row.get("level")}
        return Sample(
            id=row_id(row, "unique_id", index),
            prompt=math_prompt(str(row["problem"])),
            target=str(row["answer"]).strip(),
            metadata=metadata,
        )

    def judge(self, sample: Sample, answer: str) -> Judgement:
        """Correct when math_verify finds the last `\\boxed{}` equal to the target (time-limited)."""
        return judge_math(sample.target, answer)
