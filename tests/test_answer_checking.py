"""Answer extraction and checking: boxed answers, choice letters, math_verify under a hard time limit."""

from __future__ import annotations

import os
import threading
import time

import pytest

from quantscope.tasks.answers import (
    choice_letters,
    clip,
    extract_choice,
    final_answer_text,
    last_boxed,
    parse_integer,
)
from quantscope.tasks.base import Judgement, Sample
from quantscope.tasks.choice import judge_choice
from quantscope.tasks.math_check import MAX_ANSWER_CHARS, MathChecker, judge_integer, judge_math

# Wall-clock limit for the checker in these tests, and what "finishes within a few seconds" allows.
TIMEOUT_S = 3.0
SLACK_S = 3.0


@pytest.fixture(scope="module")
def checker() -> MathChecker:
    """One checker (one worker process) for the module, stopped at the end."""
    with MathChecker(timeout_s=TIMEOUT_S) as shared:
        yield shared


# --- boxed / integer extraction -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("first \\boxed{1}, finally \\boxed{ 2 }", "2"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("unclosed \\boxed{\\frac{1}{2}", None),
        ("no box at all", None),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_final_answer_text_drops_thinking() -> None:
    text = "<think>\\boxed{1}</think>The answer is \\boxed{2}"
    assert final_answer_text(text) == "The answer is \\boxed{2}"
    assert final_answer_text("plain \\boxed{3}") == "plain \\boxed{3}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("042", 42),
        ("$70$", 70),
        ("\\text{70}", 70),
        ("+7", 7),
        ("1{,}000", 1000),
        ("42.", 42),
        (".5", None),
        ("42.5", None),
        ("x = 42", None),
        ("9" * 101, None),
    ],
)
def test_parse_integer(text: str, expected: int | None) -> None:
    assert parse_integer(text) == expected


def test_clip_keeps_short_text_and_cuts_long_text() -> None:
    assert clip("short") == "short"
    assert clip(None) is None
    clipped = clip("x" * 1000)
    assert clipped is not None and len(clipped) == 201 and clipped.endswith("…")


# --- multiple-choice letters -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```json\n{"reasoning": "energy is conserved", "answer": "C"}\n```', "C"),
        ('"answer": "(b)"', "B"),
        ("Therefore the answer is \\boxed{C}.", "C"),
        ("$\\boxed{\\text{(C)}}$", "C"),
        ("\\boxed{\\textbf{B}}", "B"),
        ("\\boxed{C. 42 m/s}", "C"),
        ("\\boxed{c}", "C"),
        ("Answer: (C)", "C"),
        ("Answer: C", "C"),
        ("ANSWER: D", "D"),
        ("**Answer:** C", "C"),
        ("**Final Answer: B**", "B"),
        ("The answer is C", "C"),
        ("The answer is C because energy is conserved.", "C"),
        ("The correct answer is: **(D)**, since the others violate parity.", "D"),
        ("The correct option is B.", "B"),
        ("The answer is option B", "B"),
        ("Answer: $\\text{A}$", "A"),
        ("At first the answer is a bit unclear. The answer is D.", "D"),
        ("Answer: A. Then again... Answer: B", "B"),
        ("Comparing all four options, the best is\n\n(C)", "C"),
        ("Comparing all four options, the best is\n\n**C**", "C"),
    ],
)
def test_extract_choice_reads_common_forms(text: str, expected: str) -> None:
    assert extract_choice(text, "ABCD") == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I am not sure which one it is.",
        "Answer: E",  # not an option of a 4-way question
        "answer: d",  # a lower-case letter after "answer" is too ambiguous to read
        "The answer is I think B",
        "\\boxed{a+b}",
        "\\boxed{\\frac{1}{2}}",
    ],
)
def test_extract_choice_finds_nothing(text: str) -> None:
    assert extract_choice(text, "ABCD") is None


def test_extract_choice_prefers_card_json_then_box_then_phrase() -> None:
    assert extract_choice('The answer is A. \\boxed{B} "answer": "C"', "ABCD") == "C"
    assert extract_choice("The answer is A. \\boxed{B}", "ABCD") == "B"


