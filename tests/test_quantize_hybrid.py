"""AutoRound on Qwen3.5's hybrid linear/full attention: the root cause and the fix.

AutoRound replays the keyword inputs cached at block 0 to every block. Block 0 of Qwen3.5 is a
Gated DeltaNet layer, which receives the 2-D padding mask; full-attention layers need the 4-D
causal mask. These tests replay cached block-0 inputs exactly as AutoRound does.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from quantscope.quantize.autoround import hybrid_attention_masks, is_hybrid_attention
from quantscope.util import frozen_heap


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()  # restored: later tests run with the run's own count (conftest)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def moe_model(tiny_qwen35_moe_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_qwen35_moe_dir, dtype=torch.float32).eval()


def _padded_batch(seqlen: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 200, (2, seqlen), generator=generator)
    mask = torch.ones_like(ids)
    mask[:, -1] = 0  # AutoRound always masks the last position of user-supplied samples
    return ids, mask


class _Stop(Exception):
    """Raised after block 0's inputs are captured, as AutoRound's cache hook stops the forward."""


def _block0_inputs(model, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    captured: dict[str, Any] = {}

    def capture(_module, args, kwargs):
        captured.update(kwargs, hidden_states=args[0] if args else kwargs["hidden_states"])
        raise _Stop

    handle = model.model.layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    with torch.no_grad(), contextlib.suppress(_Stop):
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    handle.remove()
    return captured


def _replay(model, cached: dict[str, Any]) -> torch.Tensor:
    hidden = cached["hidden_states"]
    others = {k: v for k, v in cached.items() if k != "hidden_states"}
    with torch.no_grad():
        for layer in model.model.layers:
            hidden = layer(hidden_states=hidden, **others)
        return model.lm_head(model.model.norm(hidden))


def test_the_cached_block0_mask_is_the_2d_padding_mask(moe_model):
    assert is_hybrid_attention(moe_model)
    assert moe_model.config.layer_types[0] == "linear_attention"
    cached = _block0_inputs(moe_model, *_padded_batch())
    assert cached["attention_mask"].ndim == 2
    assert cached["attention_mask"].dtype == torch.long


def test_replaying_block0_inputs_breaks_full_attention_without_the_fix(moe_model):
    cached = _block0_inputs(moe_model, *_padded_batch())
    with pytest.raises(RuntimeError, match="attn_mask"):
        _replay(moe_model, cached)


def test_with_the_fix_the_replay_equals_the_model_forward(moe_model):
    ids, mask = _padded_batch()
    with torch.no_grad():
        expected = moe_model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    cached = _block0_inputs(moe_model, ids, mask)
    with hybrid_attention_masks(moe_model) as hooked:
        replayed = _replay(moe_model, cached)
    full_layers = moe_model.config.layer_types.count("full_attention")
    assert hooked == full_layers > 0
    torch.testing.assert_close(replayed, expected, rtol=1e-5, atol=1e-5)


def test_the_fix_is_a_no_op_for_normal_forwards_and_leaves_no_hooks(moe_model):
    ids, mask = _padded_batch()
    with torch.no_grad():
        before = moe_model(input_ids=ids, attention_mask=mask).logits
        with hybrid_attention_masks(moe_model):
            during = moe_model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(during, before, rtol=0, atol=0)
    assert not any(layer._forward_pre_hooks for layer in moe_model.model.layers)


def test_dense_models_get_no_hooks(tiny_qwen3_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir)
    assert not is_hybrid_attention(model)
    with hybrid_attention_masks(model) as hooked:
        assert hooked == 0


@pytest.mark.slow
def test_autoround_itself_still_needs_the_fix(tiny_qwen35_moe_dir: Path, tmp_path: Path):
    """Upstream check: if this starts passing without the adapter, AutoRound fixed the bug."""
    from auto_round import AutoRound

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen35_moe_dir, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen35_moe_dir)
    texts = [f"calibration sample {i}: the quick brown fox jumps over the lazy dog." * 2 for i in range(4)]
    with frozen_heap():  # AutoRound's per-block gc.collect() walks only what it creates
        rounder = AutoRound(
            model, tokenizer, scheme="W4A16", iters=0, nsamples=2, seqlen=32, dataset=texts, device_map="cpu"
        )
        with pytest.raises(RuntimeError, match="attn_mask dtype"):
            rounder.quantize_and_save(str(tmp_path), format="auto_round")
