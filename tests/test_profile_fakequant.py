"""Fake quantization matches AutoRound's quantizers bit for bit, maps checkpoint names onto
model parameters (fused 3D experts included), and restores the model exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quantscope.errors import QuantscopeError
from quantscope.numerics.fakequant import (
    SPECS,
    QdqTarget,
    fake_quantized,
    quantize_dequantize,
    resolve_targets,
    round_to_e2m1,
)
from quantscope.util import frozen_heap

SHAPES = [(256, 128), (64, 300), (33, 50), (130, 260)]


def _autoround_qdq(name: str, weight: torch.Tensor) -> torch.Tensor:
    from auto_round.data_type.fp8 import quant_block_fp_sym, quant_fp8_sym
    from auto_round.data_type.int import quant_tensor_asym, quant_tensor_sym
    from auto_round.data_type.mxfp import quant_mx
    from auto_round.data_type.nvfp import nv_fp4

    reference = {
        "w4a16": lambda w: quant_tensor_sym(w, bits=4, group_size=128),
        "w4a16_asym": lambda w: quant_tensor_asym(w, bits=4, group_size=128),
        "w8a16": lambda w: quant_tensor_sym(w, bits=8, group_size=128),
        "nvfp4": lambda w: nv_fp4(w, bits=4, group_size=16),
        "mxfp4": lambda w: quant_mx(w, bits=4, group_size=32, data_type="mx_fp4"),
        "fp8": lambda w: quant_fp8_sym(w, group_size=-1),
        "fp8_tensor": lambda w: quant_fp8_sym(w, group_size=0),
        "fp8_block": lambda w: quant_block_fp_sym(w, group_size=(128, 128)),
    }
    return reference[name](weight)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_qdq_is_bit_identical_to_autoround(name: str, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    for shape in SHAPES:
        weight = (torch.randn(shape, generator=generator) * 0.05).to(dtype)
        weight[0, :20] = 0  # an all-zero group must stay zero, not NaN
        weight[1, 3] = 0.9  # an outlier widens one group's range
        ours = quantize_dequantize(weight, SPECS[name])
        theirs = _autoround_qdq(name, weight)
        assert ours.dtype == dtype
        assert torch.equal(ours, theirs.to(dtype)), f"{name} {dtype} {shape}"
        assert not torch.equal(ours, weight), "quantization must change a random weight"


def test_e2m1_rounding_ties_to_even() -> None:
    values = torch.tensor([0.0, 0.25, 0.3, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, 6.0, -0.75, -5.0])
    expected = torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -1.0, -4.0])
    assert torch.equal(round_to_e2m1(values), expected)


def test_qdq_values_lie_on_the_format_grid() -> None:
    weight = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    out = quantize_dequantize(weight, SPECS["w4a16"]).reshape(64, 2, 128)
    for group in out.reshape(-1, 128)[:8]:
        assert group.unique().numel() <= 16  # 4 bits: at most 16 levels per group
    mx = quantize_dequantize(weight, SPECS["mxfp4"]).reshape(-1, 32)
    scale = 2.0 ** torch.floor(torch.log2(weight.reshape(-1, 32).abs().amax(-1, keepdim=True)) - 2)
    assert torch.equal(round_to_e2m1(mx / scale), mx / scale)  # E2M1 values times a power of two


def test_qdq_rejects_non_2d() -> None:
    with pytest.raises(QuantscopeError, match="2D"):
        quantize_dequantize(torch.zeros(2, 3, 4), SPECS["w4a16"])


def _autoround_fake_export(source: Path, out: Path, scheme: str) -> dict[str, torch.Tensor]:
    """Run AutoRound's real RTN pipeline with the `fake` (dequantized) export format."""
    from auto_round import AutoRound
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(source)
    with frozen_heap():  # AutoRound's per-block gc.collect() walks only what it creates
        rounder = AutoRound(
            model,
            tokenizer,
            scheme=scheme,
            iters=0,
            disable_opt_rtn=True,
            dataset=["the quick brown fox " * 20] * 4,
            nsamples=4,
            seqlen=32,
            device_map="cpu",
        )
        rounder.quantize_and_save(str(out), format="fake")
    tensors: dict[str, torch.Tensor] = {}
    for path in out.rglob("*.safetensors"):
        tensors.update(load_file(path))
    return tensors


