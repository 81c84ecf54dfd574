"""A sweep run end to end on the bundled reasoner: here, resumed, and on Ray (the same rows, and a
killed driver resumed with nothing lost or doubled).

The Ray runs join one Ray head started for the test run (`ray start --head`, joined with `--ray
ADDRESS`: the README's way onto a running cluster) and start from the in-process run's exports, so
they quantize nothing again: their quantize tasks only write the evaluation twins."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from quantscope.sweep import load_sweep, plan_jobs, run_sweep
from quantscope.sweep.estimate import estimate_sweep

DATA = Path(__file__).resolve().parent / "data"
COMPARED = (
    "text, thinking, answer, completion_tokens, thinking_tokens, finish_reason, correct, extracted, seed"
)

# 3 variants (bf16 and two 4-bit recipes, evaluated through their B200 twins) × 2 tasks × 2 items
# × k 2, sampled (the precise thinking preset), in commit windows of 4 rows so a kill lands mid-run
SWEEP = {
    "name": "toy-matrix",
    "models": [{"name": "toy", "source": "toy"}],
    "recipes": ["bf16", "w4a16", "nvfp4"],
    "tasks": [{"name": "synthetic", "options": {"per_level": 2}}, f"math500={DATA / 'math500.jsonl'}"],
    "settings": [{"name": "thinking", "thinking": True, "preset": "qwen3.5-thinking-precise"}],
    "eval": {
        "engine": "transformers",
        "engine_options": {"device": "cpu", "dtype": "float32", "batch_size": 4},
        "k": 2,
        "limit": 2,
        "max_tokens": 160,
        "batch_size": 4,
        "twin": "B200",
    },
    "quantize": {"iters": 0, "nsamples": 4, "seqlen": 128, "dataset": "toy", "device": "cpu"},
    "ray": {"num_cpus": 2, "object_store_mb": 200},
    "gpu": "B200",
}
EXPECTED = 3 * 2 * 2 * 2  # variants × tasks × items × k


def sweep_file(directory: Path, sweep: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep or SWEEP))
    return path


def stored_rows(out: Path) -> dict[tuple, tuple]:
    """Every stored row of the sweep's one store: key -> the generated and judged columns."""
    with sqlite3.connect(out / "toy" / "thinking" / "quantscope.db") as db:
        rows = db.execute(f"SELECT variant, task, item_id, sample, {COMPARED} FROM results_full").fetchall()
    keyed = {row[:4]: row[4:] for row in rows}
    assert len(keyed) == len(rows)
    return keyed