def test_extract_choice_ten_options_and_option_text() -> None:
    assert extract_choice("Answer: J.", choice_letters(10)) == "J"
    assert extract_choice("Answer: I", choice_letters(10)) == "I"
    choices = ("1 m/s", "2.5 m/s", "3 m/s", "4 m/s")
    assert extract_choice("so \\boxed{2.5 m/s}", "ABCD", choices) == "B"


def test_choice_letters_bounds() -> None:
    assert choice_letters(4) == "ABCD"
    assert choice_letters(10) == "ABCDEFGHIJ"
    with pytest.raises(ValueError, match="1 to 10"):
        choice_letters(11)


def test_judge_choice_scores_the_letter() -> None:
    sample = Sample(id="q", prompt="?", target="B", choices=("w", "x", "y", "z"))
    assert judge_choice(sample, '"answer": "B"') == Judgement(correct=True, extracted="B")
    assert judge_choice(sample, "Answer: (C)") == Judgement(correct=False, extracted="C")
    assert judge_choice(sample, "\\boxed{42}") == Judgement(correct=False, extracted="42")
    assert judge_choice(sample, "no idea") == Judgement(correct=False, extracted=None)
    # An answer stated only inside the thinking does not count.
    assert judge_choice(sample, "<think>Answer: B</think>I cannot decide.").correct is False


@pytest.mark.parametrize(
    "text",
    [
        "answer" + " " * 100_000,
        "The answer is " * 10_000,
        '"answer": ' * 20_000,
        "\\boxed{" + "\\text{" * 20_000 + "C" + "}" * 20_001,
        "x" * 100_000,
    ],
)
def test_extract_choice_is_fast_on_adversarial_text(text: str) -> None:
    """A guard against catastrophic backtracking, not a speed claim: a quadratic pattern on 100k
    characters takes ~10¹⁰ steps (tens of seconds at least), a linear one milliseconds, so a 10 s
    bound holds on a loaded 2-core runner and still catches the regression."""
    started = time.monotonic()
    extract_choice(text, choice_letters(10))
    assert time.monotonic() - started < 10.0


# --- math equivalence -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("\\frac{1}{2}", "\\dfrac{1}{2}"),
        ("\\frac{1}{2}", "\\frac{2}{4}"),
        ("\\sqrt{2}", "2^{1/2}"),
        ("3\\sqrt{13}", "\\sqrt{117}"),
        ("[-2,7]", "[-2, 7]"),
        ("(-\\infty, 3]", "(-\\infty,3]"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
        ("2, 3", "3, 2"),
        ("x^2+1", "1+x^2"),
        ("42", "042"),
    ],
)
def test_math_equivalent_forms_are_accepted(checker: MathChecker, gold: str, predicted: str) -> None:
    assert checker.equivalent(gold, predicted)


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        ("\\frac{1}{2}", "0.6"),
        ("\\sqrt{2}", "2"),
        ("[-2,7]", "(-2,7)"),
        ("2, 3", "2"),
        ("42", "24"),
        ("42", ""),
    ],
)
def test_math_wrong_answers_are_rejected(checker: MathChecker, gold: str, predicted: str) -> None:
    assert not checker.equivalent(gold, predicted)


@pytest.mark.parametrize(
    "predicted",
    [
        "10^{10^{10}}",
        "10^{10^{10}} - 10^{10^{10}} + 42",
        "9^{9^{9}}",
        "(10^{10})!",
        "(" * 400 + "42" + ")" * 400,
        "\\frac{" * 150 + "1" + "}{2}" * 150,
        "1+" * 50_000 + "1",  # 100k characters
    ],
    ids=["tower", "tower-cancel", "tower9", "factorial", "parens", "nested-frac", "100k-chars"],
)
def test_adversarial_math_answers_finish_fast_and_are_wrong(checker: MathChecker, predicted: str) -> None:
    started = time.monotonic()
    assert not checker.equivalent("42", predicted)
    assert time.monotonic() - started < TIMEOUT_S + SLACK_S