def _fused_sets(names: list[str], families: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    sets = []
    for name in names:
        module = name.removesuffix(".weight")
        for family in families:
            if module.endswith("." + family[0]):
                base = module[: -len(family[0])]
                sets.append(tuple(base + member for member in family))
    return sets


@pytest.mark.parametrize(
    ("fixture", "scheme", "fmt"),
    [("tiny_qwen35_moe_dir", "W4A16", "w4a16"), ("tiny_qwen3_dir", "NVFP4", "nvfp4")],
)
def test_fake_quantized_model_equals_autoround_export(
    request: pytest.FixtureRequest, tmp_path: Path, fixture: str, scheme: str, fmt: str
) -> None:
    """Per-expert checkpoint names land in transformers' fused 3D experts; NVFP4 shares one
    global scale across q/k/v and gate/up as AutoRound's export does."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    source = request.getfixturevalue(fixture)
    exported = _autoround_fake_export(source, tmp_path / "out", scheme)
    original = load_file(source / "model.safetensors")
    changed = [k for k, w in original.items() if not torch.equal(exported[k].to(w.dtype), w)]
    assert len(changed) >= 14

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    slices = resolve_targets(model, [(name, tuple(original[name].shape)) for name in changed])
    if fixture == "tiny_qwen35_moe_dir":
        assert any(where.expert is not None and where.rows is not None for where in slices)
    families = [("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")]
    targets = [QdqTarget(where, fmt) for where in slices]
    with fake_quantized(model, targets, _fused_sets(changed, families)):
        for where in slices:
            # AutoRound's fake export holds its compute dtype: bf16 where the CPU has native bf16,
            # float32 elsewhere; the dequantized values are the same once in the model's dtype.
            expected = exported[where.tensor].to(where.view(model).dtype)
            assert torch.equal(where.view(model), expected), where.tensor
    for where in slices:
        assert torch.equal(where.view(model), original[where.tensor]), f"{where.tensor} not restored"


def test_fake_quantized_restores_after_an_error(tiny_qwen35_moe_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen35_moe_dir, dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    names = [
        ("model.layers.0.mlp.experts.1.down_proj.weight", (128, 128)),
        ("model.layers.0.linear_attn.in_proj_qkv.weight", (512, 128)),
    ]
    targets = [QdqTarget(where, "nvfp4", torch.bfloat16) for where in resolve_targets(model, names)]
    with pytest.raises(RuntimeError, match="boom"), fake_quantized(model, targets):
        changed = model.get_parameter("model.layers.0.mlp.experts.down_proj")
        assert not torch.equal(changed, before["model.layers.0.mlp.experts.down_proj"])
        assert torch.equal(changed[0], before["model.layers.0.mlp.experts.down_proj"][0])
        raise RuntimeError("boom")
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_resolve_targets_handles_prefixes_and_rejects_wrong_shapes(tiny_qwen35_moe_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen35_moe_dir, dtype=torch.float32)
    multimodal_name = "model.language_model.layers.3.self_attn.q_proj.weight"
    (where,) = resolve_targets(model, [(multimodal_name, (256, 128))])
    assert where.param == "model.layers.3.self_attn.q_proj.weight"
    (up,) = resolve_targets(model, [("model.layers.2.mlp.experts.3.up_proj.weight", (128, 128))])
    assert (up.param, up.expert, up.rows) == ("model.layers.2.mlp.experts.gate_up_proj", 3, (128, 256))
    with pytest.raises(QuantscopeError, match="no parameter of that shape"):
        resolve_targets(model, [("model.layers.3.self_attn.q_proj.weight", (128, 256))])
    with pytest.raises(QuantscopeError, match="mtp"):
        resolve_targets(model, [("mtp.layers.0.mlp.gate_proj.weight", (128, 128))])


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(SPECS))
def test_qdq_on_cuda_equals_cpu(name: str) -> None:
    weight = (torch.randn(300, 520, generator=torch.Generator().manual_seed(2)) * 0.05).to(torch.bfloat16)
    on_gpu = quantize_dequantize(weight.cuda(), SPECS[name])
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), quantize_dequantize(weight, SPECS[name]))


@pytest.mark.gpu
def test_fake_quantized_model_on_cuda_restores(tiny_qwen35_moe_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen35_moe_dir, dtype=torch.bfloat16).cuda()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    names = [(f"model.layers.1.mlp.experts.{e}.gate_proj.weight", (128, 128)) for e in range(4)]
    targets = [QdqTarget(where, "nvfp4") for where in resolve_targets(model, names)]
    with fake_quantized(model, targets):
        assert not torch.equal(
            model.get_parameter("model.layers.1.mlp.experts.gate_up_proj"),
            before["model.layers.1.mlp.experts.gate_up_proj"],
        )
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
