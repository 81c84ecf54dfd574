"""The bundled toy reasoner: shipped checkpoint, tokenizer, problem generator, traces, task, training."""

from __future__ import annotations

import json
import math
import random
import re

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from quantscope.errors import QuantscopeError
from quantscope.tasks import get_task
from quantscope.tasks.base import Sample
from quantscope.toy import checkpoint_dir, model_card
from quantscope.toy.corpus import example_text
from quantscope.toy.evaluate import generate_outcomes, judge
from quantscope.toy.model import build_model
from quantscope.toy.problems import (
    LEVELS,
    Problem,
    Slip,
    benchmark_problems,
    column_pass,
    compare_line,
    random_slip,
    training_example,
    write_trace,
)
from quantscope.toy.tokenizer import build_tokenizer
from quantscope.toy.train import Batches, TrainConfig, check_positions, main, weighted_loss


@pytest.fixture(scope="module")
def toy_model():
    """The shipped checkpoint, loaded with the hub switched off."""
    return AutoModelForCausalLM.from_pretrained(checkpoint_dir(), dtype=torch.float32)


def test_checkpoint_loads_offline_and_solves_easy_problems(monkeypatch, toy_model) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert toy_model.config.model_type == "qwen3_5_moe_text"
    assert set(toy_model.config.layer_types) == {"linear_attention", "full_attention"}
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir())
    assert tokenizer.eos_token == "<|im_end|>"
    problems = [Problem((23, 45), 1), Problem((58, 67), 1), Problem((904, 96), 2)]
    outcomes = generate_outcomes(toy_model, problems, max_new_tokens=256)
    assert [o.correct for o in outcomes] == [True, True, True], [o.text for o in outcomes]
    assert all("check" in o.text and not o.truncated for o in outcomes)
    direct = generate_outcomes(toy_model, problems[:1], max_new_tokens=32, thinking=False)[0]
    assert direct.thinking_tokens == 0 and "\\boxed{" in direct.text and "check" not in direct.text


def test_checkpoint_ships_card_and_generation_config(toy_model) -> None:
    """The card states what the shipped model is, and the generation config what the card says
    the demo samples with; both checked against the loaded model and tokenizer."""
    card = model_card().read_text()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir())
    params = sum(p.numel() for p in toy_model.parameters())
    assert f"| parameters | {params:,} ({2 * params / 1e6:.1f} MB in bf16) |" in card
    kinds = {"linear_attention": "linear attention", "full_attention": "full attention"}
    layers = ", ".join(kinds[t] for t in toy_model.config.layer_types)
    assert f"| layers | {len(toy_model.config.layer_types)}: {layers} |" in card
    assert f"| vocabulary | {len(tokenizer.get_vocab())}:" in card
    assert toy_model.config.vocab_size == len(tokenizer.get_vocab())
    generation = GenerationConfig.from_pretrained(checkpoint_dir())
    assert generation.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert generation.pad_token_id == tokenizer.pad_token_id
    sampling = (generation.temperature, generation.top_p, generation.top_k)
    assert f"(temperature {sampling[0]}, top-p {sampling[1]}, top-k {sampling[2]})" in card


def test_shipped_tokenizer_matches_the_package_tokenizer() -> None:
    shipped = AutoTokenizer.from_pretrained(checkpoint_dir())
    fresh = build_tokenizer()
    assert shipped.get_vocab() == fresh.get_vocab()
    text = write_trace(Problem((4821, 937)), slips=1, rng=random.Random(1))
    assert shipped(text).input_ids == fresh(text).input_ids


def test_tokenizer_round_trips_text_and_keeps_think_tags() -> None:
    tokenizer = build_tokenizer()
    text = "<think>\n" + write_trace(Problem((123, 9876))) + "\n</think>\n\n\\boxed{9999}"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    assert ids[0] == tokenizer.convert_tokens_to_ids("<think>")
    assert len(tokenizer("9+8=17", add_special_tokens=False).input_ids) == 6  # one token per character


