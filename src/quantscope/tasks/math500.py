"""MATH-500: 500 competition problems with LaTeX answers, judged with math_verify on the last `\\boxed{}`.

Hub source: `HuggingFaceH4/MATH-500`, split `test`. Fields: `problem` (str), `answer` (str, LaTeX
such as `\\frac{14}{3}`, `\\left( 3, \\frac{\\pi}{2} \\right)`, `[-2,7]`), `unique_id` (str, e.g.
"test/precalculus/807.json"; optional in local files), `subject` and `level` (optional), `solution`
(unused). A local `path=` file (JSONL or Parquet) must have the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from quantscope.tasks.base import Judgement, Sample
from quantscope.tasks.loading import HubDataset, load_rows, row_id
from quantscope.tasks.math_check import judge_math
from quantscope.tasks.prompts import math_prompt

HUB = HubDataset(repo_id="HuggingFaceH4/MATH-500", split="test", required=("problem", "answer"))


@dataclass(frozen=True)
class Math500Task:
    """MATH-500. `path`: a local file in the hub schema instead of the hub.

    `seed` is accepted so every task takes the same options; MATH-500 items and prompts do not depend on it.
    """

    path: str | Path | None = None
    seed: int = 0
    name: str = field(default="math500", init=False)

    def load(self, limit: int | None = None) -> list[Sample]:
        """The problems in dataset order (the first `limit` when given); the target is the LaTeX answer."""
        loaded = load_rows(HUB, self.path, limit)
        return [
            Sample(
                id=row_id(row, "unique_id", index),
                prompt=math_prompt(str(row["problem"])),
                target=str(row["answer"]).strip(),
                metadata={
                    "source": loaded.source,
                    "subject": row.get("subject"),
                    "level": row.get("level"),
                },
            )
            for index, row in enumerate(loaded.rows)
        ]

    def judge(self, sample: Sample, answer: str) -> Judgement:
        """Correct when math_verify finds the last `\\boxed{}` equal to the target (time-limited)."""
        return judge_math(sample.target, answer)
