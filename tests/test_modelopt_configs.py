"""NVIDIA's real ModelOpt NVFP4 configs mapped onto header-only checkpoints rebuilt from the real
Qwen3.5 / Qwen3.6 configs: every module they name exists under its on-disk name, the stored
formats read back from the headers match their lists, and their recipes derive and transfer.

The expected algo per module comes from ModelOpt's rule written out in `tests/header_only.py`
(`modelopt_declared_algo`: fnmatch over `exclude_modules`, lookup in `quantized_layers`, as vLLM's
modelopt.py reads them), and for a few modules from the JSON read by hand, never from
quantscope's own resolver. INT4 AWQ and MXFP8 (no real Qwen3.5 config uses them) are laid out
from ModelOpt's documented export format."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

from quantscope.checkpoint.anatomy import Anatomy, build_anatomy
from quantscope.checkpoint.contents import SIXTEEN, read_contents
from quantscope.checkpoint.from_config import anatomy_from_config
from quantscope.checkpoint.load import load_anatomy
from quantscope.plan.derive import derive_recipe, plan_like
from quantscope.plan.recipe import KEPT
from quantscope.quantize.kinds import modelopt_algo, modelopt_kind
from tests.header_only import SIXTEEN as DECLARED_16
from tests.header_only import modelopt_checkpoint, modelopt_declared_algo, read_nvidia
from tests.shared_configs import CONFIGS

pytestmark = pytest.mark.usefixtures("shared_configs")  # skips, or fails under CI=true, without them
CHECKPOINTS = (
    "nvidia-qwen3.5-122b-a10b-nvfp4",
    "nvidia-qwen3.5-397b-a17b-nvfp4",
    "nvidia-qwen3.6-27b-nvfp4",
    "nvidia-qwen3.6-35b-a3b-nvfp4",
)


def _read(name: str) -> tuple[dict, dict]:
    return read_nvidia(CONFIGS, name)


def _rebuild(name: str, directory: Path) -> tuple[Anatomy, dict[str, str]]:
    return modelopt_checkpoint(*_read(name), name, directory)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_every_module_they_name_exists_on_disk(name: str):
    config, quant = _read(name)
    section = quant["quantization"]
    base = anatomy_from_config({k: v for k, v in config.items() if k != "quantization_config"}, name)
    # The lists never name single experts: one expert per layer stands for all (95k modules on 397B).
    modules = list(dict.fromkeys(re.sub(r"\.experts\.\d+\.", ".experts.0.", m) for m in base.linear_weights))
    # ModelOpt exports fused experts per expert: no fused 3-D expert tensor on disk.
    assert not any(t.name.endswith("experts.gate_up_proj") for t in base.tensors)
    for key in section.get("quantized_layers") or {}:
        assert any(m == key or m.startswith(f"{key}.") for m in modules), key
    for pattern in section.get("exclude_modules") or ():
        matched = [m for m in modules if fnmatch.fnmatchcase(m, pattern)]
        # Whole-tower patterns name modules outside the linears quantscope lists only if no linear exists.
        assert matched or any(t.name.startswith(pattern.rstrip("*")) for t in base.tensors), pattern


# Modules whose algo was read off the JSON by hand (the 122B excludes per layer: `layers.N.linear_attn*`,
# `layers.N.self_attn*`, `layers.N.mlp.shared_expert*`, `…shared_expert_gate`, `model.visual*`,
# `mtp*`, `lm_head`; the 35B lists `layers.N.mlp.experts` as one container and excludes `mtp*`).
PINNED = {
    "nvidia-qwen3.5-122b-a10b-nvfp4": {
        "lm_head": DECLARED_16,
        "model.language_model.layers.0.linear_attn.in_proj_qkv": DECLARED_16,
        "model.language_model.layers.0.mlp.shared_expert.down_proj": DECLARED_16,
        "model.language_model.layers.0.mlp.shared_expert_gate": DECLARED_16,
        "model.language_model.layers.3.self_attn.q_proj": DECLARED_16,
        "model.language_model.layers.3.mlp.experts.17.up_proj": "NVFP4",
        "model.language_model.layers.10.mlp.experts.0.down_proj": "NVFP4",  # `layers.1.…*` is no prefix
        "model.visual.blocks.0.attn.qkv": DECLARED_16,
        "mtp.layers.0.mlp.experts.3.gate_proj": DECLARED_16,
    },
    "nvidia-qwen3.6-35b-a3b-nvfp4": {
        "lm_head": "W4A16_NVFP4",
        "model.language_model.layers.3.mlp.experts.5.gate_proj": "W4A16_NVFP4",  # under `mlp.experts`
        "model.language_model.layers.3.self_attn.q_proj": "FP8",
        "model.language_model.layers.0.linear_attn.in_proj_qkv": "FP8",
        "model.language_model.layers.0.linear_attn.in_proj_b": DECLARED_16,  # not listed
        "model.language_model.layers.0.mlp.shared_expert_gate": DECLARED_16,  # not listed
        "model.language_model.layers.0.mlp.shared_expert.up_proj": "W4A16_NVFP4",
        "mtp.layers.0.mlp.experts.0.up_proj": DECLARED_16,
    },
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_modules_pinned_by_hand_get_the_algo_the_json_gives(name: str):
    config, quant = _read(name)
    base = anatomy_from_config({k: v for k, v in config.items() if k != "quantization_config"}, name)
    for module, algo in PINNED[name].items():
        assert module in base.linear_weights, module
        assert modelopt_declared_algo(quant["quantization"], module) == algo, module  # the oracle itself
        # quantscope's resolver, on hf_quant_config.json and on config.json's own section (`ignore`).
        for section in (quant["quantization"], config["quantization_config"]):
            assert (modelopt_algo(section, module) or DECLARED_16) == algo, module


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_the_stored_formats_read_back_match_their_lists(name: str, tmp_path: Path):
    base, declared = _rebuild(name, tmp_path / name)
    contents = read_contents(load_anatomy(tmp_path / name))
    kinds = {"NVFP4": "nvfp4", "W4A16_NVFP4": "nvfp4", "FP8": "fp8", DECLARED_16: SIXTEEN}
    stored = {module: weight.kind for module, weight in contents.weights.items()}
    assert stored == {module: kinds[algo] for module, algo in declared.items()}
    weight_only = [m for m, a in declared.items() if a == "W4A16_NVFP4"]
    assert all(contents.weights[m].format == "NVFP4 weight-only" for m in weight_only)
    assert contents.params == read_contents(base).params
    assert contents.label == f"{_read(name)[1]['quantization']['quant_algo']} (modelopt)"
    # The config.json's own quantization_config says the same as hf_quant_config.json.
    config_quant = _read(name)[0]["quantization_config"]
    assert {m: modelopt_kind(config_quant, m) for m in declared if not m.endswith(".mlp.gate")} == {
        m: kinds[a] for m, a in declared.items() if not m.endswith(".mlp.gate")
    }


def test_the_122b_recipe_keeps_everything_but_the_routed_experts(tmp_path: Path):
    base, declared = _rebuild("nvidia-qwen3.5-122b-a10b-nvfp4", tmp_path / "122b")
    groups = {base.linear_weights[m].group for m, algo in declared.items() if algo != DECLARED_16}
    assert groups == {"routed_experts"}
    derived = derive_recipe(load_anatomy(tmp_path / "122b"))
    assert derived.reproduces and derived.recipe.scheme == "nvfp4"
    assert set(derived.recipe.keep_groups) >= {"full_attn", "linear_attn", "shared_expert"}


def test_the_122b_recipe_on_the_35b(tmp_path: Path):
    _rebuild("nvidia-qwen3.5-122b-a10b-nvfp4", tmp_path / "122b")
    config_35b = json.loads((CONFIGS / "qwen3.5-35b-a3b.config.json").read_text())
    target = anatomy_from_config(config_35b, "qwen3.5-35b-a3b")
    like = plan_like(target, load_anatomy(tmp_path / "122b"))
    assert not like.transferred.dropped
    routed = {m for m, t in target.linear_weights.items() if t.group == "routed_experts"}
    assert {m for m, s in like.footprint.schemes.items() if s != KEPT} == routed
    assert all(like.footprint.schemes[m] == "nvfp4" for m in routed)
    # NVFP4 bytes of an [out, in] weight as vLLM's ModelOpt loader creates them (modelopt.py
    # `create_weights`): E2M1 values two per byte, an E4M3 scale per 16, FP32 weight_scale_2 and
    # input_scale; everything else keeps its BF16 bytes.
    nvfp4 = sum(o * i // 2 + o * i // 16 + 4 + 4 for o, i in (target.linear_weights[m].shape for m in routed))
    routed_bf16 = sum(target.linear_weights[m].nbytes for m in routed)
    assert like.footprint.total_bytes == target.total_bytes - routed_bf16 + nvfp4
    # The README's figures: "puts Qwen3.5-35B-A3B at 25.6 GB of 71.9 GB".
    assert (round(like.footprint.total_bytes / 1e9, 1), round(target.total_bytes / 1e9, 1)) == (25.6, 71.9)


def test_mixed_precision_recipes_reproduce(tmp_path: Path):
    for name in ("nvidia-qwen3.6-27b-nvfp4", "nvidia-qwen3.6-35b-a3b-nvfp4"):
        _rebuild(name, tmp_path / name)
        derived = derive_recipe(load_anatomy(tmp_path / name))
        assert derived.reproduces, (name, derived.mismatched[:3])
        schemes = {s for s in derived.stored.values()}
        # every NVFP4 layer of NVIDIA's Qwen3.6 checkpoints is W4A16_NVFP4 (hf_quant_config.json):
        # weight-only NVFP4, stored exactly, not approximated by W4A4 nvfp4
        assert schemes == {"nvfp4a16", "fp8", KEPT}, name
        assert not [a for a in derived.approximate.values() if "NVFP4" in a], name


# ---- INT4 AWQ and MXFP8: ModelOpt's export format, on a header-only checkpoint --------------------

OUT, IN, GROUP = 512, 256, 128
AWQ, MX = "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"


def _awq_and_mxfp8_headers() -> list[tuple]:
    """One INT4 AWQ and one MXFP8 linear as ModelOpt exports them. INT4 AWQ (ModelOpt's
    modelopt/torch/export/quant_utils.py, `to_quantized_weight`): two 4-bit values of adjacent
    output rows per uint8, `weight [out/2, in]`, a 16-bit scale per group of `group_size` inputs,
    `weight_scale [out, in/g]`, and the AWQ `pre_quant_scale [in]`. MXFP8 (vLLM's modelopt.py
    `resolve`, utils/mxfp8_utils.py `MXFP8_BLOCK_SIZE`): E4M3 values with an E8M0 (uint8) scale
    per 32 inputs."""
    return [
        (f"{AWQ}.weight", "U8", (OUT // 2, IN), OUT // 2 * IN),
        (f"{AWQ}.weight_scale", "F16", (OUT, IN // GROUP), OUT * IN // GROUP * 2),
        (f"{AWQ}.pre_quant_scale", "F16", (IN,), IN * 2),
        (f"{MX}.weight", "F8_E4M3", (IN, OUT), IN * OUT),
        (f"{MX}.weight_scale", "U8", (IN, OUT // 32), IN * OUT // 32),
    ]


def test_int4_awq_and_mxfp8_are_recognised_from_their_headers() -> None:
    """README: `inspect` names ModelOpt INT4 AWQ and MXFP8 among the stored formats."""
    # ModelOpt's per-layer entries (quant_utils.py: W4A16_AWQ with group_size, no zero point, a
    # pre-quant scale; MXFP8) under MIXED_PRECISION.
    section = {
        "quant_method": "modelopt",
        "quant_algo": "MIXED_PRECISION",
        "quantized_layers": {
            AWQ: {
                "quant_algo": "W4A16_AWQ",
                "group_size": GROUP,
                "has_zero_point": False,
                "pre_quant_scale": True,
            },
            MX: {"quant_algo": "MXFP8"},
        },
    }
    config = {
        "hidden_size": IN,
        "num_hidden_layers": 1,
        "model_type": "qwen3",
        "quantization_config": section,
    }
    contents = read_contents(build_anatomy("awq-mxfp8", config, _awq_and_mxfp8_headers()))
    awq, mx = contents.weights[AWQ], contents.weights[MX]
    assert (awq.kind, awq.format, awq.bits, awq.shape) == ("int", f"INT4 g{GROUP} AWQ", 4, (OUT, IN))
    assert (mx.kind, mx.format, mx.bits, mx.shape) == ("fp8", "MXFP8", 8, (IN, OUT))
    assert awq.nbytes == OUT * IN // 2 + OUT * IN // GROUP * 2 + IN * 2
    assert mx.nbytes == IN * OUT + IN * OUT // 32
    # What the config declares for each agrees with what the headers hold.
    assert {m: modelopt_kind(section, m) for m in (AWQ, MX)} == {AWQ: "int", MX: "fp8"}
    assert "INT4 g128 AWQ holds 50% of the parameters, MXFP8 holds 50%" in contents.summary()