def row_count(out: Path) -> int:
    database = out / "toy" / "thinking" / "quantscope.db"
    if not database.is_file():
        return 0
    try:
        with sqlite3.connect(database, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is being created
        return 0


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep run in this process, without Ray: the reference."""
    directory = tmp_path_factory.mktemp("sweep-here")
    result = run_sweep(load_sweep(sweep_file(directory), out=directory / "out"))
    assert not result.failed, result.failed
    return directory / "out"


@pytest.mark.slow
def test_a_sweep_quantizes_evaluates_and_reports(here: Path) -> None:
    rows = stored_rows(here)
    assert len(rows) == EXPECTED
    assert {key[0] for key in rows} == {"bf16", "w4a16", "nvfp4"}
    assert (here / "checkpoints" / "toy" / "w4a16" / "quantscope.json").is_file()
    assert (here / "twins" / "toy" / "nvfp4" / "twin.json").is_file()
    assert (here / "toy" / "thinking" / "report.html").is_file()
    # the sampled preset really samples: the two samples of an item differ somewhere
    assert any(rows[(v, t, i, 0)][0] != rows[(v, t, i, 1)][0] for v, t, i, s in rows if s == 0)


@pytest.mark.slow
def test_rerunning_a_finished_sweep_does_nothing(here: Path) -> None:
    sweep = load_sweep(sweep_file(here.parent), out=here)
    before = stored_rows(here)
    result = run_sweep(sweep, reports=False)
    assert {job.state for job in result.jobs} == {"finished before"}
    assert stored_rows(here) == before
    estimate = estimate_sweep(sweep, plan_jobs(sweep))
    assert all(job.state == "finished" for job in estimate.jobs)
    assert sum(job.rows_stored or 0 for job in estimate.jobs) == EXPECTED


@pytest.mark.slow
def test_a_failed_job_costs_no_other_and_a_rerun_does_only_what_is_left(
    here: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: a failed job never costs the others (its eval is blocked, the rest go on), and
    rerunning after it does only what is left. Starts from the in-process run's w4a16 export;
    nvfp4's quantization fails once, as an out-of-memory error would."""
    import quantscope.quantize as quantize_module
    from quantscope.errors import QuantscopeError

    out = tmp_path / "out"
    shutil.copytree(here / "checkpoints" / "toy" / "w4a16", out / "checkpoints" / "toy" / "w4a16")
    real = quantize_module.quantize

    def out_of_memory_for_nvfp4(source, recipe, *args, **kwargs):
        if "nvfp4" in str(recipe):
            raise QuantscopeError("CUDA out of memory while quantizing nvfp4")
        return real(source, recipe, *args, **kwargs)

    sweep = load_sweep(sweep_file(tmp_path), out=out)
    with monkeypatch.context() as patch:
        patch.setattr(quantize_module, "quantize", out_of_memory_for_nvfp4)
        first = {job.job: job for job in run_sweep(sweep, reports=False).jobs}
    assert first["quantize toy/nvfp4"].state == "failed"
    assert "out of memory" in first["quantize toy/nvfp4"].detail
    assert first["eval toy/thinking/nvfp4"].state == "blocked"
    assert first["eval toy/thinking/w4a16"].state == "done", first["eval toy/thinking/w4a16"].detail
    assert first["eval toy/thinking/w4a16"].generated == 8
    assert first["eval toy/thinking/bf16"].state == "done"
    assert first["quantize toy/w4a16"].state == "done"  # its twin only: the export was there

    again = {job.job: job for job in run_sweep(sweep, reports=False).jobs}
    assert {name for name, job in again.items() if job.state != "finished before"} == {
        "quantize toy/nvfp4",
        "eval toy/thinking/nvfp4",
    }
    assert again["eval toy/thinking/nvfp4"].generated == 8
    assert stored_rows(out) == stored_rows(here)


needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the Ray tests need ray (pip install 'quantscope[ray]')"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class RayHead:
    """The test run's Ray cluster: its `address`, its `temp` folder, and the `env` a process joining
    it needs (its token)."""

    address: str
    temp: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """One Ray head for the whole test run, as a user starts a cluster (`ray start --head`; here
    `--block` in a session of its own, so it ends with the run).

    Token authentication on, as `ray start` turns it on by default (Ray 2.60,
    ray/_private/authentication/authentication_token_setup.py); the token is this run's own
    (RAY_AUTH_TOKEN), so nothing is read from or written to ~/.ray. A driver joining by address
    sends it only when told to (RAY_AUTH_MODE=token: ray/_private/worker.py, init, never
    auto-enables auth for an explicit address). Free ports rather than Ray's defaults (6379...),
    so another Ray on this machine cannot collide with it; a short temp folder, because Ray's
    socket paths must stay under the 107-byte limit of a Unix socket name."""
    temp = Path(tempfile.mkdtemp(prefix="qs-ray-"))
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block"]
    command += [f"--port={port}", f"--ray-client-server-port={_free_port()}"]
    command += [f"--dashboard-agent-listen-port={_free_port()}", "--include-dashboard=false"]
    command += ["--num-cpus=2", "--num-gpus=0", f"--object-store-memory={200 * 2**20}"]
    command += ["--disable-usage-stats", f"--temp-dir={temp}"]
    log_path = temp / "head.log"
    with log_path.open("ab") as log:
        head = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            assert head.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        yield RayHead(f"127.0.0.1:{port}", temp, env)
    finally:
        _end_session(head)  # the head and every process it started: nothing outlives the run
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _joined(driver: subprocess.Popen, head: RayHead) -> bool:
    """Whether `driver` ran on the head's cluster: Ray writes a driver's core-worker log into the
    session of the cluster it joined (python-core-driver-<job id>_<pid>.log)."""
    return any(head.temp.glob(f"session_*/logs/python-core-driver-*_{driver.pid}.log"))


def _seed(directory: Path, here: Path) -> None:
    """Start `directory`'s sweep from the in-process run's exports (not its twins, nor its store):
    the Ray run quantizes nothing again, and its quantize tasks still write the twins."""
    shutil.copytree(here / "checkpoints", directory / "out" / "checkpoints")


def _sweep_on_ray(directory: Path, head: RayHead, sweep: dict | None = None) -> subprocess.Popen:
    """`quantscope sweep --ray ADDRESS` joining `head`, as a driver process of its own (its own
    session, so what it leaves can be cleaned up with it)."""
    command = [sys.executable, "-m", "quantscope.cli", "sweep", str(sweep_file(directory, sweep))]
    command += ["--ray", head.address, "--out", str(directory / "out")]
    env = {**os.environ, **head.env}
    env.pop("RAY_ADDRESS", None)  # the address comes from --ray alone
    log = (directory / "driver.log").open("ab")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _finish(driver: subprocess.Popen, directory: Path, timeout: float = 240) -> None:
    try:
        code = driver.wait(timeout=timeout)
    finally:
        _end_session(driver)
    assert code == 0, (directory / "driver.log").read_text()[-3000:]


def _end_session(process: subprocess.Popen) -> None:
    """Kill whatever the process's session left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
@needs_ray
def test_on_ray_every_key_gets_the_same_text_and_judgement(
    here: Path, ray_head: RayHead, tmp_path: Path
) -> None:
    _seed(tmp_path, here)
    driver = _sweep_on_ray(tmp_path, ray_head)
    _finish(driver, tmp_path)
    assert _joined(driver, ray_head), "the driver did not run on the cluster --ray named"
    assert stored_rows(tmp_path / "out") == stored_rows(here)
    assert (tmp_path / "out" / "toy" / "thinking" / "report.html").is_file()


@pytest.mark.slow
@needs_ray
def test_joining_a_token_cluster_without_the_token_names_the_fix(ray_head: RayHead, tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_AUTH")}
    command = [sys.executable, "-m", "quantscope.cli", "sweep", str(sweep_file(tmp_path))]
    command += ["--ray", ray_head.address, "--out", str(tmp_path / "out")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    said = " ".join((result.stdout + result.stderr).split())  # rich wraps the message
    assert result.returncode != 0
    assert f"--ray {ray_head.address}: cannot connect to Ray" in said
    assert "set RAY_AUTH_MODE=token here" in said


@pytest.mark.slow
@needs_ray
def test_a_killed_driver_resumes_with_nothing_lost_or_doubled(
    here: Path, ray_head: RayHead, tmp_path: Path
) -> None:
    _seed(tmp_path, here)
    driver = _sweep_on_ray(tmp_path, ray_head)
    deadline = time.monotonic() + 240
    while row_count(tmp_path / "out") == 0 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone, mid-sweep, as `kill -9` would
    driver.wait()
    _end_session(driver)
    at_kill = row_count(tmp_path / "out")
    assert 0 < at_kill < EXPECTED, f"the kill came at {at_kill} of {EXPECTED} rows: not mid-sweep"
    rerun = _sweep_on_ray(tmp_path, ray_head)
    _finish(rerun, tmp_path)
    assert _joined(driver, ray_head) and _joined(rerun, ray_head)
    assert stored_rows(tmp_path / "out") == stored_rows(here)  # every key once, as generated here
    with sqlite3.connect(tmp_path / "out" / "toy" / "thinking" / "quantscope.db") as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0


def _engine_actor_pids() -> set[int]:
    """The processes that hold an engine actor (Ray titles an actor's worker "ray::EngineActor",
    with the method it runs appended)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().startswith(b"ray::EngineActor"):
                    pids.add(int(entry.name))
    return pids


@pytest.mark.slow
@needs_ray
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor's process in /proc (Linux)")
def test_a_lost_engine_actor_is_restarted_and_its_stream_retried(ray_head: RayHead, tmp_path: Path) -> None:
    """README: each engine actor is restarted `ray.max_restarts` times, its stream retried
    `ray.max_task_retries` times. The actor's process is killed (SIGKILL) mid-stream; the job still
    ends done, with every key once and no failure."""
    sweep = {
        **SWEEP,
        "recipes": ["bf16"],
        "eval": {**SWEEP["eval"], "k": 6, "batch_size": 1},
        "ray": {**SWEEP["ray"], "max_restarts": 1, "max_task_retries": 1},
    }
    others = _engine_actor_pids()  # none, unless an earlier test's actor is still going away
    driver = _sweep_on_ray(tmp_path, ray_head, sweep)
    out = tmp_path / "out"
    deadline = time.monotonic() + 240
    while not (row_count(out) and _engine_actor_pids() - others) and driver.poll() is None:
        assert time.monotonic() < deadline, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(0.1)
    (victim,) = _engine_actor_pids() - others
    os.kill(victim, signal.SIGKILL)
    at_kill = row_count(out)
    _finish(driver, tmp_path)
    assert 0 < at_kill < 2 * 2 * 6, f"the kill came at {at_kill} of 24 rows: not mid-stream"
    assert len(stored_rows(out)) == 2 * 2 * 6  # tasks × items × k, each once
    with sqlite3.connect(out / "toy" / "thinking" / "quantscope.db") as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0


@pytest.mark.slow
@needs_ray
def test_replicas_share_a_job_and_return_what_one_engine_returns(ray_head: RayHead, tmp_path: Path) -> None:
    """Two engine actors for one variant (data parallelism): every key once, with the text one
    engine gives. One request per batch, so which replica ran a request cannot change its text."""
    one_by_one = {"engine_options": {"device": "cpu", "dtype": "float32", "batch_size": 1}, "batch_size": 2}
    sweep = {
        **SWEEP,
        "recipes": ["bf16"],
        "tasks": SWEEP["tasks"][:1],
        "eval": {**SWEEP["eval"], **one_by_one},
    }
    run_sweep(load_sweep(sweep_file(tmp_path / "here", sweep), out=tmp_path / "here" / "out"), reports=False)
    replicated = {**sweep, "eval": {**sweep["eval"], "replicas": 2}}
    _finish(_sweep_on_ray(tmp_path / "ray", ray_head, replicated), tmp_path / "ray")
    rows = stored_rows(tmp_path / "ray" / "out")
    assert len(rows) == 2 * 2  # items × k
    assert rows == stored_rows(tmp_path / "here" / "out")