def test_overlong_answer_is_wrong_without_parsing(checker: MathChecker) -> None:
    started = time.monotonic()
    assert not checker.equivalent("1", "1" + " " * MAX_ANSWER_CHARS)
    assert time.monotonic() - started < 0.1


def test_worker_is_killed_past_the_limit_and_replaced() -> None:
    with MathChecker(timeout_s=30.0) as fast:
        assert fast.equivalent("1", "1.0")  # the worker is up; math_verify's own limits are now 10 s
        first_pid = fast._process.pid if fast._process else None
        # 0.3 s is far below math_verify's 10 s signal timeout, so only the parent's kill can stop this.
        fast.timeout_s = 0.3
        started = time.monotonic()
        assert not fast.equivalent("42", "9^{9^{9}}")
        assert time.monotonic() - started < 0.3 + SLACK_S
        assert fast._process is None  # killed, not left computing
        fast.timeout_s = 30.0  # the replacement must answer, however loaded the machine is
        assert fast.equivalent("\\frac{1}{2}", "0.5")
        assert fast._process is not None and fast._process.pid != first_pid


def test_checker_works_from_threads(checker: MathChecker) -> None:
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(checker.equivalent("\\frac{1}{2}", "0.5")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [True] * 4


def test_judge_math_reads_only_the_last_box(checker: MathChecker) -> None:
    assert judge_math("\\frac{1}{2}", "We get \\boxed{1} then fix it: \\boxed{0.5}", checker) == Judgement(
        correct=True, extracted="0.5"
    )
    unboxed = judge_math("\\frac{1}{2}", "The answer is 1/2.", checker)
    assert unboxed == Judgement(correct=False, extracted=None)
    assert judge_math("\\frac{1}{2}", "<think>\\boxed{1/2}</think>", checker).extracted is None


def test_judge_integer_forms(checker: MathChecker) -> None:
    assert judge_integer(42, "\\boxed{042}", checker) == Judgement(correct=True, extracted="042")
    assert judge_integer(42, "\\boxed{42.0}", checker).correct
    assert judge_integer(42, "\\boxed{\\frac{84}{2}}", checker).correct
    assert judge_integer(42, "\\boxed{43}", checker) == Judgement(correct=False, extracted="43")
    assert judge_integer(42, "no box", checker) == Judgement(correct=False, extracted=None)
    long_box = judge_integer(42, "\\boxed{" + "9" * 100_000 + "}", checker)
    assert not long_box.correct and long_box.extracted is not None and len(long_box.extracted) < 300


def test_forked_child_gets_its_own_worker(checker: MathChecker) -> None:
    assert checker.equivalent("2", "2.0")  # the parent's worker is running
    parent_pid = checker._process.pid if checker._process else None
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        same = checker.equivalent("\\frac{1}{2}", "0.5")
        fresh = checker._process is not None and checker._process.pid != parent_pid
        os.write(write_end, b"ok" if same and fresh else b"no")
        checker.close()
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    assert os.read(read_end, 2) == b"ok"
    os.close(read_end)
    assert checker.equivalent("\\frac{1}{2}", "0.5")  # the parent's worker was not disturbed
    assert checker._process is not None and checker._process.pid == parent_pid


def test_the_answer_stated_last_wins_whatever_its_form() -> None:
    """Issue 11: a JSON `"answer": "A"` early in a reply used to beat a later final `\\boxed{C}`."""
    assert extract_choice('First guess: {"answer": "A"}. On reflection, \\boxed{C}', "ABCD") == "C"
    assert extract_choice('\\boxed{C} ... final: {"answer": "B"}', "ABCD") == "B"
    assert extract_choice("Answer: B\n\n(D)", "ABCD") == "D"


def test_a_space_before_the_brace_of_boxed_is_read() -> None:
    assert last_boxed("so \\boxed {b}") == "b"
    assert extract_choice("the answer is \\boxed {B}", "ABCD") == "B"
    assert last_boxed("\\boxed{1} then \\boxed 2") == "1"  # no brace: not a box
