"""Streaming evaluation that survives failures: `quantscope eval` against a real HTTP server on
loopback that rejects one request in twenty every time, drops a connection and garbles an answer
once each, and aborts one generation; a server that serves another model; a closed port; and a
rerun under another dtype."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.errors import QuantscopeError
from quantscope.store.database import Store
from tests.loopback import JSONServer

runner = CliRunner()
ITEMS = 20
REJECTED, DROPPED, GARBLED, ABORTED = "7", "3", "5", "11"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render at full width: CliRunner is not a terminal, so rich would wrap at 80 columns."""
    from quantscope.cli.app import console

    monkeypatch.setattr(console, "width", 250)


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    """Twenty AIME-format problems whose prompts carry their id."""
    path = tmp_path / "problems.jsonl"
    lines = [
        json.dumps({"problem": f"Problem #{i}#: add 1 to {i}.", "answer": str(i + 1), "id": str(i)})
        for i in range(ITEMS)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class FlakyServer(JSONServer):
    """A real OpenAI-compatible server on 127.0.0.1: `GET /v1/models` reports `model` with `root`;
    chat completions answer each problem right, except: problem REJECTED gets HTTP 400 every time
    (until `fixed`), DROPPED's first request has its connection closed unanswered, GARBLED's first
    gets a 200 that is not JSON, and ABORTED's first generation ends with finish reason "abort"."""

    def __init__(self, model: str = "tiny", root: str = "/models/tiny") -> None:
        super().__init__()
        self.model, self.root, self.fixed = model, root, False
        self.asked: Counter[str] = Counter()
        self.lock = threading.Lock()

    def get(self, handler: Any) -> None:
        self.send(handler, 200, {"data": [{"id": self.model, "root": self.root, "max_model_len": 4096}]})

    def post(self, handler: Any, body: Any) -> None:
        item = body["messages"][0]["content"].split("#")[1]
        with self.lock:
            self.asked[item] += 1
            first = self.asked[item] == 1
        if item == REJECTED and not self.fixed:
            self.send(handler, 400, {"error": {"message": "prompt is longer than max_model_len"}})
        elif item == DROPPED and first:
            handler.close_connection = True  # hang up without an answer
        elif item == GARBLED and first:
            self.send(handler, 200, b"{not json")
        else:
            finish = "abort" if item == ABORTED and first else "stop"
            self.send(handler, 200, _completion(str(int(item) + 1), finish))


def _completion(answer: str, finish: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": f"\\boxed{{{answer}}}", "reasoning": "adding"}
    usage = {"prompt_tokens": 9, "completion_tokens": 6, "completion_tokens_details": {"reasoning_tokens": 2}}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}


def eval_openai(url: str, problems: Path, store: Path, *extra: str) -> Any:
    args = ["eval", "tiny", "--engine", "openai", "--base-url", url, "--task", f"aime25={problems}"]
    options = ["--engine-option", "backoff_s=0.01", "--engine-option", "max_retries=2"]
    return runner.invoke(app, [*args, *options, "--max-tokens", "64", "--store", str(store), *extra])


def stored(store: Path) -> tuple[list[tuple[str, int]], dict[str, str]]:
    with Store(store) as opened:
        keys = [(r["item_id"], r["sample"]) for r in opened.rows("tiny")]
        failures = {f.item_id: f.error for f in opened.failures("tiny")}
    return keys, failures


def test_failed_requests_are_recorded_and_retried_while_the_others_are_stored(
    problems: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    with FlakyServer() as server:
        first = eval_openai(server.base_url, problems, store)
        keys, failures = stored(store)
        assert first.exit_code == 1, first.output
        assert len(keys) == ITEMS - 2 and len(set(keys)) == len(keys)
        assert set(failures) == {REJECTED, ABORTED}
        assert "HTTP 400" in failures[REJECTED] and "prompt is longer" in failures[REJECTED]
        assert "abort" in failures[ABORTED]
        # the dropped connection and the garbled answer were retried within the run
        assert (server.asked[DROPPED], server.asked[GARBLED]) == (2, 2)
        assert server.asked[REJECTED] == 1  # a 400 is not retried
        output = " ".join(first.output.split())
        assert "2 request(s) failed after retries" in output and "rerun the same command" in output

        second = eval_openai(server.base_url, problems, store)
        keys, failures = stored(store)
        assert second.exit_code == 1, second.output
        assert len(keys) == ITEMS - 1 and set(failures) == {REJECTED}  # the abort retried and stored
        assert "1 generated, 18 already stored" in " ".join(second.output.split())

        server.fixed = True
        third = eval_openai(server.base_url, problems, store)
        keys, failures = stored(store)
    assert third.exit_code == 0, third.output
    assert sorted(keys) == sorted((str(i), 0) for i in range(ITEMS)) and failures == {}
    with Store(store) as opened:
        assert all(r["correct"] for r in opened.rows("tiny"))


def test_a_server_that_serves_another_model_refuses_to_resume(problems: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with FlakyServer() as server:
        server.fixed = True
        assert eval_openai(server.base_url, problems, store, "--limit", "2").exit_code == 0
    with FlakyServer(root="/models/other-weights") as other:
        refused = eval_openai(other.base_url, problems, store, "--limit", "4")
    assert refused.exit_code != 0
    output = " ".join(refused.output.split())
    assert "served root '/models/tiny' -> '/models/other-weights'" in output
    with FlakyServer(model="someone-else") as wrong:
        named = eval_openai(wrong.base_url, problems, tmp_path / "fresh")
    assert named.exit_code != 0
    assert "serves someone-else, not 'tiny'" in " ".join(named.output.split())


def test_a_closed_port_fails_fast_naming_the_url(problems: Path, tmp_path: Path) -> None:
    with FlakyServer() as server:
        url = server.base_url  # the port is closed once the server is gone
    start = time.monotonic()
    result = eval_openai(url, problems, tmp_path / "store")
    elapsed = time.monotonic() - start
    assert result.exit_code != 0
    assert elapsed < 10, elapsed
    assert url in " ".join(result.output.split())


def test_another_dtype_refuses_to_resume(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["eval", str(tiny_qwen3_dir), "--task", "synthetic", "--variant", "tiny", "--limit", "1"]
    args += ["--max-tokens", "4", "--store", str(store)]
    assert runner.invoke(app, [*args, "--engine-option", "dtype=float32"]).exit_code == 0
    refused = runner.invoke(app, [*args, "--engine-option", "dtype=bfloat16", "-k", "2"])
    assert refused.exit_code != 0
    assert "engine_options {'dtype': 'float32'} -> {'dtype': 'bfloat16'}" in " ".join(refused.output.split())


def test_vllm_options_that_change_outputs_are_settings_and_throughput_knobs_are_not() -> None:
    from quantscope.evaluate.spec import RunSpec

    options = {
        "kv_cache_dtype": "fp8",
        "speculative_config": {"method": "mtp", "num_speculative_tokens": 2},
        "max_model_len": 40960,
        "max_num_seqs": 128,
        "gpu_memory_utilization": 0.85,
        "enable_prefix_caching": True,
        "tensor_parallel_size": 2,
        "data_parallel_size": 2,
    }
    spec = RunSpec(model="m", tasks=["aime25"], engine="vllm", engine_options=options)
    kept = spec.output_settings(spec.tasks[0]).engine_options
    assert set(kept) == {"kv_cache_dtype", "speculative_config", "max_model_len"}
    faster = RunSpec(
        model="m", tasks=["aime25"], engine="vllm", engine_options={**options, "max_num_seqs": 8}
    )
    assert faster.generation_hash(faster.tasks[0]) == spec.generation_hash(spec.tasks[0])
    fp16_cache = RunSpec(
        model="m", tasks=["aime25"], engine="vllm", engine_options={**options, "kv_cache_dtype": "auto"}
    )
    assert fp16_cache.generation_hash(fp16_cache.tasks[0]) != spec.generation_hash(spec.tasks[0])


def test_every_engine_option_says_whether_it_changes_outputs() -> None:
    # The trap issue 30 names: an option missing from a hand-kept list of throughput knobs became an
    # output setting and refused resumes. Now each field declares it; an undeclared one is refused.
    import dataclasses

    from quantscope.engines.options import changes_outputs
    from quantscope.engines.registry import ENGINES

    for name, entry in ENGINES.items():
        kinds = changes_outputs(entry.options)
        assert set(kinds) == {f.name for f in dataclasses.fields(entry.options)}, name

    @dataclasses.dataclass(frozen=True)
    class NewOptions:
        speed: int = 1

    with pytest.raises(QuantscopeError, match=r"NewOptions\.speed: declare it with output"):
        changes_outputs(NewOptions)


def test_a_server_option_about_giving_up_does_not_refuse_a_resume() -> None:
    from quantscope.evaluate.spec import RunSpec

    def spec(**options: object) -> RunSpec:
        return RunSpec(model="m", tasks=["aime25"], engine="openai", engine_options=options)

    first, again = spec(abort_after=3, concurrency=8), spec(abort_after=10, concurrency=64)
    assert first.generation_hash(first.tasks[0]) == again.generation_hash(again.tasks[0])
    assert first.output_settings(first.tasks[0]).engine_options == {}


def test_a_run_stored_with_an_option_now_declared_throughput_still_resumes() -> None:
    # An earlier release stored openai's abort_after among the output settings; a resume of that
    # run must not be refused now that the option is declared throughput only.
    from dataclasses import replace

    from quantscope.evaluate.runner import _changes, _run_record
    from quantscope.evaluate.spec import RunSpec

    spec = RunSpec(model="m", tasks=["aime25"], engine="openai", engine_options={"abort_after": 3})
    task = spec.tasks[0]
    now = spec.output_settings(task)
    before = replace(now, engine_options={"abort_after": 3})
    run = replace(_run_record(spec, task, before.hash), settings_json=before.to_json())
    assert _changes(spec, task, now, run) == []
    other = replace(before, engine_options={"abort_after": 3, "bogus": 1})
    moved = replace(run, settings_json=other.to_json())
    assert _changes(spec, task, now, moved) == ["engine_options {'bogus': 1} -> {}"]
