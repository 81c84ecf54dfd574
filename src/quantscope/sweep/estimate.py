"""`sweep --dry-run`: every job, what is stored already, and the GPU-hours an eval job needs.

An eval job's GPU-hours are (samples left) × (tokens per sample) ÷ (decode tokens/s) × (GPUs
per job), where the decode rate is `serving.roofline` for the variant's weights on the sweep's
`gpu`, at as many sequences as its KV cache holds at that length (at most vLLM's 256). The
roofline is an upper bound on speed, so the hours are a lower bound: real decoding adds compute,
prefill and scheduling time. Tokens per sample are measured when the job's store already holds
rows for the task (mean completion tokens over every variant there), else assumed: half the cap
with thinking on, a sixteenth of it with thinking off; the output says which.

Weights per group come from the variant's checkpoint headers when they can be read (a local
export, a reachable hub id), else from the recipe planned on the model (its headers, or its
`config` when offline). Quantize jobs are listed without an estimate: AutoRound's time depends on
iters × samples × the model, which no formula here captures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from quantscope.errors import QuantscopeError
from quantscope.evaluate.spec import TaskSpec
from quantscope.plan.serving import DEFAULT_PROMPT_TOKENS
from quantscope.sweep.quantize_jobs import quantize_finished
from quantscope.sweep.spec import SOURCE_RECIPE, EvalJob, Jobs, ModelEntry, Sweep, source_of

THINKING_SHARE = 0.5
"""Assumed completion tokens per sample with thinking on, as a share of the cap."""
ANSWER_SHARE = 1 / 16
"""Assumed completion tokens per sample with thinking off, as a share of the cap."""
PROMPT_TOKENS = DEFAULT_PROMPT_TOKENS
"""Assumed prompt tokens per request (prompts are not stored): the one figure `recommend --gpu`
assumes too."""


@dataclass(frozen=True)
class JobEstimate:
    """One job in a dry run: `state` ("finished", "to run", "partial"), rows stored and expected
    (eval jobs; None when the item count is unknown), the GPUs it asks for, its GPU-hours (None
    when not estimated; `note` says why, or what the figure rests on)."""

    job: str
    kind: Literal["quantize", "eval"]
    state: str
    gpus: float
    rows_stored: int | None = None
    rows_expected: int | None = None
    tokens_per_sample: float | None = None
    decode_tokens_per_s: float | None = None
    gpu_hours: float | None = None
    note: str = ""


@dataclass(frozen=True)
class SweepEstimate:
    """A dry run of a sweep on `gpu`: every job, in order."""

    gpu: str
    jobs: tuple[JobEstimate, ...]

    @property
    def gpu_hours(self) -> float:
        """GPU-hours of the eval jobs that were estimated (a lower bound; see the module docstring)."""
        return sum(j.gpu_hours or 0.0 for j in self.jobs)

    @property
    def unestimated(self) -> int:
        """Jobs left to run without an estimate."""
        return sum(1 for j in self.jobs if j.gpu_hours is None and j.state != "finished")


def estimate_sweep(sweep: Sweep, jobs: Jobs) -> SweepEstimate:
    """The dry run of `jobs` (see the module docstring); reads headers and stores, writes nothing."""
    from quantscope.gpus import get_gpu
    from quantscope.sweep.ray_jobs import eval_resources, quantize_resources

    gpu = get_gpu(sweep.gpu)
    rows: list[JobEstimate] = []
    for job in jobs.quantize:
        gpus = quantize_resources(sweep.ray, sweep.quantize.device)["num_gpus"]
        state = "finished" if quantize_finished(job) else "to run"
        note = "" if state == "finished" else "AutoRound time not estimated"
        rows.append(JobEstimate(job.id, "quantize", state, gpus, note=note))
    weights = _Weights(sweep)
    for job in jobs.evals:
        gpus = eval_resources(job.spec, sweep.ray)["num_gpus"] * sweep.eval.replicas
        rows.append(_eval_estimate(sweep, job, gpu, max(gpus, 1), weights))
    return SweepEstimate(gpu.name, tuple(rows))


def _eval_estimate(sweep: Sweep, job: EvalJob, gpu: Any, gpus: float, weights: _Weights) -> JobEstimate:
    stored, expected, per_task = 0, 0, []
    for task in job.spec.tasks:
        items = task_items(task, job.spec.limit)
        have = _stored(job.store, job.variant, task.name)
        stored += have
        if items is None:
            expected = None  # type: ignore[assignment]
        elif expected is not None:
            expected += items * job.spec.k
            per_task.append((task.name, max(items * job.spec.k - have, 0)))
    state = _state(stored, expected)
    base = {"job": job.id, "kind": "eval", "state": state, "gpus": gpus}
    if expected is None:
        return JobEstimate(**base, rows_stored=stored, note="item count unknown (no size for a task)")
    counts = {"rows_stored": stored, "rows_expected": expected}
    if state == "finished":
        return JobEstimate(**base, **counts)
    tokens, source = _tokens_per_sample(job, per_task)
    try:
        rate = weights.decode_rate(job, gpu, tokens)
    except QuantscopeError as error:
        return JobEstimate(**base, **counts, tokens_per_sample=tokens, note=str(error))
    if rate is None:
        note = f"does not fit one {PROMPT_TOKENS + job.spec.max_tokens}-token sequence on a {gpu.name}"
        return JobEstimate(**base, **counts, tokens_per_sample=tokens, note=note)
    samples = sum(left for _, left in per_task)
    hours = samples * tokens / rate / 3600 * gpus
    return JobEstimate(
        **base, **counts, tokens_per_sample=tokens, decode_tokens_per_s=rate, gpu_hours=hours, note=source
    )


def _state(stored: int, expected: int | None) -> str:
    if expected is not None and stored >= expected:
        return "finished"
    return "partial" if stored else "to run"


def task_items(task: TaskSpec, limit: int | None) -> int | None:
    """Items a task runs (at most `limit`): a local file or the synthetic task counted by loading
    it, a hub benchmark from its published size; None when unknown."""
    from quantscope.evaluate.runner import load_task
    from quantscope.tasks.registry import task_class

    hub = task_class(task.name).hub
    if task.path is None and hub is not None:
        return min(hub.items, limit) if hub.items is not None and limit else hub.items
    return len(load_task(task).load(limit=limit))


def _stored(store: Path, variant: str, task: str) -> int:
    from quantscope.store.database import Store

    if not (store / "quantscope.db").is_file():
        return 0
    with Store(store) as opened:
        return opened.count(variant, task)


def _tokens_per_sample(job: EvalJob, per_task: list[tuple[str, int]]) -> tuple[float, str]:
    """Mean completion tokens per sample still to generate: measured per task from the store where
    it has rows, else assumed from the cap."""
    from quantscope.store.database import Store

    share = THINKING_SHARE if job.spec.thinking else ANSWER_SHARE
    assumed = share * job.spec.max_tokens
    total = sum(left for _, left in per_task)
    if total == 0:
        return assumed, ""
    measured: dict[str, float] = {}
    if (job.store / "quantscope.db").is_file():
        with Store(job.store) as store:
            for task, _ in per_task:
                column = store.columns(["completion_tokens"], task=task)["completion_tokens"]
                column = [n for n in column if n is not None]  # imported rows may have no counts
                if column:
                    measured[task] = float(sum(column)) / len(column)
    mean = sum(measured.get(task, assumed) * left for task, left in per_task) / total
    if len(measured) == len(per_task):
        return mean, "tokens per sample measured in the store"
    if measured:
        return mean, f"tokens per sample measured for {', '.join(measured)}, else assumed {assumed:.0f}"
    return mean, f"tokens per sample assumed: {share:g} of the cap"


class _Weights:
    """Weight bytes per group and the model config per (model, variant), read once."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self._models = {m.name: m for m in sweep.models}
        self._cache: dict[tuple[str, str], tuple[dict[str, int], dict[str, Any]] | QuantscopeError] = {}

    def decode_rate(self, job: EvalJob, gpu: Any, completion_tokens: float) -> float | None:
        """Decode tokens/s (roofline) of `job`'s variant on `gpu`, its sequences a prompt plus
        `completion_tokens` long; None when one sequence of the cap does not fit."""
        from quantscope.plan.serving import GpuBudget, ServingOptions, decode_bytes, serve_on_gpu

        by_group, config = self._read(job)
        tp = int(job.spec.engine_options.get("tensor_parallel_size", 1))
        budget = GpuBudget.on(gpu, options=ServingOptions(context=PROMPT_TOKENS + job.spec.max_tokens, tp=tp))
        weights = decode_bytes(by_group, config, tp)
        held = PROMPT_TOKENS + completion_tokens  # concurrency counts sequences of the mean length
        total = sum(by_group.values())
        served = serve_on_gpu(budget, config, total, weights, completion_tokens, held, job.model)
        if served.roofline is None:
            return None
        return served.roofline.tokens_per_s * self.sweep.eval.replicas

    def _read(self, job: EvalJob) -> tuple[dict[str, int], dict[str, Any]]:
        key = (job.model, job.variant)
        if key not in self._cache:
            try:
                self._cache[key] = self._weights(self._models[job.model], job)
            except QuantscopeError as error:  # asked once per (model, variant), not per setting
                self._cache[key] = error
        found = self._cache[key]
        if isinstance(found, QuantscopeError):
            raise found
        return found

    def _weights(self, model: ModelEntry, job: EvalJob) -> tuple[dict[str, int], dict[str, Any]]:
        from quantscope.checkpoint.load import load_anatomy
        from quantscope.plan.recipe import load_recipe, predict_footprint

        checkpoint = job.spec.memory_from or job.spec.model
        if job.needs is None or Path(checkpoint).is_dir():
            try:
                anatomy = load_anatomy(checkpoint)
            except QuantscopeError as error:
                if job.variant != SOURCE_RECIPE or model.config is None:
                    raise QuantscopeError(f"{checkpoint}: headers unreadable ({error})") from None
            else:
                return {g: sum(t.nbytes for t in ts) for g, ts in anatomy.by_group().items()}, anatomy.config
        source = self._source_anatomy(model)
        recipe = SOURCE_RECIPE if job.variant == SOURCE_RECIPE else job.spec.recipe
        footprint = predict_footprint(source, load_recipe(self._recipe_path(recipe or SOURCE_RECIPE)))
        return dict(footprint.bytes_by_group), source.config

    def _source_anatomy(self, model: ModelEntry) -> Any:
        from quantscope.checkpoint.load import load_anatomy

        try:
            return load_anatomy(self._source(model))
        except QuantscopeError as error:
            if model.config is None:
                raise QuantscopeError(
                    f"model {model.name}: cannot read {model.source} ({error}); give the model a `config:` "
                    "(its config.json) to plan from offline"
                ) from None
        return load_anatomy(str(Path(self.sweep.base_dir) / model.config))

    def _source(self, model: ModelEntry) -> str:
        return source_of(self.sweep, model)

    def _recipe_path(self, name: str) -> str:
        for recipe in self.sweep.recipes:
            if Path(recipe).stem == name and recipe.endswith((".yaml", ".yml")):
                return str(Path(self.sweep.base_dir) / recipe)
        return name


def estimate_json(estimate: SweepEstimate) -> str:
    """The dry run as JSON (`sweep --dry-run --json`)."""
    from dataclasses import asdict

    data = {"gpu": estimate.gpu, "gpu_hours": estimate.gpu_hours, "jobs": [asdict(j) for j in estimate.jobs]}
    return json.dumps(data, indent=2)
