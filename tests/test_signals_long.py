"""The trace signals on long generations (issue 31): `read_trace` gives what a direct reading of
each signal's definition gives, on the hand-labelled traces and a few hundred seeded long ones
(tests/long_traces.py: loops, cuts mid-word and mid-character, markers, boxed answers).

The oracles: for loops, every period checked directly on the tail (numpy, no key search); for
"found", the detector as it was before its speed-up (every statement and every reading compared,
the alternation-led conclusion regex), run through the module's unchanged helpers; for
hesitations, `hesitation_starts` called alone (it lower-cases the text itself)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from quantscope.analysis import signals
from quantscope.analysis.signals import TraceRules, TraceSignals, read_trace
from tests.long_traces import SHAPES, LongTrace, long_traces

DATA = Path(__file__).parent / "data" / "labelled_traces.yaml"
RULES = (
    TraceRules(verify=False),
    TraceRules(loop_repeats=2, loop_chars=200, max_period=1000, verify=False),
)
_WORDS = "|".join(re.escape(w) for w in sorted(signals.CONCLUSION_WORDS, key=len, reverse=True))
OLD_CONCLUSION = re.compile(r"(?:[.!?][ \t]+|\n)[ \t*>#-]*(" + _WORDS + r")(?![a-z])")


def brute_repeated_tail(text: str, max_period: int, min_chars: int, repeats: int) -> tuple[int, int]:
    """The shortest period p ≤ `max_period` whose run at the end of `text` (characters equal to the
    one p before) makes a tail of at least `repeats` blocks and `min_chars` characters, checked
    for every p on the text itself. Needs min_chars ≥ 32 and repeats ≥ 2 (then any valid run is
    at least 16 characters long, the key the detector searches with)."""
    text = text.rstrip("\ufffd")
    n = len(text)
    if n < min_chars:
        return 0, 0
    code = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    periods = np.arange(1, min(max_period, n - 16) + 1)
    candidates = np.ones(len(periods), dtype=bool)
    for back in range(1, 17):  # a run of 16 or more: the last 16 characters repeat p before
        candidates &= code[n - back - periods] == code[n - back]
    for period in periods[candidates].tolist():
        need = max((repeats - 1) * period, min_chars - period)  # the run a loop of this period needs
        if need > n - period or not np.array_equal(code[n - need :], code[n - need - period : n - period]):
            continue
        same = code[period:] == code[:-period]
        differs = np.flatnonzero(~same)
        run = len(same) - 1 - differs[-1] if len(differs) else len(same)
        return int(run) + period, period
    return 0, 0


def reference_first_statement(thinking: str, target: str, rules: TraceRules) -> int | None:
    """`first_statement_of` before the speed-up: every statement (old conclusion regex) and every
    reading of it (the trailing-words regex always run) compared with `_cheap_same`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(signals, "_conclusion_regex", lambda: OLD_CONCLUSION)
        statements = signals.answer_statements(thinking, rules)
    for position, stated in statements:
        value = stated.strip().rstrip(".;:!").strip()
        bare = signals._TRAILING_WORDS.sub("", value)
        for reading in (value,) if bare == value or not bare else (value, bare):
            if signals._cheap_same(reading, target):
                return position
    return None


def reference_signals(trace: LongTrace, rules: TraceRules) -> TraceSignals:
    length, period = brute_repeated_tail(trace.text, rules.max_period, rules.loop_chars, rules.loop_repeats)
    found = first = None
    if trace.math:
        position = reference_first_statement(trace.thinking, trace.target, rules)
        found = position is not None
        first = position / max(len(trace.thinking), 1) if position is not None else None
    hesitations = len(signals.hesitation_starts(trace.thinking, rules))
    return TraceSignals(period > 0, length, period, hesitations, found, first)


def labelled() -> list[LongTrace]:
    traces = yaml.load(DATA.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return [
        LongTrace(
            t["thinking"],
            t["thinking"] if t["truncated"] else f"{t['thinking']}\n</think>\n\n{t['answer']}",
            str(t["gold"]),
            t["kind"] == "math",
            "labelled",
        )
        for t in traces
    ]


@pytest.fixture(scope="module")
def generations() -> list[LongTrace]:
    return labelled() + long_traces(180, seed=31, sizes=(2_000, 110_000))


def test_the_generated_traces_cover_every_case(generations: list[LongTrace]) -> None:
    read = [read_trace(t.thinking, t.text, t.target, RULES[0], math=t.math) for t in generations]
    assert {t.shape for t in generations} >= set(SHAPES)
    assert sum(s.loops for s in read) >= 80 and sum(not s.loops for s in read) >= 80
    assert sum(s.loop_period == 1 for s in read) >= 20  # "5555…"
    assert sum(s.loop_period > 1000 for s in read) >= 10  # long blocks
    assert sum(bool(s.found) for s in read) >= 50 and sum(s.found is False for s in read) >= 20
    assert sum(s.hesitations >= 10 for s in read) >= 80
    assert sum(t.thinking.endswith("\ufffd") for t in generations) >= 20
    assert sum("²" in t.thinking for t in generations) >= 80


@pytest.mark.parametrize("rules", RULES, ids=["default", "two-repeats"])
def test_read_trace_equals_the_reference_on_long_generations(
    generations: list[LongTrace], rules: TraceRules
) -> None:
    for trace in generations:
        got = read_trace(trace.thinking, trace.text, trace.target, rules, math=trace.math)
        assert got == reference_signals(trace, rules), (trace.shape, len(trace.text), trace.target)


def test_a_number_written_with_a_superscript_is_not_a_number_and_does_not_crash() -> None:
    """'5²' passes str.isdigit(), and int() refused it: the found detector raised ValueError."""
    rules = TraceRules(verify=False)
    thinking = "So the area is 5². Hence the side is 5. So the area is 25."
    assert signals.first_statement_of(thinking, "25", rules) == thinking.index("So the area is 25")
    assert signals.first_statement_of("Thus x = 5².", "25", rules) is None
