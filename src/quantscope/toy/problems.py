"""The toy reasoning task: column addition, worked digit by digit, checked, redone on a slip.

A trace adds the operands column by column (ones first, carry written out), then checks the
sum by adding the operands again in reverse order. When the two sums disagree the trace says
"wait" and redoes the addition until it agrees with the check. Training traces contain
deliberate slips (a column summed wrong, a carry dropped, a digit misread or miswritten) so the
model learns the check; a model that slips more often (after quantization, say) retries more and
thinks longer.

Example (no slip)::

    4821+937
    1+7=8
    2+3=5
    8+9=17
    4+0+1=5
    sum 5758
    check 937+4821
    7+1=8
    3+2=5
    9+8=17
    0+4+1=5
    sum 5758
    compare 88 55 77 55 ok

The compare line pairs the two sums' digits ones first and stops at the first pair that differs
("compare 88 55 07 wait"), so each verdict depends on two neighbouring characters — a comparison
a model this small can learn, where a verdict on two whole numbers ("5058 vs 5758") it did not.

A column line adds the carry (`+1`) only when there is one; "forgetting the carry" is one of
the slips.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from quantscope.errors import QuantscopeError

MAX_TRAIN_DIGITS = 5
"""Training operands have 1..MAX_TRAIN_DIGITS digits by default; the hardest level sits at this edge."""


BENCHMARK_PER_LEVEL = 50
BENCHMARK_SEED = 1234
"""The held-out benchmark's defaults; training never draws one of these problems."""


@dataclass(frozen=True)
class Level:
    """A difficulty level: `operands` numbers of exactly `digits` digits each; with `carries`, every
    column's sum is at least 10, so a carry runs through the whole addition (the model's weak spot)."""

    number: int
    operands: int
    digits: int
    carries: bool = False


LEVELS: tuple[Level, ...] = (
    Level(1, operands=2, digits=1),
    Level(2, operands=2, digits=2),
    Level(3, operands=2, digits=3),
    Level(4, operands=2, digits=4),
    Level(5, operands=2, digits=5),
    Level(6, operands=2, digits=5, carries=True),
)


@dataclass(frozen=True)
class Problem:
    """One addition problem; `level` is 0 for training problems drawn outside the levels."""

    operands: tuple[int, ...]
    level: int = 0

    @property
    def answer(self) -> int:
        """The exact sum."""
        return sum(self.operands)

    @property
    def expression(self) -> str:
        """The operands joined by `+`, e.g. `4821+937`."""
        return "+".join(str(n) for n in self.operands)

    @property
    def prompt(self) -> str:
        """The user message."""
        return f"What is {' + '.join(str(n) for n in self.operands)}?"


def get_level(number: int) -> Level:
    """The level with this number (1 = easiest), or a QuantscopeError listing the valid ones."""
    for level in LEVELS:
        if level.number == number:
            return level
    valid = ", ".join(str(lv.number) for lv in LEVELS)
    raise QuantscopeError(f"synthetic task: no difficulty level {number}; choose one of {valid}")


def _number(rng: random.Random, digits: int) -> int:
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def _carrying_pair(rng: random.Random, digits: int) -> tuple[int, int]:
    """Two `digits`-digit numbers whose every column sums to 10 or more (carry included)."""
    first = second = 0
    for column in range(digits):
        lowest = 1 if column == digits - 1 and digits > 1 else 0
        needed = 10 if column == 0 else 9  # columns after the first receive a carry of 1
        x = rng.randint(max(lowest, needed - 9), 9)
        y = rng.randint(max(lowest, needed - x), 9)
        first, second = first + x * 10**column, second + y * 10**column
    return first, second


def level_problem(rng: random.Random, level: Level) -> Problem:
    """A random problem of `level` (every operand has exactly `level.digits` digits)."""
    if level.carries:
        if level.operands != 2:
            raise QuantscopeError(f"level {level.number}: carry-chain levels take two operands")
        return Problem(_carrying_pair(rng, level.digits), level.number)
    return Problem(tuple(_number(rng, level.digits) for _ in range(level.operands)), level.number)


def training_problem(rng: random.Random, max_digits: int = MAX_TRAIN_DIGITS) -> Problem:
    """A random training problem: 2 operands, each of 1..`max_digits` digits (independently)."""
    return Problem(tuple(_number(rng, rng.randint(1, max_digits)) for _ in range(2)))


def benchmark_problems(
    per_level: int = BENCHMARK_PER_LEVEL, seed: int = BENCHMARK_SEED, levels: tuple[int, ...] = ()
) -> list[Problem]:
    """The held-out benchmark: `per_level` problems per level (all levels unless `levels` names some).

    Deterministic in (`per_level`, `seed`): each level draws from its own generator seeded with
    `seed` and the level number, so asking for fewer levels does not change the others' problems.
    """
    chosen = [get_level(n) for n in levels] if levels else list(LEVELS)
    problems = []
    for level in chosen:
        rng = random.Random(seed * 1000 + level.number)
        problems.extend(level_problem(rng, level) for _ in range(per_level))
    return problems


@dataclass(frozen=True)
class Slip:
    """A deliberate mistake in one column of a pass.

    `kind` is "sum" (the column's sum off by `delta`), "carry" (the incoming carry dropped),
    "read" (operand number `operand`'s digit misread as digit + `delta`, mod 10, and added
    consistently) or "write" (the column's digit written into the sum line off by `delta`, mod 10).
    "sum" and "carry" leave a visibly wrong column line; "read" and "write" leave every column line
    self-consistent, so only comparing the sum with the check's reveals them — the mistakes a
    small model makes by itself (copying the wrong digit) look like these.
    """

    column: int
    kind: str
    delta: int = 0
    operand: int = 0


