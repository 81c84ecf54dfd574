"""Sweeps: a models × recipes × tasks × settings matrix as quantize and eval jobs, run here or on Ray."""

from quantscope.sweep.run import JobResult, SweepEvent, SweepResult, run_sweep
from quantscope.sweep.spec import EvalJob, Jobs, QuantizeJob, Sweep, load_sweep, plan_jobs

__all__ = [
    "EvalJob",
    "JobResult",
    "Jobs",
    "QuantizeJob",
    "Sweep",
    "SweepEvent",
    "SweepResult",
    "load_sweep",
    "plan_jobs",
    "run_sweep",
]
