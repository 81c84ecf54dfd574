"""Cost of the per-generation trace signals on generations the size of a real study's (50–130 KB).

A study store holds ~400k generations of 50–130 KB of thinking (real R1-Distill-1.5B AIME traces
at a 32k cap: median ~50 KB), so each signal must cost about as much as reading the text once.
This builds long generations from the hand-written traces in tests/data/labelled_traces.yaml
(the ones that do not loop, concatenated in a seeded order up to the size asked), in three
shapes: finished, cut while looping on a two-paragraph block (cut mid-word), cut looping on one
word ("wait wait …", the case issue 31 timed at 0.6–0.8 s per 130 KB generation with the old
word-based detector), and cut in a run of one digit ("5555…"); loops fill the last quarter. For
each it prints the fastest of `--repeats` wall times (ms; the machine is shared, the minimum is
the cost) of the
loop detector, the hesitation counter, the found detector (gold an integer, so math_verify is
never called) and `read_trace` as a whole, and `read_trace`'s throughput in MB/s.

Then, per comparison, the paired Kaplan–Meier median thinking with its 1,000-resample bootstrap CI
(`analysis.thinking.paired_thinking`) at 500, 4,000 and 12,000 items × 4 samples a side (MMLU-Pro
has 12,032 items), exponential lengths cut at a 32k cap.

It calls `read_trace` through its long-standing signature, so an older checkout can be timed
the same way (`PYTHONPATH=/path/to/old/src`): then the per-signal columns time the old functions.

    python benchmarks/trace_signals.py [--kb 50 130] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from quantscope.analysis import traces
from quantscope.analysis.traces import TraceRules, read_trace

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "labelled_traces.yaml"
LOOP_BLOCK = (
    "Wait, 7777 is 7 × 1111, and 1111 = 11 × 101. So 7777 = 7 × 11 × 101, and the smallest prime "
    "factor is 7. But let me check whether 7777 is divisible by a smaller prime.\n\n7777 is odd, so "
    "not 2. The digit sum is 28, so not 3. It doesn't end in 0 or 5, so not 5. So the smallest is 7.\n\n"
)


def generations(kb: int, seed: int = 0) -> dict[str, str]:
    """Generations of about `kb` kilobytes: finished, and cut in three kinds of loop."""
    labelled = yaml.load(DATA.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    pieces = [t["thinking"] for t in labelled if not t["loop"]]
    rng = np.random.default_rng(seed)
    size = kb * 1000
    text = ""
    while len(text.encode()) < size:
        text += pieces[int(rng.integers(len(pieces)))] + "\n\n"
    body = text.encode()[:size].decode(errors="ignore")
    head = body[: int(len(body) * 0.75)]
    looping = head + LOOP_BLOCK * ((len(body) - len(head)) // len(LOOP_BLOCK)) + LOOP_BLOCK[:37]
    three_quarters = body[: int(len(body) * 0.75)]
    one_word = three_quarters + " wait" * (len(body) // 20)
    digits = three_quarters + " so 5/9 = 0." + "5" * (len(body) // 4)
    return {"finished": body, "paragraph loop": looping, "one-word loop": one_word, "digit run": digits}


def signal_calls(rules: TraceRules) -> dict[str, Callable[[str], object]]:
    """Each signal as a call on one text, the new functions or, on an older checkout, the old ones."""
    try:
        from quantscope.analysis import signals
    except ImportError:  # before analysis.signals: the old word-based functions
        regex = rules.hesitation_regex()
        return {
            "loop": lambda text: traces.repeated_tail(text.split(), rules.max_period),
            "hesitations": lambda text: len(regex.findall(text)),
            "found": lambda text: traces.first_statement_of(text, "74", rules.answer_patterns),
        }
    return {
        "loop": lambda text: signals.repeated_tail(
            text, rules.max_period, rules.loop_chars, rules.loop_repeats
        ),
        "hesitations": lambda text: signals.hesitation_starts(text, rules),
        "found": lambda text: signals.first_statement_of(text, "74", rules),
    }


def timed(call: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` calls, wall seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=int, nargs="+", default=[50, 130])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rules = TraceRules()
    calls = signal_calls(rules)
    names = [*calls, "read_trace"]
    print(f"{'generation':<22}" + "".join(f"{name + ' ms':>16}" for name in names) + f"{'MB/s':>10}")
    for kb in args.kb:
        for shape, text in generations(kb).items():
            cells = [1000 * timed(lambda c=c, t=text: c(t), args.repeats) for c in calls.values()]
            whole = timed(lambda t=text: read_trace(t, t, "74", rules, math=True), args.repeats)
            cells.append(1000 * whole)
            rate = len(text.encode()) / 1e6 / whole
            print(f"{f'{kb} KB {shape}':<22}" + "".join(f"{c:>16.2f}" for c in cells) + f"{rate:>10.1f}")
    try:
        from quantscope.analysis.thinking import paired_thinking
    except ImportError:  # an older checkout: no censored thinking length
        return
    rng = np.random.default_rng(0)
    for items in (500, 4000, 12000):
        names = [f"i{i}" for i in range(items) for _ in range(4)]
        base, ours = (np.minimum(rng.exponential(scale, items * 4), 32768).round() for scale in (8000, 9000))
        sides = [(names, tokens, tokens >= 32768) for tokens in (ours, base)]
        seconds = timed(lambda s=sides: paired_thinking(*s, n_boot=1000), args.repeats)
        print(f"paired median thinking, {items:,} items × 4 a side: {seconds:.2f} s")


if __name__ == "__main__":
    main()