SLIP_KINDS = ("sum", "carry", "read", "write")


def _digit(n: int, column: int) -> int:
    return (n // 10**column) % 10


def column_pass(operands: tuple[int, ...], slip: Slip | None = None) -> tuple[list[str], int]:
    """The column lines adding `operands` ones-first, and the sum they produce (wrong when slipped).

    A slip changes one column; the following columns take the carry that column produced, so the
    pass stays self-consistent and only the check can reveal the mistake.
    """
    columns = max(len(str(n)) for n in operands)
    lines, carry, total = [], 0, 0
    for column in range(columns):
        hit = slip is not None and slip.column == column
        digits = [_digit(n, column) for n in operands]
        if hit and slip.kind == "read":
            digits[slip.operand] = (digits[slip.operand] + slip.delta) % 10
        if hit and slip.kind == "carry" and carry > 0:
            carry = 0
        value = sum(digits) + carry
        if hit and slip.kind == "sum":
            value = value + slip.delta if value + slip.delta >= 0 else value + 1
        terms = [*digits, carry] if carry else digits
        lines.append("+".join(str(d) for d in terms) + f"={value}")
        written = (value + slip.delta) % 10 if hit and slip.kind == "write" else value % 10
        total += written * 10**column
        carry = value // 10
    total += carry * 10**columns
    return lines, total


def random_slip(rng: random.Random, operands: tuple[int, ...]) -> Slip:
    """A slip in a random column, of a random kind (a dropped carry only where a carry comes in).

    The result always differs from the right sum, so the check catches it.
    """
    columns = max(len(str(n)) for n in operands)
    column = rng.randrange(columns)
    kind = rng.choices(SLIP_KINDS, weights=(35, 15, 30, 20))[0]
    if kind == "carry":
        correct, _ = column_pass(operands)
        if column == 0 or int(correct[column - 1].split("=")[1]) < 10:
            kind = "sum"
    if kind == "sum":
        return Slip(column, "sum", rng.choice((-1, 1)))
    if kind == "carry":
        return Slip(column, "carry")
    delta = rng.choice((-3, -2, -1, 1, 2, 3))
    return Slip(column, kind, delta, operand=rng.randrange(len(operands)) if kind == "read" else 0)


def compare_line(total: int, check_total: int) -> str:
    """The check's verdict: digit pairs (sum, check) ones first, ending "ok", or "wait" at a mismatch.

    The shorter number counts as zero-padded, so every pair has two digits.
    """
    pairs = []
    for column in range(max(len(str(total)), len(str(check_total)))):
        ours, theirs = _digit(total, column), _digit(check_total, column)
        pairs.append(f"{ours}{theirs}")
        if ours != theirs:
            return "compare " + " ".join(pairs) + " wait"
    return "compare " + " ".join(pairs) + " ok"


def _pass_text(header: str, operands: tuple[int, ...], slip: Slip | None) -> tuple[str, int]:
    lines, total = column_pass(operands, slip)
    return "\n".join([header, *lines, f"sum {total}"]), total


def write_trace(problem: Problem, slips: int = 0, rng: random.Random | None = None) -> str:
    """The thinking for `problem` (without the `<think>` tags), with `slips` deliberate mistakes.

    The first slip goes into the first pass, later ones into the redos; the check pass is always
    right, so the trace ends with a redo that agrees with it. `rng` picks the slipped columns.
    """
    rng = rng or random.Random(0)
    operands = problem.operands
    check_operands = tuple(reversed(operands))
    check_header = "check " + "+".join(str(n) for n in check_operands)
    check_text, check_total = _pass_text(check_header, check_operands, None)

    slip = random_slip(rng, operands) if slips > 0 else None
    text, total = _pass_text(problem.expression, operands, slip)
    parts = [text, check_text]
    redo = 0
    while total != check_total:
        parts.append(compare_line(total, check_total))
        redo += 1
        slip = random_slip(rng, operands) if redo < slips else None
        text, total = _pass_text("redo " + problem.expression, operands, slip)
        parts.append(text)
    parts.append(compare_line(total, check_total))
    return "\n".join(parts)


def final_answer(value: int) -> str:
    """The answer text after the thinking."""
    return f"\\boxed{{{value}}}"


_BOX = "\\boxed{"
_INTEGER = re.compile(r"[+-]?\d{1,100}")


def check_answer(answer: str, expected: int) -> tuple[bool, str | None]:
    """Whether the toy's final answer text says `expected`, and what it says.

    The toy answers `\\boxed{N}`: the content of the last box (up to its closing brace) is read
    as an integer, so `\\boxed{05758}` counts as 5758; no box, or anything but an integer in it,
    is wrong. Returns (correct, the box's content or None when there is no closed box).
    """
    start = answer.rfind(_BOX)
    if start < 0:
        return False, None
    content, closed, _ = answer[start + len(_BOX) :].partition("}")
    if not closed:
        return False, None
    content = content.strip()
    return bool(_INTEGER.fullmatch(content)) and int(content) == expected, content


def training_example(
    rng: random.Random,
    slip_rate: float = 0.25,
    no_think_rate: float = 0.1,
    max_digits: int = MAX_TRAIN_DIGITS,
) -> tuple[Problem, str | None]:
    """A training problem and its thinking (None: a thinking-off example that answers directly).

    `slip_rate` is the fraction of traces with at least one slip; a fifth of those slip twice.
    """
    problem = training_problem(rng, max_digits)
    if rng.random() < no_think_rate:
        return problem, None
    slips = 0
    if rng.random() < slip_rate:
        slips = 2 if rng.random() < 0.2 else 1
    return problem, write_trace(problem, slips, rng)
