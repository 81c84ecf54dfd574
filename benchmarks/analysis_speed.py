"""How long each analysis command takes, and how much memory, on a store of realistic size and text.

A real study store holds ~400k generations whose thinking is 50–130 KB each at a 32k cap (real
R1-Distill-1.5B AIME traces: median ~50 KB), so a benchmark with a few hundred characters per
generation cannot show what reads text. This builds a store through the `Store` API (`put_variant`,
`record_run`, `write_results`): `--variants` variants × `--per-variant` generations (items × k = 4
samples) of one math task, whose text comes from the reasoning-like generator of
tests/long_traces.py (paragraphs of steps, hesitation markers, equations, boxed answers), about
`--text-kb` KB each; a share is cut at the cap and a share of those ends in a loop, both growing
with the variant's index (quantized variants think longer), and accuracy falls with it. A pool of
distinct generations is cycled (each row still stores its own copy: the database's size is real).

Then it runs each command as its own process (`python -m quantscope.cli ...`, output discarded) and
prints its wall and CPU seconds and peak RSS (the child's own `ru_maxrss`, read with `os.wait4`), the
store's size on disk, and for each export the file's size and its throughput: MB of file, and MB of
store (its size on disk), per wall second.

    python benchmarks/analysis_speed.py --variants 2 --per-variant 200 --text-kb 50
    python benchmarks/analysis_speed.py --variants 8 --per-variant 1000 --store /tmp/study  # kept, reused

`--store DIR` builds the store there, or reuses it when DIR already holds one (its size is then
whatever it was built with), and keeps it; without it the store lives in a temporary directory.
Each batch is written with its trace signals, as the eval writer commits them (computed once per
distinct pooled text, and their cost per generation printed); `--no-signals` builds a store as
quantscope wrote it before signals were stored, whose first `compare` computes them all once.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.long_traces import LongTrace, long_trace

from quantscope.analysis.signal_table import COLUMNS, signal_batch
from quantscope.store.database import DB_NAME, Store
from quantscope.store.rows import ResultRow, RunRecord, SignalBatch, SignalRow, Variant

TASK = "math500"
CAP = 32768
K = 4
POOL = 64
"""Distinct generations per kind (finished / cut / looping); rows cycle through them."""
BATCH = 500
CHARS_PER_TOKEN = 3.6
"""Characters per token of English reasoning text (Qwen tokenizer, roughly): token counts from text."""


def pools(text_kb: int, seed: int) -> dict[str, list[LongTrace]]:
    """Distinct generations of about `text_kb` KB: finished ones (lognormal sizes around it), and
    ones cut at the cap (1.3 × `text_kb`), progressing or looping."""
    rng = random.Random(seed)
    size = text_kb * 1000

    def sized(scale: float) -> int:
        return max(2000, int(size * scale))

    return {
        "stop": [long_trace(rng, sized(rng.lognormvariate(0, 0.3)), "finished") for _ in range(POOL)],
        "cut": [long_trace(rng, sized(1.3), rng.choice(("cut", "cut-char"))) for _ in range(POOL)],
        "loop": [
            long_trace(rng, sized(1.3), rng.choice(("loop-paragraph", "loop-word", "loop-digit")))
            for _ in range(POOL)
        ],
    }


def variant_rows(
    name: str, index: int, spec: str, per_variant: int, pool: dict[str, list[LongTrace]], rng: random.Random
) -> Iterator[ResultRow]:
    """`per_variant` rows of one variant: variant i is cut at the cap on 20% + 5%·i of its
    generations (40% of those looping) and right less often."""
    cut_share = 0.2 + 0.05 * index
    for n in range(per_variant):
        item, sample = divmod(n, K)
        difficulty = (item * 0.618) % 1.0
        kind = "stop" if rng.random() > cut_share else ("loop" if rng.random() < 0.4 else "cut")
        trace = pool[kind][rng.randrange(POOL)]
        thinking_tokens = int(len(trace.thinking) / CHARS_PER_TOKEN)
        answer_tokens = 0 if kind != "stop" else 40
        correct = kind == "stop" and rng.random() > difficulty * (1 + 0.05 * index)
        yield ResultRow(
            variant=name, task=TASK, item_id=f"q{item:05d}", sample=sample, spec_hash=spec, seed=sample,
            target=trace.target, text=trace.text, thinking=trace.thinking,
            answer=trace.text.partition("</think>")[2].strip(),
            completion_tokens=thinking_tokens + answer_tokens, thinking_tokens=thinking_tokens,
            answer_tokens=answer_tokens,
            finish_reason="stop" if kind == "stop" else "length", seconds=30.0, correct=correct,
            extracted=trace.target if correct else None, created=0.0, prompt_sha=f"p{item}",
        )  # fmt: skip


class CommitSignals:
    """The trace signals the eval writer stores with each row it commits (`signal_batch`), computed
    once per distinct pooled text (rows cycle through the pool; the values are those of the text)
    and timed: `seconds` over `computed` distinct generations."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], tuple[str, tuple]] = {}
        self.seconds, self.computed = 0.0, 0

    def batch(self, rows: list[ResultRow]) -> SignalBatch:
        out = []
        for row in rows:
            cached = self.values.get((row.text, row.target))
            if cached is None:
                started = time.perf_counter()
                (computed,) = signal_batch([row]).rows
                self.seconds += time.perf_counter() - started
                self.computed += 1
                cached = self.values[(row.text, row.target)] = (computed.rules, computed.values)
            out.append(SignalRow((row.variant, row.task, row.item_id, row.sample), *cached))
        return SignalBatch(COLUMNS, tuple(out))


