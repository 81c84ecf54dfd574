"""NVIDIA's real ModelOpt NVFP4 configs mapped onto header-only checkpoints rebuilt from the real
Qwen3.5 / Qwen3.6 configs: every module they name exists under its on-disk name, the stored
formats read back from the headers match their lists, and their recipes derive and transfer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from quantscope.anatomy import Anatomy, load_anatomy
from quantscope.anatomy_config import anatomy_from_config
from quantscope.derive import derive_recipe, plan_like
from quantscope.quantize.kinds import SIXTEEN, modelopt_algo, modelopt_kind
from quantscope.recipe import KEPT
from quantscope.storage import read_contents
from tests.header_only import modelopt_checkpoint, read_nvidia

CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "qwen3.5-configs"
pytestmark = pytest.mark.skipif(not CONFIGS.is_dir(), reason=f"real configs not found at {CONFIGS}")
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
        matched = [
            m
            for m in modules
            if modelopt_algo({"quant_algo": "NVFP4", "exclude_modules": [pattern]}, m) is None
        ]
        # Whole-tower patterns name modules outside the linears quantscope lists only if no linear exists.
        assert matched or any(t.name.startswith(pattern.rstrip("*")) for t in base.tensors), pattern


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_the_stored_formats_read_back_match_their_lists(name: str, tmp_path: Path):
    base, declared = _rebuild(name, tmp_path / name)
    contents = read_contents(load_anatomy(tmp_path / name))
    kinds = {"NVFP4": "nvfp4", "W4A16_NVFP4": "nvfp4", "FP8": "fp8", SIXTEEN: SIXTEEN}
    stored = {module: weight.kind for module, weight in contents.weights.items()}
    assert stored == {module: kinds[algo] for module, algo in declared.items()}
    weight_only = [m for m, a in declared.items() if a == "W4A16_NVFP4"]
    assert all(contents.weights[m].format == "NVFP4 weight-only" for m in weight_only)
    assert contents.params == read_contents(base).params
    assert contents.label == f"{_read(name)[1]['quantization']['quant_algo']} (modelopt)"
    # The config.json's own quantization_config says the same as hf_quant_config.json.
    config_quant = _read(name)[0]["quantization_config"]
    assert {
        m: modelopt_kind(config_quant, m)
        for m in declared
        if declared[m] != SIXTEEN and base.linear_weights[m].group != "router"
    } == {m: kinds[a] for m, a in declared.items() if a != SIXTEEN}


def test_the_122b_recipe_keeps_everything_but_the_routed_experts(tmp_path: Path):
    base, declared = _rebuild("nvidia-qwen3.5-122b-a10b-nvfp4", tmp_path / "122b")
    groups = {base.linear_weights[m].group for m, algo in declared.items() if algo != SIXTEEN}
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
    # Routed experts hold most of a MoE's bytes: NVFP4 there shrinks the 35B to well under half.
    assert like.footprint.total_bytes < 0.5 * target.total_bytes


def test_mixed_precision_recipes_reproduce(tmp_path: Path):
    for name in ("nvidia-qwen3.6-27b-nvfp4", "nvidia-qwen3.6-35b-a3b-nvfp4"):
        _rebuild(name, tmp_path / name)
        derived = derive_recipe(load_anatomy(tmp_path / name))
        assert derived.reproduces, (name, derived.mismatched[:3])
        schemes = {s for s in derived.stored.values()}
        assert schemes == {"nvfp4", "fp8", KEPT}, name
