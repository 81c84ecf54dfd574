"""Run a sweep: every job that is not finished, here (one after another) or on Ray, then reports.

Resuming is the default: a quantize job whose export has its manifest (and twin) is finished; an
eval job is `runner.run_eval`, which generates only the (item, sample) pairs its store lacks and
builds no engine when there are none. So rerunning a sweep after a crash, a killed driver or a
failed job does only what is left, and adding a task, a setting or raising k extends it.

Here (the default), jobs run in order on this machine: quantize jobs first, then eval jobs. On
Ray (`ray_jobs`), quantize jobs are Ray tasks, every eval job starts as soon as its quantize job
is done, in its own driver thread with its own store connection (SQLite in WAL mode serialises
the writers), and Ray places each job's engine where its GPUs are free. A failed job never costs
the others: it is reported, the eval jobs that need its export are "blocked", the rest go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from quantscope.errors import QuantscopeError
from quantscope.evaluate.runner import ProgressUpdate
from quantscope.sweep.quantize_jobs import quantize_finished, quantize_job, quantize_options
from quantscope.sweep.spec import EvalJob, Jobs, QuantizeJob, Sweep, plan_jobs

JobState = Literal["waiting", "running", "done", "finished before", "failed", "blocked"]


@dataclass(frozen=True)
class SweepEvent:
    """A job changed state (`update`: an eval job's latest progress, while it runs)."""

    job: str
    state: JobState
    detail: str = ""
    update: ProgressUpdate | None = None


SweepProgress = Callable[[SweepEvent], None]


@dataclass(frozen=True)
class JobResult:
    """How a job ended: `state` done (ran now), "finished before" (nothing left to do), failed
    (`detail` says why) or blocked (its quantize job failed); eval jobs add the rows generated
    now, their completion tokens and the requests that failed after their retries."""

    job: str
    state: JobState
    detail: str = ""
    seconds: float = 0.0
    generated: int = 0
    tokens: int = 0
    failed_requests: int = 0


@dataclass(frozen=True)
class SweepResult:
    """A sweep run: every job's result (quantize jobs, then eval jobs), the reports written and
    the ones that could not be (store -> why), and the wall time in seconds."""

    sweep: Sweep
    jobs: tuple[JobResult, ...]
    reports: tuple[Path, ...] = ()
    report_errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> tuple[JobResult, ...]:
        """The jobs that failed or were blocked."""
        return tuple(j for j in self.jobs if j.state in ("failed", "blocked"))


def run_sweep(
    sweep: Sweep,
    *,
    ray_address: str | None = None,
    progress: SweepProgress | None = None,
    reports: bool = True,
) -> SweepResult:
    """Run every unfinished job of `sweep` here, or on the Ray cluster at `ray_address` ("auto":
    the running one, else a local instance), then write each store's report."""
    started = time.perf_counter()
    notify = progress or (lambda _event: None)
    jobs = plan_jobs(sweep)
    sweep.out_dir.mkdir(parents=True, exist_ok=True)
    if ray_address is None:
        results = _run_here(sweep, jobs, notify)
    else:
        results = _run_on_ray(sweep, jobs, ray_address, notify)
    written, errors = _write_reports(sweep, jobs) if reports else ((), {})
    return SweepResult(sweep, results, written, errors, time.perf_counter() - started)


# ---- here ---------------------------------------------------------------------------------


def _run_here(sweep: Sweep, jobs: Jobs, notify: SweepProgress) -> tuple[JobResult, ...]:
    options = quantize_options(sweep)
    results: dict[str, JobResult] = {}
    for job in jobs.quantize:
        results[job.id] = _quantize_here(job, options, notify)
    for job in jobs.evals:
        results[job.id] = _eval_unless_blocked(job, results.get(job.needs or ""), notify, None)
    return tuple(results.values())


def _quantize_here(job: QuantizeJob, options: Any, notify: SweepProgress) -> JobResult:
    if quantize_finished(job):
        return _ended(notify, JobResult(job.id, "finished before"))
    notify(SweepEvent(job.id, "running"))
    started = time.perf_counter()
    try:
        quantize_job(job, options)
    except QuantscopeError as error:
        return _ended(notify, JobResult(job.id, "failed", str(error), time.perf_counter() - started))
    return _ended(notify, JobResult(job.id, "done", str(job.out), time.perf_counter() - started))


def _eval_unless_blocked(
    job: EvalJob, needed: JobResult | None, notify: SweepProgress, make_engine: Any
) -> JobResult:
    if needed is not None and needed.state in ("failed", "blocked"):
        return _ended(notify, JobResult(job.id, "blocked", f"{needed.job} failed"))
    return _eval(job, notify, make_engine)


def _eval(job: EvalJob, notify: SweepProgress, make_engine: Any) -> JobResult:
    """One eval job through `run_eval`, into its own store connection (this thread's)."""
    from quantscope.evaluate.runner import run_eval
    from quantscope.store.database import Store

    started = time.perf_counter()
    running = threading.Event()

    def relay(update: ProgressUpdate) -> None:
        if update.done < update.total:
            running.set()
        if running.is_set():
            notify(SweepEvent(job.id, "running", update.task, update))

    try:
        with Store(job.store) as store:
            summary = run_eval(job.spec, store, progress=relay, make_engine=make_engine)
    except QuantscopeError as error:
        return _ended(notify, JobResult(job.id, "failed", str(error), time.perf_counter() - started))
    except Exception as error:  # a Ray error (a lost actor, a node gone): this job only
        if not _is_ray_error(error):
            raise
        return _ended(notify, JobResult(job.id, "failed", f"Ray: {error}", time.perf_counter() - started))
    generated = sum(t.generated for t in summary.tasks)
    failed = summary.failed
    state: JobState = "done" if generated or failed else "finished before"
    detail = f"{failed} request(s) failed after retries; rerun to retry them" if failed else ""
    return _ended(
        notify,
        JobResult(
            job.id,
            "failed" if failed else state,
            detail,
            time.perf_counter() - started,
            generated,
            sum(t.tokens for t in summary.tasks),
            failed,
        ),
    )


def _is_ray_error(error: BaseException) -> bool:
    try:
        import ray
    except ImportError:
        return False
    return isinstance(error, ray.exceptions.RayError)


def _ended(notify: SweepProgress, result: JobResult) -> JobResult:
    notify(SweepEvent(result.job, result.state, result.detail))
    return result


# ---- on Ray -------------------------------------------------------------------------------


def _run_on_ray(sweep: Sweep, jobs: Jobs, address: str, notify: SweepProgress) -> tuple[JobResult, ...]:
    from quantscope.sweep.ray_jobs import connect, engine_maker, submit_quantize

    ray = connect(address, sweep.ray)
    options = quantize_options(sweep)
    results: dict[str, JobResult] = {}
    refs: dict[str, Any] = {}
    for job in jobs.quantize:
        if quantize_finished(job):
            results[job.id] = _ended(notify, JobResult(job.id, "finished before"))
        else:
            refs[job.id] = submit_quantize(ray, job, options, sweep.ray)
            notify(SweepEvent(job.id, "running"))
    quantized = _QuantizeResults(ray, refs, results, notify)
    make_engine = engine_maker(sweep.ray, sweep.eval.replicas)
    with ThreadPoolExecutor(max_workers=max(1, len(jobs.evals)), thread_name_prefix="sweep-eval") as pool:
        futures = [
            pool.submit(lambda j: _eval_unless_blocked(j, quantized.wait(j.needs), notify, make_engine), job)
            for job in jobs.evals
        ]
        quantized.collect()
        evals = [future.result() for future in as_completed(futures)]
    order = [j.id for j in jobs.quantize] + [j.id for j in jobs.evals]
    merged = {**quantized.results, **{r.job: r for r in evals}}
    return tuple(merged[job_id] for job_id in order)


class _QuantizeResults:
    """The quantize tasks' outcomes, collected on the driver's main thread as each task ends and
    waited for by the eval threads that need them."""

    def __init__(self, ray: Any, refs: dict[str, Any], results: dict[str, JobResult], notify: SweepProgress):
        self._ray, self._refs, self.results, self._notify = ray, refs, results, notify
        self._started = time.perf_counter()
        self._ended = {job: threading.Event() for job in refs}
        self._lock = threading.Lock()

    def collect(self) -> None:
        """Record each quantize task's result as it finishes (returns when all have)."""
        by_ref = {ref: job for job, ref in self._refs.items()}
        pending = list(self._refs.values())
        while pending:
            ready, pending = self._ray.wait(pending, num_returns=1)
            for ref in ready:
                job = by_ref[ref]
                seconds = time.perf_counter() - self._started
                try:
                    result = JobResult(job, "done", self._ray.get(ref), seconds)
                except Exception as error:  # the task's own error, re-raised by ray.get
                    result = JobResult(job, "failed", _task_error(error), seconds)
                with self._lock:
                    self.results[job] = _ended(self._notify, result)
                self._ended[job].set()

    def wait(self, job: str | None) -> JobResult | None:
        """The result of quantize job `job` once it has one (None for no job)."""
        if job is None:
            return None
        if job in self._ended:
            self._ended[job].wait()
        with self._lock:
            return self.results.get(job)


def _task_error(error: BaseException) -> str:
    """A failed Ray task's message: the QuantscopeError it raised, else Ray's own description."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, QuantscopeError):
        return str(cause)
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


# ---- reports ------------------------------------------------------------------------------


def _write_reports(sweep: Sweep, jobs: Jobs) -> tuple[tuple[Path, ...], dict[str, str]]:
    """Each store's HTML report (`report.html` beside its quantscope.db); a store that cannot be
    reported yet (its baseline has no rows) is named with why."""
    from quantscope.gpus import get_gpu
    from quantscope.report import build_report

    gpu = _budget(get_gpu(sweep.gpu))
    written, errors = [], {}
    for store in jobs.stores():
        if not (store / "quantscope.db").is_file():
            continue
        title = f"{sweep.name}: {store.parent.name}, {store.name}"
        try:
            try:
                result = build_report(
                    store, store / "report.html", baseline=sweep.baseline, title=title, gpu=gpu
                )
            except QuantscopeError:  # no config.json to size the cache from (a hub model offline)
                result = build_report(store, store / "report.html", baseline=sweep.baseline, title=title)
        except QuantscopeError as error:
            errors[str(store)] = str(error)
            continue
        written.append(result.path)
    return tuple(written), errors


def _budget(gpu: Any) -> Any:
    from quantscope.plan.serving import GpuBudget

    return GpuBudget.on(gpu)
