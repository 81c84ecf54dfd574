"""KL-by-position sensitivity on the tiny Qwen3.5-MoE: exact reference, deterministic, restoring,
bucketed by position; calibration files and profile JSON round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quantscope.calibration import load_documents
from quantscope.errors import QuantscopeError
from quantscope.numerics.fakequant import QdqTarget, resolve_targets
from quantscope.sensitivity.meter import KLMeter, default_buckets, make_buckets
from quantscope.sensitivity.profiler import calibration_tokens
from quantscope.sensitivity.records import Damage, SensitivityProfile, UnitProfile, load_profile, save_profile


def read_documents(path: Path) -> list:
    """The documents of a calibration file, as the profiler reads them (quantscope.calibration)."""
    return list(load_documents(path, model="some/model")[1])


@pytest.fixture(scope="module")
def moe(tiny_qwen35_moe_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen35_moe_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_qwen35_moe_dir)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(6, 100, (2, 64), generator=generator)


def _targets(model, names_shapes, fmt="nvfp4"):
    return [QdqTarget(where, fmt, torch.bfloat16) for where in resolve_targets(model, names_shapes)]


LINEAR_ATTN = [
    (f"model.layers.{i}.linear_attn.{p}.weight", shape)
    for i in range(3)
    for p, shape in (("in_proj_qkv", (512, 128)), ("in_proj_z", (256, 128)), ("out_proj", (128, 256)))
]
EXPERTS = [
    (f"model.layers.{i}.mlp.experts.{e}.{p}.weight", (128, 128))
    for i in range(4)
    for e in range(4)
    for p in ("gate_proj", "up_proj", "down_proj")
]


def test_no_targets_means_zero_kl(moe, tokens: torch.Tensor) -> None:
    model, _ = moe
    meter = KLMeter(model, tokens, default_buckets(64), batch_size=2)
    damage = meter.measure([], "none")
    assert damage.kl == 0.0
    assert damage.top1_agreement == 1.0
    assert damage.kl_by_bucket == (0.0, 0.0, 0.0)


def test_kl_is_positive_deterministic_and_restores_weights(moe, tokens: torch.Tensor) -> None:
    model, _ = moe
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    meter = KLMeter(model, tokens, default_buckets(64), batch_size=1)
    first = meter.measure(_targets(model, EXPERTS), "nvfp4")
    batched = KLMeter(model, tokens, default_buckets(64), batch_size=2)
    second = batched.measure(_targets(model, EXPERTS), "nvfp4")
    assert first.kl > 0
    assert first.top1_agreement < 1.0
    assert first.kl == pytest.approx(second.kl, rel=1e-6)  # batching does not change the answer
    assert first == meter.measure(_targets(model, EXPERTS), "nvfp4")  # bit-identical on repeat
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    fp8 = meter.measure(_targets(model, EXPERTS, "fp8"), "fp8")
    assert 0 < fp8.kl < first.kl  # 8 bits damage less than 4


def test_kl_matches_a_direct_computation(moe, tokens: torch.Tensor) -> None:
    """The hidden-state reference and chunked logits give the textbook KL of full forward passes."""
    from quantscope.numerics.fakequant import fake_quantized

    model, _ = moe
    buckets = (0, 16, 64)
    targets = _targets(model, LINEAR_ATTN)
    with torch.no_grad():
        reference = torch.log_softmax(model(tokens).logits.double(), -1)
        with fake_quantized(model, targets):
            quantized = torch.log_softmax(model(tokens).logits.double(), -1)
    kl = (reference.exp() * (reference - quantized)).sum(-1)
    damage = KLMeter(model, tokens, buckets).measure(targets, "nvfp4")
    assert damage.kl == pytest.approx(kl.mean().item(), rel=1e-4)
    assert damage.kl_by_bucket[0] == pytest.approx(kl[:, :16].mean().item(), rel=1e-4)
    assert damage.kl_by_bucket[1] == pytest.approx(kl[:, 16:].mean().item(), rel=1e-4)


def test_quantizing_the_head_compares_against_the_original_head(moe, tokens: torch.Tensor) -> None:
    model, _ = moe
    head = model.lm_head.weight.detach().clone()
    targets = _targets(model, [("lm_head.weight", (256, 128))])
    damage = KLMeter(model, tokens, (0, 64)).measure(targets, "nvfp4")
    assert damage.kl > 0
    assert torch.equal(model.lm_head.weight, head)


def test_buckets_scale_with_sequence_length() -> None:
    assert default_buckets(32768) == (0, 512, 2048, 8192, 32768)
    assert default_buckets(256) == (0, 4, 16, 64, 256)
    assert make_buckets(1000, [0, 512, 2048, 8192]) == (0, 512, 1000)
    with pytest.raises(QuantscopeError, match="ascending"):
        make_buckets(1000, [512, 100])


def test_calibration_reads_text_and_chats_and_packs_windows(tmp_path: Path, moe) -> None:
    _, tokenizer = moe
    path = tmp_path / "calib.jsonl"
    lines = [{"text": "abc " * 30}, {"messages": [{"role": "user", "content": "hi there"}]}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    documents = read_documents(path)
    assert documents[0].startswith("abc") and isinstance(documents[1], list)
    text_ids = tokenizer(documents[0], add_special_tokens=False)["input_ids"]
    chat = tokenizer.apply_chat_template(documents[1], tokenize=False)
    stream = [*text_ids, tokenizer.eos_token_id, *tokenizer(chat, add_special_tokens=False)["input_ids"]]
    windows = calibration_tokens(documents, tokenizer, n_sequences=5, seq_len=40)
    assert windows.shape == ((len(stream) + 1) // 40, 40)
    assert windows.flatten().tolist() == stream[: windows.numel()]
    with pytest.raises(QuantscopeError, match="fewer than one window of seqlen=4096"):
        calibration_tokens(documents, tokenizer, n_sequences=1, seq_len=4096)


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('{"txt": 1}\n', ".jsonl", "calib.jsonl:1: no calibration text; expected an object"),
        ("{oops\n", ".jsonl", "calib.jsonl:1: not valid JSON"),
        ("hello", ".csv", "use a .txt or .jsonl"),
    ],
)
def test_bad_calibration_files_name_the_line(tmp_path: Path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"calib{suffix}"
    path.write_text(content)
    with pytest.raises(QuantscopeError, match=message):
        read_documents(path)


def test_profile_json_round_trips(tmp_path: Path) -> None:
    damage = Damage("nvfp4", 0.01, (0.005, 0.02), 0.97)
    unit = UnitProfile("linear_attn:0", "linear_attn", 0, ("a.weight",), 1024, {"nvfp4": 300}, (damage,))
    profile = SensitivityProfile(
        model="m", scheme="nvfp4", schemes=("nvfp4",), data="d.jsonl", n_sequences=2, seq_len=64,
        buckets=(0, 16, 64), units=(unit,), uniform=(damage,), unmeasured=("vision",), per_layer=True,
    )  # fmt: skip
    path = save_profile(profile, tmp_path / "p" / "profile.json")
    assert load_profile(path) == profile
    assert profile.unit("linear_attn:0").bytes_saved("nvfp4") == 724
    assert profile.bucket_labels() == ["0-16", "16-64"]
    (tmp_path / "bad.json").write_text('{"version": 1, "units": 3}')
    with pytest.raises(QuantscopeError, match=r"bad\.json: not a quantscope sensitivity profile"):
        load_profile(tmp_path / "bad.json")
