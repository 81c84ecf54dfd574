"""Why a variant thinks longer: loops, hesitations and found-but-not-committed answers, read from
constructed generations and from the bundled reasoner's own traces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quantscope.analysis.traces import (
    TraceRow,
    TraceRules,
    first_statement_of,
    read_trace,
    read_traces,
    repeated_tail,
    trace_report,
)
from quantscope.store import Store

RULES = TraceRules()
PROGRESS = " ".join(f"step {i}: add {i} to the total, giving {i * (i + 1) // 2}." for i in range(1, 40))
LOOPING = PROGRESS + " So we need to recompute the sum again from the start." * 12


def test_a_repeated_tail_is_found_with_its_period_even_when_the_cap_cuts_a_block() -> None:
    assert repeated_tail(["x", "y", "a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b"]) == (11, 3)
    assert repeated_tail(["one", "two", "three", "four"]) == (0, 0)


def test_a_generation_ending_in_a_repeated_block_loops_and_one_still_progressing_does_not() -> None:
    looping = read_trace(LOOPING, LOOPING, None, RULES, math=False)
    assert looping.loops and looping.loop_words >= 12 * 11
    assert not read_trace(PROGRESS, PROGRESS, None, RULES, math=False).loops
    # a short stutter is not a loop: fewer than loop_words words repeat
    stutter = PROGRESS + " the the the"
    assert not read_trace(stutter, stutter, None, RULES, math=False).loops


def test_hesitation_markers_are_whole_words_or_phrases_in_any_case() -> None:
    thinking = "Wait, 3+4=7. But butter is not a marker. Hmm... let me double-check: wait. Alternatively"
    assert read_trace(thinking, thinking, None, RULES, math=False).hesitations == 6
    german = TraceRules(markers=("moment", "aber"))
    assert read_trace("Moment, aber nein. Wait.", "", None, german, math=False).hesitations == 2


@pytest.mark.parametrize(
    ("thinking", "target", "found"),
    [
        ("so 20+22 = 42\nchecking again", "42", True),
        ("Thus the answer is 42. But then", "42", True),
        ("we get $\\boxed{\\frac{1}{2}}$ here", "\\frac{1}{2}", True),
        ("the answer is \\left( 3, 4 \\right)", "(3,4)", True),
        ("we have 142 = 100 + 42\nso 420", "42", False),  # the number inside, not stated
        ("x = 41\nthe answer is 43", "42", False),
    ],
)
def test_found_means_the_gold_answer_is_stated_in_an_answer_pattern(
    thinking: str, target: str, found: bool
) -> None:
    assert (first_statement_of(thinking, target, RULES.answer_patterns) is not None) is found


def test_found_but_not_committed_and_where_the_answer_was_first_found() -> None:
    thinking = "first try: 6*7 = 42\n" + "hmm, maybe not. " * 10
    signals = read_trace(thinking, thinking + "</think>41", "42", RULES, math=True)
    assert signals.found and signals.first_found == pytest.approx(thinking.index("= 42") / len(thinking))
    assert read_trace(thinking, thinking, "42", RULES, math=False).found is None


def _rows(variant: str, items: int, thinking: str, *, truncated: bool, correct: bool) -> list[TraceRow]:
    return [
        TraceRow(
            variant,
            "t",
            f"i{i}",
            str(i + 10),
            thinking.replace("{t}", str(i + 10)),
            thinking,
            400,
            truncated,
            correct,
        )
        for i in range(items)
    ]


def test_a_looping_hesitant_variant_differs_from_the_baseline_with_cis_over_items() -> None:
    base = _rows("bf16", 30, PROGRESS + "\nso the total = {t}", truncated=False, correct=True)
    loops = _rows("int4", 30, "so the total = {t}\nwait, " + LOOPING, truncated=True, correct=False)
    report = read_traces(base + loops, "bf16", task_patterns={"t": ()}, n_boot=200)
    (c,) = report.comparisons
    assert c.loop_rate.delta == 1.0 and c.loop_rate.significant
    assert c.truncated_looping.delta == 1.0 and c.truncated_progressing.delta == 0.0
    assert c.hesitations_per_k.delta == pytest.approx(1000 / 400)
    assert c.not_committed is not None and c.not_committed.delta == 1.0
    baseline = report.stat("bf16", "t")
    # the baseline states only its own answer: another item's is never "found" in it
    assert baseline is not None and baseline.false_found == 0.0
    assert report.stat("int4", "t").first_found < 0.01  # stated in the first line


def test_the_false_found_rate_counts_coincidental_matches_on_correct_traces() -> None:
    noisy = "\n".join(f"partial = {n}" for n in range(10, 40))  # states every candidate answer
    report = read_traces(
        _rows("bf16", 20, noisy, truncated=False, correct=True), "bf16", task_patterns={"t": ()}
    )
    assert report.stat("bf16", "t").false_found == 1.0


@pytest.mark.slow
def test_the_bundled_reasoners_hesitations_are_its_retries(tmp_path: Path) -> None:
    """The toy writes "wait" on every failed check and nowhere else: counted as hesitations, they
    must equal the failed compare lines parsed from each of its real traces."""
    from quantscope.runner import RunSpec, run_eval
    from quantscope.toy import checkpoint_dir

    spec = RunSpec(
        model=str(checkpoint_dir()),
        tasks=[{"name": "synthetic", "options": {"per_level": 3, "levels": [4, 5, 6]}}],
        preset="qwen3.5-thinking",
        k=2,
        max_tokens=384,
        engine_options={"device": "cpu", "dtype": "float32"},
        variant="bf16",
    )
    with Store.open(tmp_path) as store:
        run_eval(spec, store)
        rows = list(store.traces())
        report = trace_report(store, "bf16")
    failed_check = re.compile(r"^compare [\d ]+ wait$", re.MULTILINE)
    retries = [len(failed_check.findall(row["thinking"])) for row in rows]
    counted = [
        read_trace(row["thinking"], row["text"], row["target"], RULES, math=False).hesitations for row in rows
    ]
    assert counted == retries
    assert sum(retries) > 0, "no failed check in these traces: the test would prove nothing"
    stats = report.stat("bf16", "synthetic")
    assert stats is not None and stats.samples == len(rows) and stats.false_found is not None


def test_the_finding_says_what_moved_or_that_nothing_did_at_this_sample_size(tmp_path: Path) -> None:
    """A variant that truncates on 12 of 40 items reads "truncation 0.0% → 30.0% (significant)";
    one generated like the baseline reads "no significant effect at this sample size"."""
    from quantscope.analysis.compare import analyze
    from quantscope.analysis.traces import thinking_findings
    from tests.test_compare import add_variant, outcomes

    with Store(tmp_path) as store:
        add_variant(store, "bf16", outcomes(40, 2, lambda i, j: True), memory=16_000, recipe="bf16")
        add_variant(store, "same", outcomes(40, 2, lambda i, j: True), memory=8_000, recipe="w8a16")
        short = lambda i, j: i % 10 < 3  # noqa: E731
        cut = outcomes(
            40,
            2,
            lambda i, j: not short(i, j),
            truncated=short,
            tokens=lambda i, j: 400 if short(i, j) else 100,
        )
        add_variant(store, "int4", cut, memory=4_000, recipe="w4a16")
        analysis = analyze(store)
        findings = dict(
            line.split(": ", 1) for line in thinking_findings(analysis, trace_report(store, "bf16"))
        )
    assert findings["same on synthetic"].startswith("no significant effect at this sample size (40 items")
    assert "truncation 0.0% → 30.0% (significant)" in findings["int4 on synthetic"]
    assert "p90 thinking +" in findings["int4 on synthetic"]
