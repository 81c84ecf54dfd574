"""The demo pipeline end to end on a real toy-architecture checkpoint: plan, RTN export, twin, eval,
store, report; and a second run that resumes instead of recomputing."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from quantscope.demo import DEMO_LEVELS, QUICK, DemoSettings, run_demo
from quantscope.quantize.twin import write_twin
from quantscope.store.database import Store

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
    # (the untrained toy scores 0% everywhere: the numbers shown are checked on the trained one,
    # in test_cli_demo_shows_what_its_store_holds)
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


SMALL = DemoSettings(
    presets=("bf16", "nvfp4"), per_level=4, k=1, levels=(2, 6), calib_samples=4, calib_seqlen=64
)
"""`demo --quick` made small enough for every commit: the baseline and NVFP4 (evaluated through its
B200 twin, activations rounded too), an easy level and the hardest (where NVFP4 loses an answer),
4 problems each, one quantization. w4a16's export and twin are checked on `demo_run`; the real quick
demo runs under `pytest -m full` (test_cli_quick_demo_on_the_bundled_reasoner)."""


def _run_cli_demo(out: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`quantscope demo --quick --out OUT` as a user runs it; returns what it printed."""
    from typer.testing import CliRunner

    from quantscope.cli import app
    from quantscope.cli.app import console

    # wide enough that no finding or table row wraps, as each is checked on its own line (the
    # shared console fixed its width when it was created, so COLUMNS set now is too late)
    monkeypatch.setattr(console, "width", 400)
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output


def _stored(out: Path) -> dict[str, list[tuple[str, int, str]]]:
    """variant -> its (item id, correct, finish reason) rows, read with plain SQL from the store."""
    with sqlite3.connect(out / "quantscope.db") as db:
        rows = db.execute("SELECT variant, item_id, correct, finish_reason FROM results").fetchall()
    by_variant: dict[str, list[tuple[str, int, str]]] = {}
    for variant, item, correct, finish in rows:
        by_variant.setdefault(variant, []).append((item, correct, finish))
    return by_variant


def _rate(rows: list[tuple[str, int, str]], which: str) -> float:
    """The share of `rows` that are correct ("correct") or cut at the cap ("cut")."""
    hits = [r[1] == 1 if which == "correct" else r[2] == "length" for r in rows]
    return sum(hits) / len(hits)


def _table_rows(output: str, title: str) -> dict[str, list[str]]:
    """The rows of the boxed table printed under `title`: first cell -> its cells."""
    rows = {}
    for line in output.split(title, 1)[1].splitlines()[1:]:
        if line.startswith("└"):
            break
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if line.startswith("│") and cells[0]:
            rows[cells[0]] = cells
    return rows


def _tensor_bytes(directory: Path) -> int:
    """Bytes of every tensor in a checkpoint's safetensors files, read with safetensors itself."""
    total = 0
    for shard in directory.glob("*.safetensors"):
        with safe_open(shard, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (a safe_open handle is no dict)
                tensor = f.get_tensor(name)
                total += tensor.numel() * tensor.element_size()
    return total


def _check_demo_values(out: Path, output: str, settings: DemoSettings) -> dict[str, tuple[float, float]]:
    """What `demo` printed and wrote holds the numbers of the generations it stored: accuracy and
    truncation per variant and per level, the paired accuracy change in the table and in each
    finding, and a recommendation that fits the default budget (half the BF16 weights). Returns
    variant -> (accuracy, truncation rate) as stored."""
    stored = _stored(out)
    assert sorted(stored) == sorted(settings.presets)
    assert {len(rows) for rows in stored.values()} == {settings.per_level * len(settings.levels) * settings.k}
    accuracy = {v: _rate(rows, "correct") for v, rows in stored.items()}
    cut = {v: _rate(rows, "cut") for v, rows in stored.items()}
    page = (out / "report.html").read_text()
    table = _table_rows(output, "vs baseline bf16 on synthetic")
    for variant in stored:
        _, _memory, items, acc, delta, truncated, *_ = table[variant]
        assert int(items) == settings.per_level * len(settings.levels)
        assert acc.startswith(f"{100 * accuracy[variant]:.1f}%") and f"{100 * accuracy[variant]:.1f}%" in page
        assert truncated.startswith(f"{100 * cut[variant]:.1f}%")
        if variant == "bf16":
            assert delta == "baseline"
            continue
        change = f"{100 * (accuracy[variant] - accuracy['bf16']):+.1f}"  # every item is paired
        assert delta.startswith(change) and f"({100 * (cut[variant] - cut['bf16']):+.1f})" in truncated
        finding = next(line for line in output.splitlines() if line.startswith(f"{variant} on synthetic: "))
        assert f"accuracy {change} pts" in finding
    # the table by level: "accuracy % / cut %" per level, from the rows of that level alone
    for line in output.split("synthetic by level", 1)[1].splitlines():
        variant, *cells = line.split() or [""]
        if variant in stored and len(cells) == len(settings.levels):
            for level, cell in zip(settings.levels, cells, strict=True):
                rows = [r for r in stored[variant] if r[0].startswith(f"L{level}-")]
                expected = f"{100 * _rate(rows, 'correct'):.0f}/{100 * _rate(rows, 'cut'):.0f}"
                assert cell.rstrip("*") == expected, (variant, level)
    # issue 32: no GPU throughput for a toy of a few MB (hundreds of thousands of answers at once)
    assert "GPU-h" not in output and "GPU-h" not in page and "at once" not in output
    # the pick fits half the BF16 weights and shows its own accuracy
    from quantscope.toy import checkpoint_dir

    budget = _tensor_bytes(checkpoint_dir()) // 2
    pick = re.search(r"run (\S+) \([^,]+, ([\d.]+)% accuracy\)", output)
    assert pick is not None, output
    assert pick[1] != "bf16" and _tensor_bytes(out / "checkpoints" / pick[1]) <= budget
    assert pick[2] == f"{100 * accuracy[pick[1]]:.1f}"
    return {v: (accuracy[v], cut[v]) for v in stored}


@pytest.mark.slow
def test_cli_demo_shows_what_its_store_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick demo's command on the bundled (trained) reasoner, on `SMALL` settings."""
    monkeypatch.setattr("quantscope.demo.QUICK", SMALL)  # the same command, on fewer variants and items
    out = tmp_path / "demo"
    output = _run_cli_demo(out, monkeypatch)
    assert f"report: {out / 'report.html'}" in output
    stored = _check_demo_values(out, output, SMALL)
    # each variant's numbers differ from the other's, so a number shown for the wrong one fails
    assert len(set(stored.values())) == len(stored), stored


@pytest.mark.full
@pytest.mark.slow
def test_cli_quick_demo_on_the_bundled_reasoner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`quantscope demo --quick` itself, as the README runs it (about two minutes): `pytest -m full`."""
    out = tmp_path / "demo"
    output = _run_cli_demo(out, monkeypatch)
    assert "recommendation" in output and f"report: {out / 'report.html'}" in output
    with Store(out) as store:
        names = {v.name for v in store.variants()}
        assert {"bf16", "w4a16"} <= names
        for name in names:
            assert store.count(name, "synthetic") == 6 * len(DEMO_LEVELS)  # QUICK: 6 per level, k=1
    page = (out / "report.html").read_text()
    assert "quantscope demo — toy reasoner" in page
    # the finding in words and the table by level, in the terminal as in the report
    assert "w4a16 on synthetic: " in output and "synthetic by level" in output
    assert "<section id='levels'>" in page
    _check_demo_values(out, output, QUICK)


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
