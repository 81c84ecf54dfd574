"""Precision and recall of the trace detectors on the hand-labelled traces (tests/data/labelled_traces.yaml).

For each labelled generation it runs `quantscope.analysis.traces.read_trace` (the detectors the
store's traces go through) and compares with the labels:

- loop: per generation (labelled loop yes / no);
- hesitations: per hesitation, matched by where it opens when the detector reports positions
  (`signals.hesitation_starts`), else by count (matched = min(counted, labelled) per trace);
- found: per (trace, answer) pair on math traces: the trace's gold (labelled found yes / no) and
  its decoys (values it states that are not its answer, labelled no);
- found, not given: per math trace: found and the final answer wrong.

It uses only `read_trace`'s long-standing signature, so it measures an older checkout too:
`PYTHONPATH=/path/to/old/src python benchmarks/trace_labels.py`. `--json` prints the figures as JSON.

    python benchmarks/trace_labels.py [--data tests/data/labelled_traces.yaml] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from quantscope.analysis.traces import TraceRules, read_trace

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "labelled_traces.yaml"


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, predicted: bool, actual: bool) -> None:
        self.tp += predicted and actual
        self.fp += predicted and not actual
        self.fn += actual and not predicted

    def row(self) -> dict[str, float | int]:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": precision, "recall": recall}


def labelled_starts(thinking: str, snippets: list[str]) -> list[int]:
    """Every position where a labelled snippet occurs (each occurrence is one hesitation)."""
    starts: set[int] = set()
    for snippet in snippets:
        at = thinking.find(snippet)
        while at >= 0:
            starts.add(at)
            at = thinking.find(snippet, at + 1)
    return sorted(starts)


def match_starts(found: list[int], labelled: list[int], thinking: str, snippets: list[str]) -> Tally:
    """Greedy one-to-one matching: a found start matches a labelled one when it lies inside the
    labelled snippet (a marker after its lead-in, "**Wait**" found at "Wait")."""
    width = {start: max(len(s) for s in snippets if thinking.startswith(s, start)) for start in labelled}
    free = set(labelled)
    tally = Tally()
    for start in found:
        hit = next((lab for lab in sorted(free) if lab <= start < lab + width[lab]), None)
        if hit is None:
            tally.fp += 1
        else:
            free.discard(hit)
            tally.tp += 1
    tally.fn += len(free)
    return tally


def measure(traces: list[dict], rules: TraceRules) -> dict[str, dict[str, float | int]]:
    loop, hesitation, found, decoy, not_given = Tally(), Tally(), Tally(), Tally(), Tally()
    plain = Tally()  # hesitations in traces that do not loop (a loop repeats one label many times)
    from quantscope.analysis import signals as module_signals  # absent before the rewrite

    starts_of = getattr(module_signals, "hesitation_starts", None)
    for trace in traces:
        thinking = trace["thinking"]
        text = thinking if trace["truncated"] else f"{thinking}\n</think>\n\n{trace['answer']}"
        math = trace["kind"] == "math"
        read = read_trace(thinking, text, trace["gold"] if math else None, rules, math=math)
        loop.add(read.loops, trace["loop"])
        labelled = labelled_starts(thinking, trace["hesitations"])
        if starts_of is not None:
            tally = match_starts(starts_of(thinking, rules), labelled, thinking, trace["hesitations"])
        else:
            matched = min(read.hesitations, len(labelled))
            tally = Tally(matched, read.hesitations - matched, len(labelled) - matched)
        for total in (hesitation, *(() if trace["loop"] else (plain,))):
            total.tp, total.fp, total.fn = total.tp + tally.tp, total.fp + tally.fp, total.fn + tally.fn
        if math:
            found.add(bool(read.found), trace["found"])
            not_given.add(bool(read.found) and not trace["correct"], trace["found"] and not trace["correct"])
            for value in trace["decoys"]:
                decoy.add(bool(read_trace(thinking, text, value, rules, math=True).found), False)
    both = Tally(found.tp, found.fp + decoy.fp, found.fn)
    return {
        "loop": loop.row(),
        "hesitation": hesitation.row(),
        "hesitation (no loop)": plain.row(),
        "found (gold)": found.row(),
        "found (gold + decoys)": both.row(),
        "found, not given": not_given.row(),
    }


def _signals_module_exists() -> bool:
    try:
        import quantscope.analysis.signals  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    traces = yaml.load(args.data.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    if not _signals_module_exists():  # an older checkout: no positions, count-based hesitations
        import sys
        import types

        sys.modules["quantscope.analysis.signals"] = types.ModuleType("signals")
    start = time.perf_counter()
    table = measure(traces, TraceRules())
    seconds = time.perf_counter() - start
    math = sum(t["kind"] == "math" for t in traces)
    decoys = sum(len(t["decoys"]) for t in traces)
    if args.json:
        print(json.dumps({"traces": len(traces), "math": math, "decoys": decoys, "table": table}, indent=1))
        return
    print(f"{len(traces)} labelled traces ({math} math, {decoys} decoys), {seconds:.1f} s")
    print(f"{'detector':<24} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>10} {'recall':>8}")
    for name, row in table.items():
        print(
            f"{name:<24} {row['tp']:>4} {row['fp']:>4} {row['fn']:>4} "
            f"{row['precision']:>10.2f} {row['recall']:>8.2f}"
        )


if __name__ == "__main__":
    main()
