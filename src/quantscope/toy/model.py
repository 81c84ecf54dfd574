"""The toy reasoner's architecture: a tiny Qwen3.5-MoE (Gated DeltaNet + gated attention + MoE).

Sizes are multiples of 128 where a real model's would be large, so W4A16 group-128 applies to
the big projections while `in_proj_b/a` (rows = value heads) and the router stay 16-bit, as in
Qwen3.5-35B-A3B. Linear-attention head dim 128 keeps vLLM's CPU GDN kernel usable.
"""

from __future__ import annotations

import torch
from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

from quantscope.toy.tokenizer import VOCAB_SIZE, vocabulary

# Every 2nd layer is full attention (Qwen3.5 uses every 4th): with 4 layers that gives two
# exact-retrieval layers, which digit lookup in long numbers needs, and two Gated DeltaNet layers.
LAYER_TYPES = ("linear_attention", "full_attention", "linear_attention", "full_attention")


def build_config() -> Qwen3_5MoeTextConfig:
    """The toy model's config (about 3M parameters)."""
    vocab = vocabulary()
    return Qwen3_5MoeTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        num_hidden_layers=len(LAYER_TYPES),
        layer_types=list(LAYER_TYPES),
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        linear_num_key_heads=1,
        linear_num_value_heads=2,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        moe_intermediate_size=128,
        shared_expert_intermediate_size=128,
        num_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"],
        bos_token_id=None,
        router_aux_loss_coef=0.01,
    )


def build_model(seed: int = 0) -> Qwen3_5MoeForCausalLM:
    """A freshly initialised toy model (fp32), deterministic in `seed`."""
    torch.manual_seed(seed)
    return Qwen3_5MoeForCausalLM(build_config())


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (elements)."""
    return sum(p.numel() for p in model.parameters())
