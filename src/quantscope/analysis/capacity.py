"""What each evaluated variant is worth on a GPU: how many of its measured generations fit at once,
how fast they decode at best, and what a correct answer costs.

Quantized models think longer, so each answer holds more KV cache and takes more decode steps. This
module turns the lengths a store measured into capacity and money with `quantscope.plan.serving`'s vLLM
arithmetic: the sequences that fit at once at the measured p90 length, the decode roofline at
that batch (an upper bound), answers and correct answers per GPU-hour, and with a price the cost
of 1,000 correct answers. Prompts are not stored yet, so every sequence is `prompt_tokens` (an
estimate the user can set) plus its measured completion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from quantscope.analysis.compare import Analysis
from quantscope.errors import QuantscopeError
from quantscope.plan.serving import (
    DecodeBytes,
    GpuBudget,
    decode_bytes,
    serve_on_gpu,
)


@dataclass(frozen=True)
class VariantCapacity:
    """One variant on the budget's GPU. Token lengths are prompt + completion per sequence (p50,
    p90, p99 over all its samples); `context` is what vLLM must be started with (prompt + the
    largest cap); `fits` whether one sequence at that context fits; `concurrent` the sequences
    of p90 length that fit at once; `decode_tokens_per_s` the roofline at min(concurrent, 256)
    sequences (an upper bound); answers and correct answers per GPU-hour follow from it and the
    mean completion; `cost_per_1000_correct` in the price's currency (None without a price)."""

    variant: str
    tokens_p50: float
    tokens_p90: float
    tokens_p99: float
    context: int
    fits: bool
    kv_pool_bytes: int
    concurrent: float
    decode_tokens_per_s: float
    answers_per_hour: float
    correct_per_hour: float
    cost_per_1000_correct: float | None


def variant_capacities(
    analysis: Analysis, budget: GpuBudget, config: Mapping[str, Any]
) -> dict[str, VariantCapacity]:
    """Every variant with a known memory figure and counted lengths on `budget`'s GPU (variant
    name -> capacity). `config` is the model's config (quantization leaves the cache shape alone)."""
    results, out = analysis.results, {}
    cap = int(results.max_tokens.max()) if len(results) else 0
    budget = replace(budget, options=replace(budget.options, context=budget.prompt_tokens + cap))
    options = budget.options
    for info in analysis.variants:
        rows = results.variant == info.name
        counted = rows & results.tokens_known  # lengths need counts (an import may lack them)
        if info.memory_bytes is None or not counted.any():
            continue
        completion = results.completion_tokens[counted].astype(float)
        lengths = budget.prompt_tokens + completion
        weights = _decode_weights(info.model_path, info.memory_bytes, config, options.tp)
        p90 = float(np.percentile(lengths, 90))  # concurrency counts sequences of the p90 length
        served = serve_on_gpu(budget, config, info.memory_bytes, weights, float(completion.mean()), p90)
        held, concurrent, speed = served.capacity, served.concurrent, served.decode_tokens_per_s
        answers = speed * 3600 / max(1.0, float(completion.mean()))
        correct = answers * float(results.correct[rows].mean())
        cost = None
        if budget.price_per_hour is not None and correct > 0:
            cost = budget.price_per_hour * options.tp / correct * 1000
        out[info.name] = VariantCapacity(
            variant=info.name,
            tokens_p50=float(np.percentile(lengths, 50)),
            tokens_p90=float(np.percentile(lengths, 90)),
            tokens_p99=float(np.percentile(lengths, 99)),
            context=options.context,
            fits=held.fits,
            kv_pool_bytes=held.kv_pool_bytes,
            concurrent=concurrent if held.fits else 0.0,
            decode_tokens_per_s=speed,
            answers_per_hour=answers,
            correct_per_hour=correct,
            cost_per_1000_correct=cost,
        )
    return out


def _decode_weights(model_path: str, memory_bytes: int, config: Mapping[str, Any], tp: int) -> DecodeBytes:
    """Decode-step weight bytes: per group from the checkpoint's headers when it is a local
    safetensors checkpoint (active experts only for MoE), else all `memory_bytes` as dense."""
    from quantscope.checkpoint.load import load_anatomy

    path = Path(model_path)
    if path.is_dir() and any(path.glob("*.safetensors")):
        try:
            anatomy = load_anatomy(path)
        except QuantscopeError:
            pass
        else:
            by_group = {g: sum(t.nbytes for t in ts) for g, ts in anatomy.by_group().items()}
            return decode_bytes(by_group, config, tp)
    return DecodeBytes(dense_bytes=memory_bytes // tp)


def model_config(analysis: Analysis, given: str | None = None) -> dict[str, Any]:
    """The model config capacity is computed from: `given` (a config.json or a directory holding
    one), else the first variant (baseline first) whose model directory holds a config.json.
    Raises QuantscopeError saying to pass --model-config when none is found."""
    if given is not None:
        return read_config(given)
    ordered = sorted(analysis.variants, key=lambda v: not v.is_baseline)
    for info in ordered:
        path = Path(info.model_path) / "config.json"
        if path.is_file():
            return _read(path)
    raise QuantscopeError(
        "a GPU budget needs the model's config.json and no variant's model is a local checkpoint: "
        "pass --model-config path/to/config.json"
    )


def read_config(given: str) -> dict[str, Any]:
    """The config `--model-config` names: a config.json, or a directory holding one."""
    path = Path(given)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise QuantscopeError(f"--model-config {given}: no config.json there")
    return _read(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise QuantscopeError(f"{path}: cannot read it as JSON ({error})") from error


# ---- the text both renderers show ------------------------------------------------------------

CAPACITY_COLUMNS = ("tokens p50/p90/p99", "at once", "decode ≤ tok/s", "correct/GPU-h", "per 1k correct")
"""The capacity columns of a recommendation on a GPU budget, as the terminal and the HTML report show them."""


def capacity_cells(held: VariantCapacity | None) -> tuple[str, ...]:
    """`CAPACITY_COLUMNS` for one variant ("?" when its memory is unknown)."""
    if held is None:
        return ("?",) * len(CAPACITY_COLUMNS)
    lengths = f"{held.tokens_p50:,.0f}/{held.tokens_p90:,.0f}/{held.tokens_p99:,.0f}"
    if not held.fits:
        return (lengths, "0", "–", "–", "–")
    cost = "–" if held.cost_per_1000_correct is None else f"{held.cost_per_1000_correct:,.3g}"
    return (
        lengths,
        f"{held.concurrent:,.0f}",
        f"{held.decode_tokens_per_s:,.0f}",
        f"{held.correct_per_hour:,.0f}",
        cost,
    )


CAPACITY_NOTE = (
    "On the GPU: tokens are an assumed prompt plus each measured completion; 'at once' is how many "
    "p90-length sequences the KV pool holds (vLLM's paging; the engine reserve is estimated); decode "
    "tok/s is a memory-bandwidth upper bound at that batch (≤ 256); correct answers per GPU-hour and "
    "the cost per 1,000 follow from it, so they are upper bounds too."
)
