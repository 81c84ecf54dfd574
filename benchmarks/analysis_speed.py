"""How long analysis takes on a realistic store: 10 variants × 1,000 samples (250 items × k=4).

Builds the store through the Store API (seeded synthetic judgements and token counts, thinking
text of a few hundred characters), then times, separately: reading + comparing (`analyze`, with
1,000 bootstrap resamples per CI), `recommend`, picking and reading the example generations, and
rendering the HTML report. The acceptance bar is analysis (analyze + recommend) under 5 s.

    .venv/bin/python benchmarks/analysis_speed.py [--variants 10] [--samples 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from quantscope.analysis.compare import analyze
from quantscope.analysis.recommend import recommend
from quantscope.report.html import render, select_examples
from quantscope.store.database import Store
from quantscope.store.rows import ResultRow, RunRecord, Variant
from quantscope.util import write_atomic

LIMIT_SECONDS = 5.0
CAP = 32768


def build_store(path: Path, variants: int, samples: int, k: int = 4, seed: int = 0) -> None:
    """Write `variants` variants of `samples` rows each; variant i loses accuracy and thinks longer with i."""
    rng = np.random.default_rng(seed)
    items = samples // k
    with Store(path) as store:
        for v in range(variants):
            name = "bf16" if v == 0 else f"variant-{v:02d}"
            store.put_variant(Variant(name, f"/models/{name}", int(60e9 / (1 + v)), name, v == 0))
            spec = f"spec-{v}"
            store.record_run(
                RunRecord(spec, name, "aime25", "vllm", f"/m/{name}", True, 0.6, 0.95, 20, CAP, 0, "{}", 0.0)
            )
            difficulty = rng.uniform(0, 1, items)
            rows = []
            for i in range(items):
                for j in range(k):
                    tokens = int(min(CAP, rng.lognormal(9.0 + 0.04 * v + difficulty[i], 0.6)))
                    truncated = tokens >= CAP
                    correct = (not truncated) and rng.uniform() > difficulty[i] * (1 + 0.05 * v)
                    thinking = max(1, tokens - 200)
                    rows.append(
                        ResultRow(
                            name, "aime25", f"q{i:04d}", j, spec, j, "42",
                            "<think>" + "reasoning " * 40 + "</think>\\boxed{42}",
                            "reasoning " * 40, "\\boxed{42}", tokens, thinking, tokens - thinking,
                            "length" if truncated else "stop", 30.0, bool(correct), "42", 0.0,
                        )
                    )  # fmt: skip
            store.write_results(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1000, help="samples per variant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        build_store(root, args.variants, args.samples)
        built = time.perf_counter() - started
        with Store(root) as store:
            t0 = time.perf_counter()
            analysis = analyze(store)
            t1 = time.perf_counter()
            rec = recommend(analysis, budget_bytes=int(24e9))
            t2 = time.perf_counter()
            examples = select_examples(store, analysis, 3)
            t3 = time.perf_counter()
        page = render(analysis, rec, examples)
        write_atomic(root / "report.html", page)
        t4 = time.perf_counter()
    analysis_seconds = t2 - t0
    rows = len(analysis.results)
    print(
        f"store: {args.variants} variants × {args.samples} samples = {rows:,} rows (built in {built:.1f} s)"
    )
    print(f"analyze (read + metrics + paired bootstrap CIs): {t1 - t0:.2f} s")
    print(f"recommend (frontier + tie tests):               {t2 - t1:.2f} s")
    print(f"select + read example generations:             {t3 - t2:.2f} s")
    print(f"render + write the HTML report ({len(page) / 1e6:.1f} MB):        {t4 - t3:.2f} s")
    print(f"analysis total: {analysis_seconds:.2f} s (limit {LIMIT_SECONDS:.0f} s) -> {rec.summary()}")
    return 0 if analysis_seconds < LIMIT_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
