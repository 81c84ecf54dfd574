"""The sweep's jobs on Ray: a quantize job is a Ray task, an eval job's engine is a Ray actor.

Only the driver touches the results store. An eval job runs `runner.run_eval` on the driver
with a `RayEngine`: the engine itself (vLLM or transformers, built by `runner.build_engine`)
lives in an `EngineActor` holding the job's GPUs, and its completions stream back to the driver
through an actor generator method (a Ray streaming generator: each chunk is yielded as the
engine finishes it, not when the whole job ends), where the runner judges and commits them as it
does in one process. So the same rows come out, keyed the same way, whether a job runs here or on
a cluster, and a killed driver leaves what a killed `quantscope eval` leaves: committed rows, a
rerun resuming from them (Ray ends the actors and tasks a dead driver owned).

Resources and retries are Ray's (`RayBlock`): a quantize task asks for one GPU (quantizing on
cuda) and is retried `max_retries` times when its worker or node dies (not when it raises: a
recipe that fails verification fails again); an engine actor asks for tensor_parallel_size
GPUs under vLLM and is restarted `max_restarts` times. An eval job with `replicas` N runs N
engine actors, deals its requests among them and merges their streams as chunks arrive (vLLM's
offline data parallelism, one engine process per rank: see `spec.EvalBlock`). Checkpoints are written
by whichever node runs the quantize task, so `out` must be a path every node reads and writes
(NFS, a shared volume); the README says what a cluster needs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from quantscope.engines.base import ChatRequest, Generation, Outcome, ProgressCallback, collect
from quantscope.errors import QuantscopeError
from quantscope.evaluate.requests import engine_stream
from quantscope.evaluate.runner import build_engine
from quantscope.evaluate.spec import RunSpec
from quantscope.sweep.spec import QuantizeJob, RayBlock

CHUNK_SECONDS = 0.5
"""The longest a finished completion waits in the actor before it is sent to the driver."""
RESTART_SECONDS = 600.0
"""How long the driver waits for Ray to restart a lost engine actor (a model load included)."""
CHUNK_ROWS = 64
"""The most completions sent to the driver in one chunk."""


def ray_module() -> Any:
    """The `ray` package, or QuantscopeError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise QuantscopeError(
            "--ray needs Ray: pip install 'quantscope[ray]' (or pip install 'ray>=2.40')"
        ) from None
    return ray


