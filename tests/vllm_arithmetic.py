"""vLLM's own KV-cache arithmetic for a real Qwen3.5 config, called directly without loading a model:
the reference `tests/test_serving.py` and `benchmarks/serving_capacity.py` hold quantscope's
`serving` module to."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from quantscope.plan.serving import ServingOptions


def vllm_capacity(config_path: Path, tmp: Path, options: ServingOptions, pool: int) -> tuple[int, int, float]:
    """(block size, blocks, max concurrency) vLLM computes for `config_path` with `pool` bytes of KV
    cache, calling its functions directly: the state calculators, `_align_hybrid_block_size`,
    `get_kv_cache_groups`, `get_kv_cache_config_from_groups` and
    `get_max_concurrency_for_kv_cache_config`.

    vLLM cannot import its Qwen3.5 model class on this CPU (it pulls torchvision), so the config is
    given Qwen3-Next's architecture, whose class feeds the same calculators with the same config
    fields; the recurrent dtype is set to the config's `mamba_ssm_dtype` as vLLM's
    `Qwen3_5ForConditionalGenerationConfig` does. The attention backend is FlashAttention (vLLM's
    choice on Hopper), named instead of found from constructed layers.
    """
    from unittest import mock

    import torch
    from vllm.config import CacheConfig, ModelConfig, ParallelConfig, VllmConfig
    from vllm.model_executor.layers.mamba.mamba_utils import (
        MambaStateDtypeCalculator,
        MambaStateShapeCalculator,
    )
    from vllm.platforms.interface import Platform
    from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend
    from vllm.v1.core import kv_cache_utils
    from vllm.v1.kv_cache_interface import FullAttentionSpec, MambaSpec
    from vllm.v1.kv_cache_layout import KVCacheLayout

    model_dir = tmp / config_path.stem
    model_dir.mkdir()
    shutil.copy(config_path, model_dir / "config.json")
    text = json.loads(config_path.read_text())["text_config"]
    model = ModelConfig(
        model=str(model_dir),
        skip_tokenizer_init=True,
        max_model_len=options.context,
        dtype="bfloat16",
        hf_overrides={"architectures": ["Qwen3NextForCausalLM"]},
    )
    parallel = ParallelConfig(tensor_parallel_size=options.tp)
    cache = CacheConfig(
        block_size=16, mamba_ssm_cache_dtype=text["mamba_ssm_dtype"], cache_dtype=options.kv_dtype
    )
    config = VllmConfig(model_config=model, parallel_config=parallel, cache_config=cache)
    cache.kv_cache_layout = KVCacheLayout.LBNHC.name  # FlashAttention states no preference: vLLM's default
    with mock.patch.object(Platform, "_find_non_ssm_backends", return_value=[FlashAttentionBackend]):
        Platform._align_hybrid_block_size(config, FlashAttentionBackend)
    shapes = MambaStateShapeCalculator.gated_delta_net_state_shape(
        options.tp,
        text["linear_num_key_heads"],
        text["linear_num_value_heads"],
        text["linear_key_head_dim"],
        text["linear_value_head_dim"],
        text["linear_conv_kernel_dim"],
        0,
    )
    dtypes = MambaStateDtypeCalculator.gated_delta_net_state_dtype(
        model.dtype, cache.mamba_cache_dtype, cache.mamba_ssm_cache_dtype
    )
    kv_dtype = model.dtype if options.kv_dtype == "auto" else torch.float8_e4m3fn
    specs = {}
    for i, kind in enumerate(text["layer_types"]):
        if kind == "full_attention":
            specs[f"layers.{i}.self_attn"] = FullAttentionSpec(
                block_size=cache.block_size,
                num_kv_heads=model.get_num_kv_heads(parallel),
                head_size=model.get_head_size(),
                dtype=kv_dtype,
            )
        else:
            specs[f"layers.{i}.linear_attn"] = MambaSpec(
                shapes=shapes,
                dtypes=dtypes,
                block_size=cache.block_size,
                page_size_padded=cache.mamba_page_size_padded,
                mamba_cache_mode=cache.mamba_cache_mode,
            )
    groups = kv_cache_utils.get_kv_cache_groups(config, specs)
    kv_config = kv_cache_utils.get_kv_cache_config_from_groups(config, groups, pool)
    concurrency = kv_cache_utils.get_max_concurrency_for_kv_cache_config(config, kv_config)
    return cache.block_size, kv_config.num_blocks, concurrency
