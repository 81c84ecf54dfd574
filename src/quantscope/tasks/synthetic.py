"""The toy reasoner's benchmark: held-out column-addition problems at several difficulty levels.

Problems come from `quantscope.toy.problems.benchmark_problems` (fixed seed, deterministic), so
the task needs no download. Levels 1-5 add two numbers of 1-5 digits; level 6 adds two 5-digit
numbers whose every column carries. The answer is judged on the integer in the last `\\boxed{}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from quantscope.errors import QuantscopeError
from quantscope.tasks.answers import same_integer_answer
from quantscope.tasks.base import Judgement, Sample
from quantscope.tasks.loading import stratified
from quantscope.toy.problems import (
    BENCHMARK_PER_LEVEL,
    BENCHMARK_SEED,
    LEVELS,
    Problem,
    benchmark_problems,
    check_answer,
    get_level,
)


@dataclass(frozen=True)
class SyntheticTask:
    """Column addition for the toy model: `per_level` problems per level, drawn with `seed`.

    `levels` picks difficulty levels (1 = easiest; all when empty). `path` is accepted so every
    task takes the same options, but this task generates its items and rejects a path.
    """

    per_level: int = BENCHMARK_PER_LEVEL
    seed: int = BENCHMARK_SEED
    levels: Sequence[int] = ()
    path: str | None = None
    name: str = field(default="synthetic", init=False)
    answer_patterns: ClassVar[tuple[str, ...]] = (r"^sum (\d+)$",)
    """Where the toy's thinking states a candidate answer: each pass ends "sum N"."""
    hesitation_patterns: ClassVar[tuple[str, ...]] = (r"^compare [\d ]+ wait$",)
    """Where the toy hesitates: a failed check ends its line with "wait" (no sentence opens with it)."""
    hub: ClassVar[None] = None
    """Generated here: no published dataset."""
    stratify: ClassVar[str] = "level"
    """The metadata field analysis reports per level by (as MATH-500's `level`)."""
    same_answer = staticmethod(same_integer_answer)
    """How two extracted answers compare (maj@k votes): as integers, as the judge does."""

    def __post_init__(self) -> None:
        if self.path is not None:
            raise QuantscopeError(
                f"task 'synthetic' generates its problems and reads no file (got path={self.path!r}); "
                "drop the path option"
            )
        if self.per_level < 1:
            raise QuantscopeError(f"task 'synthetic': per_level must be at least 1 (got {self.per_level})")
        for number in self.levels:
            get_level(int(number))

    def problems(self) -> list[Problem]:
        """The benchmark problems, level by level."""
        levels = tuple(int(n) for n in self.levels)
        return benchmark_problems(per_level=self.per_level, seed=self.seed, levels=levels)

    def load(self, limit: int | None = None) -> list[Sample]:
        """The problems as samples (ids `L<level>-<index>`), level by level; with `limit`, the first
        problems of every level in turn (the same number per level, give or take one)."""
        samples = []
        counters = {level.number: 0 for level in LEVELS}
        for problem in self.problems():
            index = counters[problem.level]
            counters[problem.level] += 1
            samples.append(
                Sample(
                    id=f"L{problem.level}-{index:03d}",
                    prompt=problem.prompt,
                    target=str(problem.answer),
                    metadata={"level": problem.level, "operands": list(problem.operands)},
                )
            )
        if limit is None:
            return samples
        return stratified([str(s.metadata["level"]) for s in samples], samples, limit)

    def judge(self, sample: Sample, answer: str) -> Judgement:
        """Correct when the last `\\boxed{}` of `answer` holds the exact sum (`05758` counts as 5758);
        the toy owns the check (`quantscope.toy.problems.check_answer`)."""
        correct, extracted = check_answer(answer, int(sample.target))
        return Judgement(correct=correct, extracted=extracted)