def connect(address: str, block: RayBlock) -> Any:
    """Join the Ray cluster at `address` ("auto": the one `ray start` or `RAY_ADDRESS` names on
    this machine, else a new local instance; "local": always a new local instance), a local
    instance sized by `block`; returns the `ray` module."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a sweep
    ray = ray_module()
    if ray.is_initialized():
        return ray
    local = {
        "num_cpus": block.num_cpus,
        "num_gpus": block.num_gpus,
        "object_store_memory": block.object_store_mb * 2**20 if block.object_store_mb else None,
    }
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    try:
        if address == "local":
            return _init(ray, address="local", **options, **{k: v for k, v in local.items() if v is not None})
        if address == "auto":
            # ray.init() without an address joins the cluster RAY_ADDRESS or the latest
            # `ray start` on this node names, and starts a local instance otherwise
            # (ray/_private/worker.py, init). Sizes only apply to a local instance.
            try:
                return _init(ray, address="auto", **options)
            except ConnectionError:
                return _init(ray, **options, **{k: v for k, v in local.items() if v is not None})
        return _init(ray, address=address, **options)
    except (ConnectionError, ValueError, RuntimeError) as error:
        hint = _auth_hint(address)
        raise QuantscopeError(f"--ray {address}: cannot connect to Ray ({error}){hint}") from None


def _auth_hint(address: str) -> str:
    """What to try when joining a named cluster failed and this driver sent no token: `ray start`
    turns token authentication on (Ray 2.60), and ray.init never sends a token to an explicit
    address unless RAY_AUTH_MODE=token (ray/_private/worker.py, init)."""
    if address in ("auto", "local") or os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ""
    return (
        "; if the cluster uses token authentication (the default of `ray start`), set"
        " RAY_AUTH_MODE=token here (the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN)"
    )


def _init(ray: Any, **options: Any) -> Any:
    ray.init(**options)
    return ray


# ---- quantize jobs --------------------------------------------------------------------------


def quantize_resources(block: RayBlock, device: str) -> dict[str, float]:
    """What one quantize task asks Ray for."""
    gpus = block.quantize_gpus if block.quantize_gpus is not None else (0 if device == "cpu" else 1)
    return {"num_cpus": block.quantize_cpus, "num_gpus": gpus}


def submit_quantize(ray: Any, job: QuantizeJob, options: Any, block: RayBlock) -> Any:
    """Start `job` as a Ray task; returns its ObjectRef (the export's directory, as a string)."""
    from quantscope.sweep.quantize_jobs import quantize_job

    task = ray.remote(quantize_job).options(
        **quantize_resources(block, options.device),
        max_retries=block.max_retries,
        retry_exceptions=False,  # a failed verification fails again; only lost workers are retried
        name=job.id,
    )
    return task.remote(job, options)


# ---- eval jobs ------------------------------------------------------------------------------


def eval_resources(spec: RunSpec, block: RayBlock) -> dict[str, float]:
    """What one engine actor of an eval job asks Ray for (vLLM: tensor_parallel_size GPUs;
    transformers: one unless it runs on the CPU)."""
    options = spec.engine_options
    if spec.engine == "vllm":
        gpus = int(options.get("tensor_parallel_size", 1))
    else:
        gpus = 0 if str(options.get("device", "auto")) == "cpu" else 1
    return {"num_cpus": block.eval_cpus, "num_gpus": gpus}


class EngineActor:
    """Holds one engine (built from a RunSpec) in a Ray worker; `stream` is a generator method."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.engine = build_engine(spec)

    def info(self) -> tuple[dict[str, str], str]:
        """(what the engine serves, its device's name)."""
        served = getattr(self.engine, "served", None)
        return (served() if callable(served) else {}), str(getattr(self.engine, "device_name", ""))

    def stream(self, requests: Sequence[ChatRequest]) -> Iterator[list[tuple[int, Outcome]]]:
        """The engine's completions in chunks of at most CHUNK_ROWS, or what finished within
        CHUNK_SECONDS of a chunk's first completion."""
        chunk: list[tuple[int, Outcome]] = []
        started = time.monotonic()
        for item in engine_stream(self.engine, requests, self.spec.batch_size):
            if not chunk:
                started = time.monotonic()
            chunk.append(item)
            if len(chunk) >= CHUNK_ROWS or time.monotonic() - started >= CHUNK_SECONDS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def close(self) -> None:
        self.engine.close()


@dataclass
class RayEngine:
    """An `Engine` whose model runs in `replicas` `EngineActor`s (see the module docstring)."""

    spec: RunSpec
    block: RayBlock
    replicas: int = 1
    name: str = "ray"

    def __post_init__(self) -> None:
        ray = ray_module()
        resources = eval_resources(self.spec, self.block)
        # Ray restarts a lost actor (max_restarts), but its streams are retried here, not by Ray:
        # Ray re-runs a failed streaming generator from the start and drops every item whose index
        # it already returned (ray-core/internals/streaming-generator), and this actor's chunks
        # are cut by time, so the re-run's first chunks hold other requests than the lost ones:
        # those requests would never come back. The driver resends exactly the unseen ones.
        retries = {"max_restarts": self.block.max_restarts, "max_task_retries": 0}
        self._ray = ray
        self._group = _gang(resources, self.replicas)
        self._actors = [
            ray.remote(EngineActor)
            .options(**resources, **retries, **_in_group(self._group, index))
            .remote(self.spec)
            for index in range(self.replicas)
        ]
        try:
            (self._served, self.device_name), *_ = ray.get([a.info.remote() for a in self._actors])
        except ray.exceptions.RayError as error:
            self.close()
            raise QuantscopeError(
                f"the {self.spec.engine} engine for {self.spec.model} failed: {error}"
            ) from None

    def served(self) -> dict[str, str]:
        return self._served

    def stream(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Outcome]]:
        """Each completion once, as its replica's chunk arrives. Request i goes to replica
        i mod `replicas`: every replica gets an equal share of each task's items and samples, as in
        vLLM's own data-parallel example. A replica lost mid-stream (its process or node died) is
        restarted by Ray and sent the requests of its share not yet returned, at most
        `max_task_retries` times; then the loss is raised."""
        shares = [list(range(r, len(requests), self.replicas)) for r in range(self.replicas)]
        live = {self._send(r, share, requests): (r, share) for r, share in enumerate(shares) if share}
        retries = dict.fromkeys(range(self.replicas), 0)
        seen: set[int] = set()
        while live:
            # ray.wait takes streaming generators: ready once next() has an object to return
            # (ray/_private/worker.py, wait), so chunks are merged in the order they finish
            (ready,), _ = self._ray.wait(list(live), num_returns=1)
            replica, share = live[ready]
            try:
                chunk = self._ray.get(next(ready))
            except StopIteration:
                del live[ready]
                continue
            except self._ray.exceptions.RayActorError:
                del live[ready]
                left = [i for i in share if i not in seen]
                if not left:  # lost after its last chunk: nothing to resend
                    continue
                if retries[replica] >= self.block.max_task_retries:
                    raise
                retries[replica] += 1
                self._when_alive(replica)
                live[self._send(replica, left, requests)] = (replica, left)
                continue
            for local, outcome in chunk:
                if share[local] not in seen:
                    seen.add(share[local])
                    yield share[local], outcome

    def _when_alive(self, replica: int) -> None:
        """Wait for Ray to restart replica `replica` (it rebuilds its engine); a call made while
        it restarts fails at once ("the actor is temporarily unavailable"), so ask until it
        answers. ActorDiedError (no restarts left) and a restart slower than RESTART_SECONDS raise."""
        deadline = time.monotonic() + RESTART_SECONDS
        while True:
            try:
                self._ray.get(self._actors[replica].info.remote())
                return
            except self._ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _send(self, replica: int, share: Sequence[int], requests: Sequence[ChatRequest]) -> Any:
        """Replica `replica`'s stream of the requests at `share` (indices into `requests`)."""
        return self._actors[replica].stream.remote([requests[i] for i in share])

    def generate(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[Generation]:
        return collect(self.stream(requests), len(requests), self.spec.engine, progress)

    def close(self) -> None:
        for actor in self._actors:
            with contextlib.suppress(self._ray.exceptions.RayError):  # the actor may be gone already
                self._ray.get(actor.close.remote())
            self._ray.kill(actor)
        if self._group is not None:
            self._ray.util.remove_placement_group(self._group)


def _gang(resources: dict[str, float], replicas: int) -> Any:
    """A placement group holding every replica's resources at once (None for one replica, or
    replicas that ask for nothing). Without it two jobs could each hold some of their replicas
    and wait forever for the rest."""
    bundle = {"CPU": resources["num_cpus"], "GPU": resources["num_gpus"]}
    bundle = {name: amount for name, amount in bundle.items() if amount}
    if replicas == 1 or not bundle:
        return None
    from ray.util.placement_group import placement_group

    return placement_group([bundle] * replicas, strategy="PACK")


def _in_group(group: Any, index: int) -> dict[str, Any]:
    """The actor options that place a replica in its bundle of `group` (none without a group)."""
    if group is None:
        return {}
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {
        "scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)
    }


def engine_maker(block: RayBlock, replicas: int = 1) -> Any:
    """`run_eval`'s `make_engine` for jobs on Ray, `replicas` engine actors per job."""
    return lambda spec: RayEngine(spec, block, replicas)