def build_store(
    path: Path, variants: int, per_variant: int, text_kb: int, signals: CommitSignals | None, seed: int = 0
) -> None:
    """Write the store through the Store API, in batches of `BATCH` rows, with each batch's trace
    signals as the eval writer stores them (`signals`; None: a store written before they were kept)."""
    pool = pools(text_kb, seed)
    rng = random.Random(seed)
    with Store(path) as store:
        for index in range(variants):
            name = "bf16" if index == 0 else f"variant-{index:02d}"
            store.put_variant(Variant(name, f"/models/{name}", int(60e9 / (1 + index)), name, index == 0))
            spec = f"spec-{index}"
            store.record_run(
                RunRecord(spec, name, TASK, "vllm", f"/m/{name}", True, 0.6, 0.95, 20, CAP, 0, "{}", 0.0)
            )
            batch: list[ResultRow] = []
            for row in variant_rows(name, index, spec, per_variant, pool, rng):
                batch.append(row)
                if len(batch) == BATCH:
                    store.write_results(batch, signals.batch(batch) if signals else None)
                    batch = []
            store.write_results(batch, signals.batch(batch) if signals else None)


def store_bytes(path: Path) -> int:
    """The database's size on disk, with its WAL and shared-memory files."""
    return sum(f.stat().st_size for f in path.glob(DB_NAME + "*"))


def run_command(args: list[str]) -> tuple[float, float, float, int]:
    """Run `python -m quantscope.cli ARGS`: (wall seconds, CPU seconds (user + system), peak RSS in
    MB, exit status). The peak is this child's own (`os.wait4`), not the maximum over every child so
    far (RUSAGE_CHILDREN); CPU seconds are the figure to compare on a machine shared with others."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "quantscope.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        assert child.stderr is not None
        print(child.stderr.read().decode(errors="replace")[-2000:], file=sys.stderr)
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss / 1024, child.returncode  # ru_maxrss: KiB on Linux


def commands(store: Path, out: Path) -> dict[str, list[str]]:
    """The commands timed: each analysis command, and the exports."""
    where = ["--store", str(store)]
    return {
        "compare": ["compare", *where],
        "compare --json": ["compare", "--json", *where],
        "report": ["report", "--out", str(out / "report.html"), *where],
        "recommend": ["recommend", *where],
        "runs": ["runs", *where],
        "export parquet": ["export", "--out", str(out / "all.parquet"), *where],
        "export parquet, no text": [
            "export",
            "--out",
            str(out / "numbers.parquet"),
            "--columns",
            NUMBERS,
            *where,
        ],
        "export jsonl": ["export", "--out", str(out / "all.jsonl"), *where],
        "export csv": ["export", "--out", str(out / "all.csv"), *where],
    }


NUMBERS = "variant,task,item_id,sample,correct,finish_reason,completion_tokens,thinking_tokens"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--per-variant", type=int, default=200, help="generations per variant")
    parser.add_argument("--text-kb", type=int, default=50, help="typical generation size, KB")
    parser.add_argument("--store", type=Path, help="build the store here, or reuse it; kept")
    parser.add_argument("--only", nargs="*", help="run only these commands (names as printed)")
    parser.add_argument(
        "--no-signals",
        action="store_true",
        help="build the store without trace signals, as quantscope < 0.5 wrote it: the first "
        "compare then computes them once (its time is that one-time pass)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp) / "store"
        if (store / DB_NAME).is_file():
            print(f"reusing the store at {store}")
        else:
            started = time.perf_counter()
            signals = None if args.no_signals else CommitSignals()
            build_store(store, args.variants, args.per_variant, args.text_kb, signals)
            print(f"built {store} in {time.perf_counter() - started:.1f} s")
            if signals is not None and signals.computed:
                per = signals.seconds / signals.computed * 1000
                print(f"trace signals at commit: {per:.1f} ms per generation ({signals.computed} timed)")
        with Store.existing(store) as opened:
            rows = opened.count()
        stored = store_bytes(store)
        print(f"store: {rows:,} rows, {stored / 1e6:,.1f} MB on disk")
        heads = ("wall s", 9), ("cpu s", 9), ("peak RSS MB", 13), ("file MB", 9), ("file MB/s", 11)
        print(f"{'command':<26}" + "".join(f"{h:>{w}}" for h, w in heads) + f"{'store MB/s':>12}")
        failed = 0
        for name, command in commands(store, Path(tmp)).items():
            if args.only and name not in args.only:
                continue
            seconds, cpu, rss, status = run_command(command)
            failed += status != 0
            line = f"{name:<26}{seconds:>9.2f}{cpu:>9.2f}{rss:>13.0f}"
            if name.startswith("export") and status == 0:
                written = Path(command[command.index("--out") + 1])
                size = written.stat().st_size / 1e6
                line += f"{size:>9.1f}{size / seconds:>11.1f}{stored / 1e6 / seconds:>12.1f}"
            print(line + ("" if status == 0 else f"   FAILED (exit {status})"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
