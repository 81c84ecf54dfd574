"""One quantize job of a sweep: its options, the work itself and whether it is finished. Runs here
(`run`) or as a Ray task (`ray_jobs`), so both import it and neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantscope.sweep.spec import QuantizeJob, Sweep


def quantize_options(sweep: Sweep) -> Any:
    """The sweep's `quantize` block as `QuantizeOptions` (the AutoRound defaults where unset)."""
    from quantscope.quantize import QuantizeOptions

    block = sweep.quantize.model_dump(exclude_none=True)
    return QuantizeOptions(**block)


def quantize_job(job: QuantizeJob, options: Any) -> str:
    """Quantize (unless its export is already finished) and write the twin if asked; returns the
    export's directory. Runs here or as a Ray task (`ray_jobs.submit_quantize`)."""
    from quantscope.quantize import quantize
    from quantscope.quantize.manifest import MANIFEST_NAME

    if not (job.out / MANIFEST_NAME).is_file():
        quantize(job.source, job.recipe, job.out, options)
    if job.twin is not None and job.twin_gpu is not None:
        from quantscope.quantize.twin import write_twin

        write_twin(Path(job.source), job.out, job.twin, job.twin_gpu)
    return str(job.out)


def quantize_finished(job: QuantizeJob) -> bool:
    """Whether `job` has nothing left to do: its export has a manifest, and its twin (if any) was
    written for that export and GPU."""
    from quantscope.quantize.manifest import MANIFEST_NAME

    if not (job.out / MANIFEST_NAME).is_file():
        return False
    if job.twin is None:
        return True
    from quantscope.gpus import get_gpu
    from quantscope.numerics.twin_marker import TWIN_VERSION, read_twin

    marker = read_twin(job.twin)
    return (
        marker is not None
        and marker.get("export") == str(job.out)
        and marker.get("gpu") == get_gpu(str(job.twin_gpu)).name
        and marker.get("version") == TWIN_VERSION
    )
