"""Precision and recall of the trace detectors on hand-labelled reasoning traces
(tests/data/labelled_traces.yaml; how they were labelled is in the file's header). The README
quotes these figures; `benchmarks/trace_labels.py` prints them, for this checkout or an older one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from quantscope.analysis.signals import TraceRules, hesitation_starts, read_trace

DATA = Path(__file__).parent / "data" / "labelled_traces.yaml"
RULES = TraceRules()


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    return yaml.load(DATA.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)


def _text(trace: dict) -> str:
    thinking = trace["thinking"]
    return thinking if trace["truncated"] else f"{thinking}\n</think>\n\n{trace['answer']}"


def _rates(pairs: list[tuple[bool, bool]]) -> tuple[float, float]:
    """(precision, recall) of (predicted, labelled) pairs."""
    tp = sum(p and a for p, a in pairs)
    return tp / max(1, sum(p for p, _ in pairs)), tp / max(1, sum(a for _, a in pairs))


def test_the_labelled_set_covers_every_case_the_detectors_must_handle(traces: list[dict]) -> None:
    assert len(traces) >= 40
    tail = [t["thinking"][-200:] for t in traces]
    assert sum(t["loop"] and t["truncated"] for t in traces) >= 5  # loops cut at the cap
    assert sum(t["loop"] and t["truncated"] and t["thinking"][-1].isalnum() for t in traces) >= 2  # mid-word
    assert (
        sum(t["loop"] and " " not in end for t, end in zip(traces, tail, strict=True)) >= 2
    )  # "5555", ",3,3"
    assert sum(t["truncated"] and not t["loop"] for t in traces) >= 4  # cut while progressing
    assert sum("But wait" in t["thinking"] or "but wait" in t["thinking"] for t in traces) >= 3
    prose = [
        t
        for t in traces
        if not t["hesitations"] and ("However" in t["thinking"] or ", but " in t["thinking"])
    ]
    assert len(prose) >= 2
    math = [t for t in traces if t["kind"] == "math"]
    assert sum(t["gold"][:1] in "([" for t in math) >= 4  # intervals and tuples
    assert sum(len(t["decoys"]) for t in math) >= 40  # restated givens, intermediate values
    assert sum(t["found"] and not t["correct"] for t in math) >= 8  # found, not given
    for trace in traces:
        for snippet in trace["hesitations"]:
            assert snippet in trace["thinking"], (trace["id"], snippet)


def test_loop_detector(traces: list[dict]) -> None:
    pairs = [(read_trace(t["thinking"], _text(t), None, RULES, math=False).loops, t["loop"]) for t in traces]
    precision, recall = _rates(pairs)
    assert precision == 1.0 and recall >= 0.85, (precision, recall)  # measured: 1.00, 0.88 (7 of 8)


def test_hesitation_counter_by_position(traces: list[dict]) -> None:
    """Each labelled hesitation is where a listed snippet occurs; a counted one matches it when it
    starts inside the snippet ("**Wait**" counted at "Wait"); one to one."""
    tp = fp = fn = 0
    for trace in traces:
        thinking, snippets = trace["thinking"], trace["hesitations"]
        widest: dict[int, int] = {}  # a labelled start, and the longest snippet there
        for snippet in snippets:
            for at in _occurrences(thinking, snippet):
                widest[at] = max(widest.get(at, 0), len(snippet))
        spans = sorted((at, at + width) for at, width in widest.items())
        for start in hesitation_starts(thinking, RULES):
            hit = next((span for span in spans if span[0] <= start < span[1]), None)
            tp, fp = (tp + 1, fp) if hit else (tp, fp + 1)
            if hit:
                spans.remove(hit)
        fn += len(spans)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.95 and recall >= 0.95, (tp, fp, fn)  # measured: 154 / 1 / 0


def test_found_detector_on_golds_and_decoys(traces: list[dict]) -> None:
    """Found, on each math trace's gold; and never on its decoys (values the trace states that are
    not its answer, as another item's gold would be)."""
    math = [t for t in traces if t["kind"] == "math"]
    found = {
        t["id"]: bool(read_trace(t["thinking"], _text(t), t["gold"], RULES, math=True).found) for t in math
    }
    precision, recall = _rates([(found[t["id"]], t["found"]) for t in math])
    assert precision >= 0.95 and recall >= 0.85, (precision, recall)  # measured: 1.00, 0.89 (32 of 36)
    decoys = [
        (t["id"], value)
        for t in math
        for value in t["decoys"]
        if read_trace(t["thinking"], _text(t), value, RULES, math=True).found
    ]
    assert decoys == []  # measured: 0 of 66
    not_given = [(found[t["id"]] and not t["correct"], t["found"] and not t["correct"]) for t in math]
    precision, recall = _rates(not_given)
    assert precision >= 0.95 and recall >= 0.7, (precision, recall)  # measured: 1.00, 0.71 (10 of 14)


def _occurrences(text: str, snippet: str) -> list[int]:
    found, at = [], text.find(snippet)
    while at >= 0:
        found.append(at)
        at = text.find(snippet, at + 1)
    return found
