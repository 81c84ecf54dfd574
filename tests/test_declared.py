"""A bare config.json of a quantized checkpoint (issue 28, defect 6): `inspect` and `plan` read its
label from its quantization_config and its footprint from the per-layer formats it declares, never
"unquantized".

The oracle for NVIDIA's real ModelOpt configs is written out in the tests: which algo each module
gets (`tests/header_only.py::modelopt_declared_algo`: a lookup in `quantized_layers`, or fnmatch
over the exclude list) and what each algo stores per
`[out, in]` weight (vLLM's ModelOpt loaders, `modelopt.py` `create_weights`: NVFP4 E2M1 values
packed two per byte, an E4M3 scale per 16, an FP32 `weight_scale_2`, and for W4A4 an FP32
`input_scale`; FP8 E4M3 values with FP32 weight and input scales), applied to the unquantized
layout transformers builds from the same config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quantscope.checkpoint.anatomy import Anatomy
from quantscope.checkpoint.contents import read_contents
from quantscope.checkpoint.from_config import anatomy_from_config
from quantscope.checkpoint.load import load_anatomy
from quantscope.cli import app
from quantscope.cli.app import console
from quantscope.errors import QuantscopeError
from quantscope.plan.recipe import plan_recipes
from tests.header_only import SIXTEEN, modelopt_declared_algo
from tests.shared_configs import CONFIGS

pytestmark = pytest.mark.usefixtures("shared_configs")  # skips, or fails under CI=true, without them
NVIDIA = ("nvidia-qwen3.6-27b-nvfp4", "nvidia-qwen3.6-35b-a3b-nvfp4", "nvidia-qwen3.5-122b-a10b-nvfp4")
# Bytes one `[out, in]` weight takes per ModelOpt algo (see the module docstring), and the label
# `inspect` gives it.
BYTES = {
    "NVFP4": lambda o, i: o * i // 2 + o * i // 16 + 4 + 4,
    "W4A16_NVFP4": lambda o, i: o * i // 2 + o * i // 16 + 4,
    "FP8": lambda o, i: o * i + 4 + 4,
    SIXTEEN: lambda o, i: 2 * o * i,
}
LABELS = {"NVFP4": "NVFP4", "W4A16_NVFP4": "NVFP4 weight-only", "FP8": "FP8 per-tensor", SIXTEEN: "BF16"}
runner = CliRunner()


def _config(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / f"{name}.config.json").read_text())


def _section(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / f"{name}.hf_quant_config.json").read_text())["quantization"]


def _unquantized(name: str) -> Anatomy:
    """The layout transformers builds from the config with its quantization section removed."""
    config = {k: v for k, v in _config(name).items() if k != "quantization_config"}
    return anatomy_from_config(config, f"{name} (unquantized)")


@pytest.fixture(scope="module", params=NVIDIA)
def nvidia(request: pytest.FixtureRequest) -> tuple[str, Anatomy, dict[str, str]]:
    """(name, unquantized anatomy, linear module -> declared algo) of one NVIDIA checkpoint."""
    name = request.param
    base = _unquantized(name)
    section = _section(name)
    # The lists never name single experts: one expert stands for all (37k names on the 122B).
    keys = {m: re.sub(r"\.experts\.\d+\.", ".experts.0.", m) for m in base.linear_weights}
    algo = {key: modelopt_declared_algo(section, key) for key in set(keys.values())}
    return name, base, {module: algo[key] for module, key in keys.items()}


def test_a_bare_quantized_config_is_labelled_and_sized_as_declared(nvidia) -> None:
    name, base, algos = nvidia
    contents = read_contents(load_anatomy(CONFIGS / f"{name}.config.json"))
    section = _section(name)
    assert contents.label == f"{section['quant_algo']} (modelopt)"
    summary = contents.summary()
    assert summary.startswith(
        f"labelled {section['quant_algo']} (modelopt) in config.json; contents not read"
    )
    assert "unquantized" not in summary
    # Every linear module in the format its declaration gives it ...
    formats = {module: weight.format for module, weight in contents.weights.items()}
    assert formats == {module: LABELS[algo] for module, algo in algos.items()}
    # ... and the bytes are those formats' bytes on the unquantized shapes, plus every other tensor.
    linear = {t.name for t in base.linear_weights.values()}
    expected = sum(t.nbytes for t in base.tensors if t.name not in linear)
    expected += sum(BYTES[algos[m]](*t.shape) for m, t in base.linear_weights.items())
    assert contents.nbytes == expected
    assert contents.params == read_contents(base).params
    assert expected < 0.5 * base.total_bytes  # NVIDIA's 27B: ~22 GB, not the 55.56 GB of BF16


def test_inspect_prints_the_label_and_per_group_formats_of_the_27b(monkeypatch) -> None:
    monkeypatch.setattr(console, "width", 200)  # the shared console fixed its width when created
    path = CONFIGS / "nvidia-qwen3.6-27b-nvfp4.config.json"
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "labelled MIXED_PRECISION (modelopt) in config.json; contents not read" in result.output
    assert "unquantized" not in result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 5}
    assert "NVFP4 weight-only" in rows["dense_mlp"] and "FP8 per-tensor" in rows["full_attn"]
    assert "declared as" in result.output
    data = json.loads(runner.invoke(app, ["inspect", str(path), "--json"]).output)
    assert data["contents"]["declared_in"] == "config.json" and data["contents"]["bytes"] < 23e9


def test_plan_of_a_bare_quantized_config_plans_its_unquantized_model(monkeypatch) -> None:
    monkeypatch.setattr(console, "width", 200)
    name = "nvidia-qwen3.6-27b-nvfp4"  # the dense one: planning 14 presets on a 37k-module MoE takes a minute
    base, path = _unquantized(name), CONFIGS / f"{name}.config.json"
    planned = plan_recipes(load_anatomy(path))
    assert planned.anatomy.total_bytes == base.total_bytes
    assert [f.total_bytes for f in planned.footprints] == [
        f.total_bytes for f in plan_recipes(base).footprints
    ]
    assert planned.source is not None and planned.source.label == "MIXED_PRECISION (modelopt)"
    assert planned.source.nbytes == read_contents(load_anatomy(path)).nbytes < 23e9
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert "planned as its unquantized model (55.56 GB)" in result.output
    assert "labelled MIXED_PRECISION (modelopt), 21.92 GB declared in config.json" in result.output


def test_a_beside_hf_quant_config_is_read_when_the_config_has_none(tmp_path: Path) -> None:
    name = "nvidia-qwen3.6-35b-a3b-nvfp4"
    config = {k: v for k, v in _config(name).items() if k != "quantization_config"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "hf_quant_config.json").write_text((CONFIGS / f"{name}.hf_quant_config.json").read_text())
    beside = read_contents(load_anatomy(tmp_path / "config.json"))
    assert beside.summary().startswith("labelled MIXED_PRECISION (modelopt) in hf_quant_config.json")
    assert beside.nbytes == read_contents(load_anatomy(CONFIGS / f"{name}.config.json")).nbytes


def test_a_quantization_config_quantscope_cannot_lay_out_is_refused(tmp_path: Path) -> None:
    mlx = json.loads((CONFIGS / "qwen3.5-4b-arch.mlx8bit-finetune.config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(mlx))
    with pytest.raises(QuantscopeError, match=r"quantization_config.*safetensors"):
        load_anatomy(tmp_path / "config.json")
    result = runner.invoke(app, ["inspect", str(tmp_path / "config.json")])
    assert result.exit_code != 0 and "unquantized" not in result.output