def test_chat_template_thinking_on_and_off() -> None:
    tokenizer = build_tokenizer()
    messages = [{"role": "user", "content": "What is 1 + 2?"}]
    on = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    off = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert on.endswith("<|im_start|>assistant\n<think>\n")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_training_text_is_what_the_chat_template_renders() -> None:
    tokenizer = build_tokenizer()
    problem = Problem((4821, 937))
    trace = write_trace(problem)
    prompt, completion = example_text(problem, trace)
    rendered = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": problem.prompt},
            {"role": "assistant", "content": "\\boxed{5758}", "reasoning_content": trace},
        ],
        tokenize=False,
    )
    assert rendered == prompt + completion + "\n"
    off_prompt, off_completion = example_text(problem, None)
    assert off_prompt == tokenizer.apply_chat_template(
        [{"role": "user", "content": problem.prompt}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert off_completion == "\\boxed{5758}<|im_end|>"


def test_benchmark_generator_is_deterministic_and_levels_have_their_digits() -> None:
    first = benchmark_problems(per_level=20, seed=7)
    assert first == benchmark_problems(per_level=20, seed=7)
    assert first != benchmark_problems(per_level=20, seed=8)
    # a level's problems do not depend on which other levels are asked for
    assert benchmark_problems(per_level=20, seed=7, levels=(3,)) == [p for p in first if p.level == 3]
    for level in LEVELS:
        rows = [p for p in first if p.level == level.number]
        assert len(rows) == 20
        assert all(len(str(n)) == level.digits for p in rows for n in p.operands)
        if level.carries:  # every column of the carry-chain level sums to 10 or more
            assert all(int(line.split("=")[1]) >= 10 for p in rows for line in column_pass(p.operands)[0])


def test_trace_without_slip_adds_correctly_and_checks() -> None:
    trace = write_trace(Problem((4821, 937)))
    assert trace.splitlines()[:6] == ["4821+937", "1+7=8", "2+3=5", "8+9=17", "4+0+1=5", "sum 5758"]
    assert "check 937+4821" in trace
    assert trace.endswith("sum 5758\ncompare 88 55 77 55 ok")
    assert "wait" not in trace


@pytest.mark.parametrize("seed", range(20))
def test_slipped_traces_catch_the_slip_and_end_on_the_right_sum(seed: int) -> None:
    rng = random.Random(seed)
    problem = Problem((rng.randint(10, 99999), rng.randint(10, 99999)))
    trace = write_trace(problem, slips=2, rng=rng)
    assert trace.count("wait") == 2
    assert trace.endswith(compare_line(problem.answer, problem.answer)) and trace.endswith(" ok")
    sums = [int(s) for s in re.findall(r"^sum (\d+)$", trace, flags=re.M)]
    assert sums[0] != problem.answer and sums[1] == problem.answer and sums[-1] == problem.answer


def test_compare_line_pairs_digits_ones_first_and_stops_at_the_first_mismatch() -> None:
    assert compare_line(5758, 5758) == "compare 88 55 77 55 ok"
    assert compare_line(5058, 5758) == "compare 88 55 07 wait"
    assert compare_line(15758, 5758) == "compare 88 55 77 55 10 wait"  # zero-padded
    assert compare_line(0, 0) == "compare 00 ok"


def test_slips_change_the_sum() -> None:
    operands = (4821, 937)
    assert column_pass(operands)[1] == 5758
    assert column_pass(operands, Slip(1, "sum", -1))[1] == 5748
    lines, total = column_pass(operands, Slip(3, "carry"))
    assert lines[3] == "4+0=4" and total == 4758


def test_read_and_write_slips_keep_column_lines_consistent_so_only_the_check_sees_them() -> None:
    operands = (4821, 937)
    right_lines, _ = column_pass(operands)
    lines, total = column_pass(operands, Slip(2, "read", 3, operand=0))  # the 8 of 4821 read as 1
    assert lines[2] == "1+9=10" and total == 5058
    lines, total = column_pass(operands, Slip(0, "write", -2))  # ones digit written as 6
    assert lines == right_lines and total == 5756
    rng = random.Random(0)
    for _ in range(500):
        operands = (rng.randint(0, 99999), rng.randint(0, 99999))
        slip = random_slip(rng, operands)
        assert column_pass(operands, slip)[1] != sum(operands), (operands, slip)


def test_training_never_draws_benchmark_problems() -> None:
    config = TrainConfig(batch_size=4, seed=3)
    batches = Batches(config, build_tokenizer())
    bench = {p.operands for p in benchmark_problems(per_level=50, seed=1234)}
    assert bench <= batches.held_out
    rng = random.Random(0)
    kinds = [training_example(rng)[1] for _ in range(400)]
    assert any(k is None for k in kinds)  # thinking-off examples
    assert any(k is not None and "wait" in k for k in kinds)  # retry examples


def test_answer_checker_accepts_right_and_rejects_wrong() -> None:
    task = get_task("synthetic", per_level=3, levels=[2])
    samples = task.load()
    assert [s.id for s in samples] == ["L2-000", "L2-001", "L2-002"]
    sample = samples[0]
    right = int(sample.target)
    assert task.judge(sample, f"so \\boxed{{{right}}}").correct
    assert task.judge(sample, f"\\boxed{{0{right}}}").correct
    assert not task.judge(sample, f"\\boxed{{{right + 1}}}").correct
    assert not task.judge(sample, f"\\boxed{{{right}}} no, \\boxed{{{right - 10}}}").correct
    assert not task.judge(sample, str(right)).correct  # no box, no answer
    assert task.judge(sample, "\\boxed{abc}").extracted == "abc"
    assert judge(Problem((2, 3)), "\\boxed{5}") and not judge(Problem((2, 3)), "\\boxed{6}")


def test_synthetic_task_options_are_checked() -> None:
    with pytest.raises(QuantscopeError, match="path"):
        get_task("synthetic", path="x.jsonl")
    with pytest.raises(QuantscopeError, match="level 9"):
        get_task("synthetic", levels=[9])
    task = get_task("synthetic", per_level=2, seed=5)
    assert task.load() == get_task("synthetic", per_level=2, seed=5).load()
    assert len(task.load(limit=3)) == 3
    assert isinstance(task.load()[0], Sample)


def test_check_tokens_are_weighted_and_unit_weights_give_the_plain_loss() -> None:
    tokenizer = build_tokenizer()
    batches = Batches(
        TrainConfig(batch_size=4, slip_rate=1.0, no_think_rate=0.0, check_weight=7.0), tokenizer
    )
    ids, labels, weights = batches.next()
    assert (weights[labels == -100] == 0).all()
    for row in range(ids.shape[0]):
        heavy = (weights[row] == 7.0).nonzero().flatten().tolist()
        words = [tokenizer.decode(ids[row, i : i + 2]) for i in heavy]
        assert words[-1] == "ok" and "wa" in words  # slip_rate 1: at least one retry
    text = "sum 12\ncompare 23 wait\nredo 5+7\nsum 13\ncompare 33 11 ok"
    assert [text[i : i + 2] for i in check_positions(text)] == ["wa", "11", "ok"]
    model = build_model(seed=0)
    logits = model(input_ids=ids).logits
    plain = model(input_ids=ids, labels=labels).loss
    unit = torch.where(labels == -100, 0.0, 1.0)
    assert torch.allclose(weighted_loss(logits, labels, unit), plain, atol=1e-5)
    assert weighted_loss(logits, labels, weights) > plain


def test_training_script_writes_a_loadable_checkpoint(tmp_path) -> None:
    out = tmp_path / "ckpt"
    args = ["--out", str(out), "--steps", "2", "--batch-size", "2", "--eval-every", "0", "--log-every", "1"]
    assert main([*args, "--threads", "1"]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert not (tmp_path / "ckpt.tmp").exists()
    # The shipped checkpoint's layout: the same files, model config and generation config.
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in checkpoint_dir().iterdir())
    shipped = AutoConfig.from_pretrained(checkpoint_dir()).to_dict()
    assert {**AutoConfig.from_pretrained(out).to_dict(), "_name_or_path": ""} == {
        **shipped,
        "_name_or_path": "",
    }
    assert GenerationConfig.from_pretrained(out) == GenerationConfig.from_pretrained(checkpoint_dir())
    # The record says what ran, and the two steps moved the seeded initial weights.
    meta = json.loads((out / "training.json").read_text())
    assert (meta["config"]["steps"], meta["config"]["batch_size"], meta["steps_done"]) == (2, 2, 2)
    assert math.isfinite(meta["final_loss"])
    initial = build_model(seed=meta["config"]["seed"]).to(torch.bfloat16).state_dict()
    trained = model.state_dict()
    assert set(trained) == set(initial)
    assert sum(not torch.equal(trained[k], initial[k]) for k in initial) > len(initial) // 2
