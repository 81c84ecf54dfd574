"""The README's claim that `--min-p`, `--presence-penalty` and `--repetition-penalty` override the
preset "on every engine", and that the default thinking preset sends presence 1.5.

- OpenAI engine: `quantscope eval` against a real HTTP server on loopback; each request body is read
  back through vLLM's own request model (`ChatCompletionRequest.to_sampling_params`), i.e. what a
  vLLM server would sample with.
- vLLM offline: the `vllm.SamplingParams` the engine hands to `LLM`.
- transformers: greedy decoding on a tiny random Qwen3.5 against a loop over the raw model whose
  logits go through vLLM's own `apply_penalties` (vllm/model_executor/layers/utils.py); min_p 1
  keeps only the top token, so a hot sampled run must then equal greedy.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.engines.base import ChatRequest, Message, SamplingParams, chat_prompt
from quantscope.engines.transformers import TransformersEngine, TransformersOptions
from tests.loopback import JSONServer

runner = CliRunner()
ITEMS = 3
OVERRIDES = ("--min-p", "0.05", "--presence-penalty", "0.5", "--repetition-penalty", "1.1")


class RecordingServer(JSONServer):
    """An OpenAI-compatible server on 127.0.0.1 that serves `tiny`, answers every chat completion
    and keeps each request body it received."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def get(self, handler: Any) -> None:
        self.send(handler, 200, {"data": [{"id": "tiny", "root": "/models/tiny", "max_model_len": 4096}]})

    def post(self, handler: Any, body: Any) -> None:
        with self.lock:
            self.received.append(body)
        message = {"role": "assistant", "content": "\\boxed{1}", "reasoning": "r"}
        usage = {
            "prompt_tokens": 9,
            "completion_tokens": 4,
            "completion_tokens_details": {"reasoning_tokens": 1},
        }
        reply = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}
        self.send(handler, 200, reply)


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    rows = [{"problem": f"Add 1 to {i}.", "answer": str(i + 1), "id": str(i)} for i in range(ITEMS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _eval_openai(problems: Path, store: Path, *flags: str) -> list[dict[str, Any]]:
    """Run `quantscope eval --engine openai` on `problems`; the request bodies the server got."""
    with RecordingServer() as server:
        args = ["eval", "tiny", "--engine", "openai", "--base-url", server.base_url]
        args += ["--task", f"aime25={problems}", "--max-tokens", "64", "--store", str(store), *flags]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(server.received) == ITEMS
    return server.received


def _as_vllm_samples(body: dict[str, Any]) -> Any:
    """The SamplingParams a vLLM server builds from `body` (its own request model and defaults)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return ChatCompletionRequest.model_validate(body).to_sampling_params(body["max_tokens"], {})


def _penalties(params: Any) -> tuple[float, float, float]:
    return params.min_p, params.presence_penalty, params.repetition_penalty


def test_cli_penalties_reach_the_openai_server_as_vllm_reads_them(problems: Path, tmp_path: Path) -> None:
    for body in _eval_openai(problems, tmp_path / "store", *OVERRIDES):
        assert (body["min_p"], body["presence_penalty"], body["repetition_penalty"]) == (0.05, 0.5, 1.1)
        assert _penalties(_as_vllm_samples(body)) == (0.05, 0.5, 1.1)


def test_default_thinking_preset_sends_presence_1_5_and_zero_turns_it_off(
    problems: Path, tmp_path: Path
) -> None:
    for body in _eval_openai(problems, tmp_path / "default"):
        assert _penalties(_as_vllm_samples(body)) == (0.0, 1.5, 1.0)
        assert (body["temperature"], body["top_p"], body["top_k"]) == (1.0, 0.95, 20)
    for body in _eval_openai(problems, tmp_path / "off", "--presence-penalty", "0"):
        assert _penalties(_as_vllm_samples(body)) == (0.0, 0.0, 1.0)


def test_vllm_offline_engine_hands_the_penalties_to_vllm() -> None:
    from quantscope.engines.vllm_offline import sampling_params

    sampling = SamplingParams(temperature=1.0, min_p=0.05, presence_penalty=0.5, repetition_penalty=1.1)
    params = sampling_params(ChatRequest((Message("user", "Q"),), sampling))
    assert _penalties(params) == (0.05, 0.5, 1.1)


# ---- transformers: the engine's decoding against vLLM's own penalty function -------------------

PROMPT = "Hi"
STEPS = 24


@pytest.fixture(scope="module")
def engine(tiny_qwen35_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_qwen35_dir), TransformersOptions(dtype="float32"))


def _ask(**sampling: float | int) -> ChatRequest:
    return ChatRequest((Message("user", PROMPT),), SamplingParams(max_tokens=STEPS, **sampling))


def _greedy_with_vllm_penalties(engine: TransformersEngine, presence: float, repetition: float) -> str:
    """Greedy decoding over the engine's own model, each step's logits penalized by vLLM's
    `apply_penalties` (prompt and output tokens for repetition, output tokens for presence)."""
    from vllm.model_executor.layers.utils import apply_penalties

    tokenizer, model = engine.tokenizer, engine.model
    prompt = tokenizer(
        chat_prompt(tokenizer, _ask()), return_tensors="pt", add_special_tokens=False
    ).input_ids
    output: list[int] = []
    with torch.no_grad():
        for _ in range(STEPS):
            ids = torch.cat([prompt, torch.tensor([output], dtype=torch.long)], dim=1)
            logits = model(input_ids=ids).logits[:, -1, :].float()
            logits = apply_penalties(
                logits,
                prompt,
                torch.tensor([output], dtype=torch.long),
                torch.tensor([presence]),
                torch.tensor([0.0]),
                torch.tensor([repetition]),
            )
            token = int(logits.argmax(dim=-1))
            if token in engine.eos_ids:
                break
            output.append(token)
    return tokenizer.decode(output, skip_special_tokens=False)


@pytest.mark.parametrize(("presence", "repetition"), [(2.0, 1.0), (0.0, 3.0), (1.5, 1.3)])
def test_transformers_penalties_decode_as_vllm_penalizes(
    engine: TransformersEngine, presence: float, repetition: float
) -> None:
    [plain, penalized] = engine.generate(
        [_ask(), _ask(presence_penalty=presence, repetition_penalty=repetition)]
    )
    assert penalized.text == _greedy_with_vllm_penalties(engine, presence, repetition)
    assert penalized.text != plain.text  # the penalty changed the decoding, so it was applied


def test_transformers_min_p_one_keeps_only_the_top_token(engine: TransformersEngine) -> None:
    greedy, hot, hot_min_p = engine.generate(
        [_ask(), _ask(temperature=2.0, seed=7), _ask(temperature=2.0, seed=7, min_p=1.0)]
    )
    assert hot.text != greedy.text  # at temperature 2 the tiny random model wanders...
    assert hot_min_p.text == greedy.text  # ...unless min_p leaves only the most likely token


def test_min_p_masks_as_transformers_min_p_warper() -> None:
    from transformers import MinPLogitsWarper

    from quantscope.engines.transformers import _min_p

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    for min_p in (0.05, 0.3, 0.9):
        expected = MinPLogitsWarper(min_p)(None, logits.clone()).isfinite()
        assert torch.equal(_min_p(logits, min_p).isfinite(), expected), min_p
