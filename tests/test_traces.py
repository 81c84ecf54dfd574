"""Why a variant thinks longer: loops, hesitations and found-but-not-committed answers, read from
constructed generations and from the bundled reasoner's own traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantscope.analysis.signals import hesitation_starts, same_answer
from quantscope.analysis.traces import (
    TraceRow,
    TraceRules,
    first_statement_of,
    read_trace,
    read_traces,
    repeated_tail,
    trace_report,
)
from quantscope.store.database import Store

RULES = TraceRules()
PROGRESS = " ".join(f"step {i}: add {i} to the total, giving {i * (i + 1) // 2}." for i in range(1, 40))
LOOPING = PROGRESS + " So we need to recompute the sum again from the start." * 12
BLOCK = (
    "Wait, 7777 is 7 × 1111, and 1111 = 11 × 101. So 7777 = 7 × 11 × 101, and the smallest prime "
    "factor is 7. But let me check whether 7777 is divisible by a smaller prime.\n\n"
)


def _loops(text: str) -> bool:
    return read_trace(text, text, None, RULES, math=False).loops


def test_a_repeated_tail_is_found_with_its_period_even_when_the_cap_cuts_a_block() -> None:
    text = "some reasoning first, " + "abc" * 20 + "ab"
    assert repeated_tail(text, min_chars=10) == (62, 3)
    assert repeated_tail(PROGRESS, min_chars=10) == (0, 0)


def test_a_generation_ending_in_a_repeated_block_loops_and_one_still_progressing_does_not() -> None:
    looping = read_trace(LOOPING, LOOPING, None, RULES, math=False)
    assert looping.loops and looping.loop_period == len(
        " So we need to recompute the sum again from the start."
    )
    assert looping.loop_chars >= 12 * looping.loop_period
    assert not _loops(PROGRESS)
    # a short stutter is not a loop, and neither are two copies of a paragraph
    assert not _loops(PROGRESS + " the the the")
    assert not _loops(PROGRESS + BLOCK * 2 + BLOCK[:50])


def test_a_loop_cut_mid_word_by_the_cap_is_still_a_loop() -> None:
    """Issue 27: the cap cuts the last copy mid-word ("…= 11 × 1" of "101"); the old word-based
    detector compared the partial last word with a whole one and missed the loop."""
    cut = "Okay, let me factor 7777.\n\n" + BLOCK * 20 + BLOCK[: BLOCK.index("101.") + 1]
    assert cut.endswith("= 11 × 1") and _loops(cut)
    half_character = "Okay.\n\n" + "the range is [1, ∞). " * 30 + "the range is [1, \ufffd"
    assert _loops(half_character)  # half of a multi-byte "∞", decoded as U+FFFD


def test_runs_without_spaces_are_loops() -> None:
    """Issue 27: "5555…" and ",3,3,3" are single words, so word-based matching never saw them."""
    assert _loops("So 5/9 = 0." + "5" * 3000)
    assert _loops("Writing out the terms: 1" + ",3" * 1500 + ",")
    assert not _loops("So 11111 × 5 = 55555.\n\nLet me double-check with 111110 / 2 = 55555. Yes.")


def test_hesitations_open_a_sentence_or_clause_and_a_run_counts_once() -> None:
    """Issue 27: "but", "however", "actually" joining an argument are not hesitations (the old
    counter found 6 in this prose); "But wait" is one hesitation (it counted two)."""
    prose = (
        "Listing them would also work, but it is slow. However, the formula is reliable here. "
        "Actually, a quick check is cheap, but not needed. The distance is large, but light is fast; "
        "however, the answer is in seconds. We wait for the signal, or alternatively double the time."
    )
    assert read_trace(prose, prose, None, RULES, math=False).hesitations == 0
    cases = {
        "So x = 3. But wait, the sign is wrong.": 1,
        "Wait, 3+4=7. But butter is not a marker. Hmm... let me double-check: wait. Alternatively": 4,
        "Hmm... wait, wait — hmm. Wait.": 2,  # one run up to the sentence end, then another
        "Hmm, wait, wait. Let me see.": 1,
        "x = 3, but wait, that's wrong. Oh wait, no.\n**Wait**, again? Hold on. On second thought, fine.": 5,
        "It's 5 (wait, no, 6). Hmmm, 6 it is.": 2,
        "we wait wait. Wait, no": 1,
        "Waiting is fine; awaiting too.": 0,
    }
    for thinking, count in cases.items():
        assert read_trace(thinking, thinking, None, RULES, math=False).hesitations == count, thinking
    assert hesitation_starts("So x = 3. But wait, no.", RULES) == [10]  # where "But" opens it
    german = TraceRules(markers=("moment", "warte"), lead_ins=("aber",))
    assert (
        read_trace(
            "Moment, das stimmt nicht. Aber warte, nein. Wait.", "", None, german, math=False
        ).hesitations
        == 2
    )


@pytest.mark.parametrize(
    ("thinking", "target", "found"),
    [
        ("so 20+22 = 42\nchecking again", "42", True),
        ("Thus the answer is 42. But then", "42", True),
        ("we get $\\boxed{\\frac{1}{2}}$ here", "\\frac{1}{2}", True),
        ("the answer is \\left( 3, 4 \\right)", "(3,4)", True),
        ("**Final answer:** 336\n\nHmm, wait.", "336", True),
        ("Therefore 360 has 24 positive divisors.", "24", True),
        ("So the ratio is 2r^2 / 4r^2 = 0.5.", "\\frac{1}{2}", True),
        ("So the probability is 3/4.", "\\frac{3}{4}", True),
        ("So (x, y) = (3, −1).", "(3, -1)", True),
        ("we have 142 = 100 + 42\nso 420", "42", False),  # the number inside, not stated
        ("x = 41\nthe answer is 43", "42", False),
        # issue 27: not conclusions (the old detector counted every line ending in "= gold")
        ("Okay, we have N = 2025\nLet me factor it.", "2025", False),  # a restated given
        ("Their sum is 7 · 13 = 91\nNow subtract the squares.", "91", False),  # an intermediate value
        ("If the answer is 12, then the other is 15.", "12", False),  # a hypothesis
        ("The answer is not 3, since the question says faces.", "3", False),
        # issue 27: intervals keep their brackets
        ("Hmm, so the answer is (-\\infty, 2).", "(-\\infty, 2]", False),
        ("So the solution set is [1, 3].", "(1, 3)", False),
        ("Therefore the domain is (-\\infty, 2).", "(-\\infty,2)", True),
    ],
)
def test_found_means_the_gold_answer_is_stated_as_a_conclusion(
    thinking: str, target: str, found: bool
) -> None:
    assert (first_statement_of(thinking, target, RULES) is not None) is found


def test_answers_in_other_forms_are_compared_by_math_verify() -> None:
    """Forms only math_verify can equate (the judges' checker, time-limited); brackets differ."""
    assert same_answer("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}")
    assert same_answer("\\sqrt{8}", "2\\sqrt{2}")
    assert not same_answer("\\sqrt{3}", "2\\sqrt{2}")
    assert not same_answer("(-\\infty, 2)", "(-\\infty, 2]")
    assert not same_answer("\\sqrt{8}", "2\\sqrt{2}", verify=False)  # undecided without math_verify


def test_found_but_not_committed_and_where_the_answer_was_first_found() -> None:
    thinking = "Let me try 6*7.\nSo the answer is 42.\n" + "hmm, maybe not. " * 10
    signals = read_trace(thinking, thinking + "</think>41", "42", RULES, math=True)
    assert signals.found and signals.first_found == pytest.approx(thinking.index("So the") / len(thinking))
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
    # concludes every candidate answer in turn (lines ending "= n" alone are no longer conclusions)
    noisy = "\n".join(f"So the answer is {n}." for n in range(10, 40))
    report = read_traces(
        _rows("bf16", 20, noisy, truncated=False, correct=True), "bf16", task_patterns={"t": ()}
    )
    assert report.stat("bf16", "t").false_found == 1.0


@pytest.mark.slow
def test_the_bundled_reasoners_hesitations_are_its_retries(tmp_path: Path) -> None:
    """The toy writes "wait" at the end of every failed check's line and nowhere else (its own
    format, declared by its task: no sentence opens with "wait"): counted through the task's
    patterns, hesitations must equal the failed compare lines split out of each real trace, and
    the report's rate must be their mean per 1,000 thinking tokens."""
    from quantscope.analysis.traces import task_trace_patterns
    from quantscope.evaluate.runner import run_eval
    from quantscope.evaluate.spec import RunSpec
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
    retries = [
        sum(
            line.split()[:1] == ["compare"] and line.split()[-1] == "wait"
            for line in row["thinking"].splitlines()
        )
        for row in rows
    ]
    answers, hesitations = task_trace_patterns("synthetic")
    toy = RULES.with_patterns(answers or (), hesitations)
    counted = [
        read_trace(row["thinking"], row["text"], row["target"], toy, math=True).hesitations for row in rows
    ]
    assert counted == retries
    assert sum(retries) > 0, "no failed check in these traces: the test would prove nothing"
    assert sum(read_trace(r["thinking"], r["text"], None, RULES, math=False).hesitations for r in rows) == 0
    per_item: dict[str, list[float]] = {}
    for row, retry in zip(rows, retries, strict=True):
        per_item.setdefault(str(row["item_id"]), []).append(1000 * retry / row["thinking_tokens"])
    stats = report.stat("bf16", "synthetic")
    assert stats is not None and stats.samples == len(rows) and stats.false_found is not None
    assert stats.hesitations_per_k == pytest.approx(np.mean([np.mean(v) for v in per_item.values()]))


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
    # its finished generations think as long as the baseline's: the extra thinking is the truncation
    assert "median thinking 90 → 90 tokens (+0%" in findings["int4 on synthetic"]


def _finding(tmp_path: Path, baseline: list, variant: list) -> str:
    from quantscope.analysis.compare import analyze
    from quantscope.analysis.traces import thinking_findings
    from tests.test_compare import add_variant

    with Store(tmp_path) as store:
        add_variant(store, "bf16", baseline, memory=16_000, recipe="bf16")
        add_variant(store, "int4", variant, memory=4_000, recipe="w4a16")
        (line,) = thinking_findings(analyze(store), trace_report(store, "bf16"))
    return line


def test_the_thinking_change_is_not_pinned_at_the_cap(tmp_path: Path) -> None:
    """Issue 27: with 10% or more of the samples cut, the p90 was the cap on both sides and the
    finding read "p90 thinking +0%" whatever happened. Here the variant thinks 190 tokens where the
    baseline thinks 90 and is cut more often (40% vs 20%): the cut-aware median says so. With every
    cut sample censored at the cap and fewer than half cut, the Kaplan–Meier median is the plain
    median of all samples (numpy's, the oracle)."""
    from tests.test_compare import outcomes

    base = outcomes(40, 2, lambda i, j: True, truncated=lambda i, j: i % 10 < 2, tokens=lambda i, j: 100)
    longer = outcomes(40, 2, lambda i, j: True, truncated=lambda i, j: i % 10 < 4, tokens=lambda i, j: 200)
    line = _finding(tmp_path / "a", base, longer)
    ours = float(np.median([400 if o.truncated else o.tokens - 10 for o in longer]))
    theirs = float(np.median([400 if o.truncated else o.tokens - 10 for o in base]))
    assert (theirs, ours) == (90.0, 190.0)
    assert f"median thinking {theirs:.0f} → {ours:.0f} tokens (+{100 * (ours / theirs - 1):.0f}% [" in line
    assert "+0%" not in line
    mostly_cut = outcomes(
        40, 2, lambda i, j: True, truncated=lambda i, j: i % 10 < 6, tokens=lambda i, j: 200
    )
    assert "median thinking 90 → over 400 tokens (half or more cut)" in _finding(
        tmp_path / "b", base, mostly_cut
    )


def test_the_thinking_change_is_paired_on_the_shared_items(tmp_path: Path) -> None:
    """Issue 27: a variant run on the baseline's 10 short items, identical on every one of them,
    read "p90 thinking -76%" (its p90 over 10 items against the baseline's over 40)."""
    from tests.test_compare import outcomes

    tokens = lambda i, j: 100 if i < 10 else 380  # noqa: E731
    line = _finding(
        tmp_path,
        outcomes(40, 2, lambda i, j: True, tokens=tokens),
        outcomes(10, 2, lambda i, j: True, tokens=tokens),
    )
    assert "(10 items; median thinking 90 → 90 tokens (+0% [+0%, +0%])" in line
