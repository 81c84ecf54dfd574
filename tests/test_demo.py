"""The demo pipeline end to end on a real toy-architecture checkpoint: plan, RTN export, twin, eval,
store, report; and a second run that resumes instead of recomputing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from quantscope.demo import DEMO_LEVELS, DemoSettings, run_demo
from quantscope.store import Store
from quantscope.twin import write_twin

SETTINGS = DemoSettings(
    presets=("bf16", "w4a16"), per_level=1, k=1, max_tokens=24, batch_size=8, calib_samples=4, calib_seqlen=64
)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised (untrained) toy reasoner checkpoint with its tokenizer, as training writes it."""
    from quantscope.toy.model import build_model
    from quantscope.toy.train import save_checkpoint

    out = tmp_path_factory.mktemp("toy") / "ckpt"
    save_checkpoint(build_model(seed=0), out, {"steps_done": 0})
    return out


@pytest.fixture(scope="module")
def demo_run(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo")
    events = []
    first = run_demo(out, model=toy_dir, settings=SETTINGS, progress=events.append)
    return out, first, events


@pytest.mark.slow
def test_demo_writes_checkpoints_store_and_report(demo_run) -> None:
    out, result, events = demo_run
    statuses = {v.preset: v.status for v in result.variants}
    assert statuses == {"bf16": "original", "w4a16": "quantized"}
    export = out / "checkpoints" / "w4a16"
    manifest = json.loads((export / "quantscope.json").read_text())
    w4 = next(v for v in result.variants if v.preset == "w4a16")
    assert w4.memory_bytes == manifest["tensor_bytes"] == w4.predicted_bytes
    assert w4.directory == out / "eval" / "w4a16"
    with Store(out) as store:
        assert store.count() == 2 * len(SETTINGS.levels)  # 1 item per level × k=1, two variants
        assert {v.name: v.memory_bytes for v in store.variants()} == {
            "bf16": next(v.predicted_bytes for v in result.variants if v.preset == "bf16"),
            "w4a16": manifest["tensor_bytes"],
        }
    page = result.report.path.read_text()
    assert result.report.path == out / "report.html"
    # the report shows this run's numbers
    for m in result.report.analysis.metrics:
        assert f"{100 * m.accuracy:.1f}%" in page
    assert result.report.recommendation.summary().split(" — ")[0].replace("&", "&amp;") in page
    # and says what was evaluated: the twin, not the export, and as which GPU runs it
    w4_info = next(info for info in result.report.analysis.variants if info.name == "w4a16")
    assert "float32 twin of export 'w4a16'" in w4_info.evaluated and "B200" in w4_info.evaluated
    assert "weight-only" in w4_info.evaluated  # W4A16 rounds no activations on any GPU
    assert next(i for i in result.report.analysis.variants if i.name == "bf16").evaluated is None
    assert "What was evaluated" in page and "float32 twin of export &#x27;w4a16&#x27;" in page
    stages = {e.stage for e in events}
    assert stages == {"plan", "quantize", "eval", "report"}


@pytest.mark.slow
def test_demo_resumes_without_recomputing(demo_run, toy_dir: Path) -> None:
    out, _, _ = demo_run
    export = out / "checkpoints" / "w4a16"
    stamp = (export / "quantscope.json").stat().st_mtime_ns
    events = []
    again = run_demo(out, model=toy_dir, settings=SETTINGS, progress=events.append)
    assert {v.preset: v.status for v in again.variants} == {"bf16": "original", "w4a16": "reused"}
    assert (export / "quantscope.json").stat().st_mtime_ns == stamp
    # nothing left to generate: the eval stage only reports full bars
    assert all(e.done == e.total for e in events if e.stage == "eval")
    with Store(out) as store:
        assert store.count() == 2 * len(SETTINGS.levels)


@pytest.mark.slow
def test_twin_holds_the_exported_formats(demo_run, toy_dir: Path) -> None:
    out, _, _ = demo_run
    twin = load_file(str(out / "eval" / "w4a16" / "model.safetensors"))
    source = load_file(str(toy_dir / "model.safetensors"))
    manifest = json.loads((out / "checkpoints" / "w4a16" / "quantscope.json").read_text())
    quantized = [m for m, f in manifest["assignment"].items() if f == "w4a16"]
    kept = [m for m, f in manifest["assignment"].items() if f == "bf16"]
    assert quantized and kept
    checked = 0
    for module in quantized:
        name = f"{module}.weight"
        if name not in twin:  # per-expert names live in the fused 3D tensor of the twin
            continue
        checked += 1
        weight = twin[name].float()
        assert not torch.equal(weight, source[name].float())
        # W4A16 group 128 symmetric: each group of 128 input values holds at most 16 distinct levels
        groups = weight.reshape(weight.shape[0], -1, min(128, weight.shape[1]))
        assert max(len(torch.unique(g)) for g in groups.reshape(-1, groups.shape[-1])) <= 16
    assert checked >= 4  # attention and linear-attention projections at least
    for module in kept:
        name = f"{module}.weight"
        if name in twin:
            assert torch.equal(twin[name].float(), source[name].float())
    # reused when its marker exists
    before = (out / "eval" / "w4a16" / "model.safetensors").stat().st_mtime_ns
    write_twin(toy_dir, out / "checkpoints" / "w4a16", out / "eval" / "w4a16")
    assert (out / "eval" / "w4a16" / "model.safetensors").stat().st_mtime_ns == before


def _bundled_checkpoint() -> Path | None:
    from quantscope.errors import QuantscopeError
    from quantscope.toy import checkpoint_dir

    try:
        return checkpoint_dir()
    except QuantscopeError:
        return None


@pytest.mark.slow
@pytest.mark.skipif(
    _bundled_checkpoint() is None, reason="the bundled toy checkpoint is not in this checkout yet"
)
def test_cli_quick_demo_on_the_bundled_reasoner(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from quantscope.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "recommendation" in result.output and f"report: {out / 'report.html'}" in result.output
    with Store(out) as store:
        names = {v.name for v in store.variants()}
        assert {"bf16", "w4a16"} <= names
        for name in names:
            assert store.count(name, "synthetic") == 6 * len(DEMO_LEVELS)  # QUICK: 6 per level, k=1
    page = (out / "report.html").read_text()
    assert "quantscope demo — toy reasoner" in page
    # the finding in words and the table by level, in the terminal as in the report
    assert "w4a16 on synthetic: " in result.output and "synthetic by level" in result.output
    assert "<section id='levels'>" in page


@pytest.mark.slow
def test_other_settings_in_the_same_folder_are_refused(demo_run, toy_dir: Path) -> None:
    from dataclasses import replace

    from quantscope.errors import QuantscopeError

    out, _, _ = demo_run
    with pytest.raises(QuantscopeError, match="holds a demo run with other settings"):
        run_demo(out, model=toy_dir, settings=replace(SETTINGS, per_level=2))


@pytest.mark.slow
def test_another_gpu_in_the_same_folder_is_refused(demo_run, toy_dir: Path) -> None:
    from quantscope.errors import QuantscopeError

    out, _, _ = demo_run
    before = (out / "eval" / "w4a16" / "twin.json").read_text()
    with pytest.raises(QuantscopeError, match="evaluated as on B200; for H100 use another --out"):
        run_demo(out, model=toy_dir, settings=SETTINGS, gpu="h100")
    assert (out / "eval" / "w4a16" / "twin.json").read_text() == before
