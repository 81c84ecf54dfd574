"""Config-only anatomies (`anatomy_from_config`) against checkpoints transformers really writes.

Each real Qwen3.5 / Qwen3-Next config from ../shared/qwen3.5-configs is shrunk to test size (4
layers in the real layer_types pattern, 4 experts, tiny widths, a 2-block vision tower), saved
with `save_pretrained` as a random model on CPU, and read back with `load_anatomy`; the config-only
anatomy must match it tensor by tensor, plus the MTP layer save_pretrained does not write.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from quantscope.checkpoint.anatomy import Anatomy
from quantscope.checkpoint.from_config import anatomy_from_config, estimate_header_bytes
from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError
from tests.shared_configs import CONFIGS

REAL = [
    "qwen3.5-0.8b.config.partial.json",
    "qwen3.5-4b-arch.mlx8bit-finetune.config.json",
    "qwen3.5-9b.config.json",
    "qwen3.5-27b.config.json",
    "qwen3.5-35b-a3b.config.json",
    "qwen3.5-122b-a10b.config.json",
    "qwen3.5-397b-a17b.config.json",
    "qwen3-next-80b-a3b-thinking.config.json",
]
# Qwen3.5-9B in BF16: four official shards, headers included (source: the configs' README).
QWEN35_9B_BYTES = 5_276_436_216 + 5_335_161_512 + 5_368_717_440 + 3_325_995_712

pytestmark = pytest.mark.usefixtures("shared_configs")  # skips, or fails under CI=true, without them


def _real(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / name).read_text())


def _shrink(config: dict[str, Any]) -> dict[str, Any]:
    """The same architecture at test size: one 3×linear + 1×full cycle, MoE with 4 experts."""
    small = copy.deepcopy(config)
    small.pop("quantization_config", None)
    text = small.get("text_config", small)
    ratio = text["linear_num_value_heads"] // text["linear_num_key_heads"]
    text.update(
        num_hidden_layers=4,
        hidden_size=64,
        vocab_size=256,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        linear_num_key_heads=2,
        linear_num_value_heads=2 * ratio,
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        max_position_embeddings=512,
    )
    if "layer_types" in text:
        text["layer_types"] = text["layer_types"][:4]
    for key, value in {"intermediate_size": 96, "moe_intermediate_size": 32}.items():
        if key in text:
            text[key] = value
    if "num_experts" in text:
        text.update(num_experts=4, num_experts_per_tok=2, shared_expert_intermediate_size=48)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(text.get(key), int):
            text[key] = 1
    if "vision_config" in small:
        small["vision_config"].update(
            depth=2,
            hidden_size=32,
            intermediate_size=48,
            num_heads=2,
            out_hidden_size=64,
            num_position_embeddings=64,
        )
    return small


def _saved_anatomy(config: dict[str, Any], directory: Path) -> Anatomy:
    """Build the model class on CPU with random weights, save_pretrained it, read the headers."""
    fields = {key: value for key, value in config.items() if key != "model_type"}
    built = transformers.AutoConfig.for_model(config["model_type"], **fields)
    torch.manual_seed(0)
    model = getattr(transformers, config["architectures"][0])(built).to(torch.bfloat16)
    model.save_pretrained(directory)
    return load_anatomy(directory)


def _entries(anatomy: Anatomy, mtp: bool) -> dict[str, tuple]:
    return {t.name: (t.shape, t.dtype, t.nbytes) for t in anatomy.tensors if (t.group == "mtp") == mtp}


def _expected_mtp(saved: Anatomy, config: dict[str, Any]) -> dict[str, tuple]:
    """The MTP head vLLM loads: fc + three norms, and layer 3 (the first full-attention one) renamed."""
    prefix = "model.language_model." if "text_config" in config else "model."
    hidden = 64
    expected = {"mtp.fc.weight": ((hidden, 2 * hidden), "BF16", 2 * hidden * hidden * 2)}
    for norm in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
        expected[f"mtp.{norm}.weight"] = ((hidden,), "BF16", hidden * 2)
    layer = f"{prefix}layers.3."
    for tensor in saved.tensors:
        if tensor.name.startswith(layer):
            expected["mtp.layers.0." + tensor.name[len(layer) :]] = (
                tensor.shape,
                tensor.dtype,
                tensor.nbytes,
            )
    return expected


@pytest.mark.parametrize("name", REAL)
def test_config_anatomy_matches_saved_checkpoint(name: str, tmp_path: Path) -> None:
    small = _shrink(_real(name))
    predicted = anatomy_from_config(small, name)
    saved = _saved_anatomy(small, tmp_path)
    assert _entries(saved, mtp=True) == {}, "save_pretrained writes no MTP tensors"
    assert _entries(predicted, mtp=False) == _entries(saved, mtp=False)
    assert _entries(predicted, mtp=True) == _expected_mtp(saved, small)
    assert predicted.config["quantscope_derived"]["mtp_layers"] == 1
    if "num_experts" in small.get("text_config", small):
        # Per expert on disk, in the model (transformers reverts its fused experts on save) and MTP alike.
        assert predicted.tensor("mtp.layers.0.mlp.experts.3.down_proj.weight").shape == (64, 32)
        assert not [t.name for t in predicted.tensors if t.name.endswith("experts.gate_up_proj")]


def test_qwen35_9b_bytes_match_the_real_shards(capsys: pytest.CaptureFixture[str]) -> None:
    anatomy = anatomy_from_config(_real("qwen3.5-9b.config.json"), "qwen3.5-9b")
    predicted = anatomy.total_bytes + estimate_header_bytes(anatomy, shards=4)
    error = (predicted - QWEN35_9B_BYTES) / QWEN35_9B_BYTES
    tensor_only = (anatomy.total_bytes - QWEN35_9B_BYTES) / QWEN35_9B_BYTES
    with capsys.disabled():
        print(
            f"\nQwen3.5-9B BF16: predicted {predicted:,} B vs {QWEN35_9B_BYTES:,} B: {error:+.2e} "
            f"(tensors only {tensor_only:+.2e})"
        )
    # The README's claim: the prediction (tensors + safetensors headers) within 4·10⁻⁷ of the shards.
    assert abs(error) <= 4e-7
    # Without the headers the tensors fall short of the shards, by less than the header estimate adds.
    assert 0 < QWEN35_9B_BYTES - anatomy.total_bytes <= 2 * estimate_header_bytes(anatomy, shards=4)


def test_qwen35_27b_groups_include_vision_and_mtp() -> None:
    anatomy = anatomy_from_config(_real("qwen3.5-27b.config.json"), "qwen3.5-27b")
    groups = anatomy.by_group()
    for group in ("vision", "mtp", "full_attn", "linear_attn", "dense_mlp", "embed", "lm_head"):
        assert groups[group], group
    assert anatomy.unknown == ()
    assert anatomy.tensor("mtp.fc.weight").shape == (5120, 10240)


def test_partial_config_names_its_defaults() -> None:
    anatomy = anatomy_from_config(_real("qwen3.5-0.8b.config.partial.json"), "qwen3.5-0.8b")
    defaults = anatomy.config["quantscope_derived"]["defaults"]
    assert defaults["dtype"] == "bfloat16"
    assert defaults["text_config.mtp_num_hidden_layers"] == 1
    assert defaults["text_config.mamba_ssm_dtype"] == "float32"
    assert defaults["text_config.eos_token_id"] is None
    assert "lm_head.weight" not in {t.name for t in anatomy.tensors}, "tied to the embedding"


def test_unknown_architecture_falls_back_to_auto_causal_lm() -> None:
    small = _shrink(_real("qwen3-next-80b-a3b-thinking.config.json"))
    small["architectures"] = ["NotATransformersClass"]
    anatomy = anatomy_from_config(small, "renamed")
    assert anatomy.config["quantscope_derived"]["architecture"] == "Qwen3NextForCausalLM"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architectures": []}, "field 'architectures'"),
        ({"model_type": "no_such_model"}, "cannot parse"),
        (
            {"architectures": ["Nope"], "model_type": "clip", "text_config": {}, "vision_config": {}},
            "no class 'Nope'",
        ),
    ],
)
def test_bad_configs_name_the_field(change: dict[str, Any], message: str) -> None:
    config = {**_shrink(_real("qwen3.5-27b.config.json")), **change}
    with pytest.raises(QuantscopeError, match=message):
        anatomy_from_config(config, "bad.json")
