"""The HTML report (self-contained, escaped, rendered by headless Chromium), terminal tables and CLI."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.cli.app import console
from quantscope.report import build_report
from quantscope.report.html import figures_json
from quantscope.report.plots import ecdf
from quantscope.store.database import Store
from quantscope.util import write_atomic
from tests.test_compare import Outcome, add_variant, outcomes

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
# Text a model could emit: it must show up as text and never run.
EVIL_THINKING = "step one </pre></details><script>document.body.dataset.pwned='script'</script> done"
EVIL_ANSWER = "\\boxed{<img src=x onerror=\"document.body.dataset.pwned='img'\">}"
EVIL_TEXT = f"<think>{EVIL_THINKING}</think>{EVIL_ANSWER}"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bf16 / fp8 / a truncating w4a16 / a broken nvfp4 on one task, with hostile generated text."""
    path = tmp_path_factory.mktemp("report_store")

    def hostile(rows: list[Outcome]) -> list[Outcome]:
        return [Outcome(o.item, o.sample, o.correct, o.truncated, o.tokens, None, EVIL_TEXT) for o in rows]

    with Store(path) as store:
        rows = outcomes(40, 2, lambda i, j: i % 10 != 0, tokens=lambda i, j: 80 + (7 * i + 13 * j) % 60)
        add_variant(store, "bf16", rows, memory=16_000_000, recipe="bf16")
        rows = outcomes(40, 2, lambda i, j: i % 10 != 0, tokens=lambda i, j: 85 + (7 * i + 11 * j) % 60)
        add_variant(store, "fp8", rows, memory=8_500_000, recipe="fp8")
        rows = outcomes(
            40, 2, lambda i, j: i % 10 != 0, truncated=lambda i, j: i % 3 == 1, tokens=lambda i, j: 120 + i
        )
        add_variant(store, "w4a16", hostile(rows), memory=4_600_000, recipe="w4a16")
        rows = outcomes(40, 2, lambda i, j: i % 2 == 0, tokens=lambda i, j: 100 + (3 * i + j) % 80)
        add_variant(store, "nvfp4", rows, memory=4_500_000, recipe="nvfp4")
        store.write_strata("synthetic", "level", {f"i{i:03d}": str(1 + i // 20) for i in range(40)})
    return path


@pytest.fixture(scope="module")
def report(store_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_report(store_dir, tmp_path_factory.mktemp("out") / "report.html", budget_bytes=10_000_000)


def test_report_is_self_contained_and_shows_the_numbers(report) -> None:
    page = report.path.read_text()
    # offline: plotly inlined, nothing fetched from anywhere
    assert "plotly.js" in page.lower() and len(page) > 3_000_000
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]?(https?:)?//", page)
    # the recommendation and the demo-style finding
    assert "For a 10.00 MB budget: run fp8 (8.50 MB, 90.0% accuracy)" in page
    assert "loss mostly explained by truncation" in page
    assert "needs 16.00 MB, over the 10.00 MB budget" in page
    # per-task table: w4a16 lost 12 of 40 items (i%3==1 and i%10!=0) -> -30.0 points, significant
    w4 = report.analysis.comparison("w4a16", "synthetic")
    assert w4.delta == pytest.approx(-12 / 40)
    assert "-30.0*" in page
    for element in ("plot-pareto", "plot-truncation", "plot-budget-0", "plot-thinking-0"):
        assert f"id='{element}'" in page
    # why thinking differs: one row per variant, each variant with its paired delta and CI
    assert "<section id='traces'><h2>Why thinking differs</h2>" in page
    # the finding in words comes first, before the recommendation
    assert page.index("<section id='findings'>") < page.index("<section id='recommendation'>")
    # the median thinking (cut samples censored at the cap: numpy's median of all, a third cut)
    # rose significantly: 98.5 -> 139.5 tokens, the CI's lower end above +0%
    finding = re.search(
        r"<b>w4a16 on synthetic</b>: median thinking 98 → 140 tokens \(\+42% \[\+(\d+)%", page
    )
    assert finding is not None and int(finding.group(1)) > 0 and "loss explained by truncation" in page
    assert report.traces is not None and len(report.traces.comparisons) == 3
    # by level: one row per level, one column per variant
    section = page[page.index("<section id='levels'>") :]
    section = section[: section.index("</section>")]
    assert section.count("<tr><td class='text'>level ") == 2 and "<th>nvfp4</th>" in section
    assert len(report.levels) == 1 and report.levels[0].levels == ("1", "2")


def test_generated_text_is_escaped(report) -> None:
    page = report.path.read_text()
    assert "document.body.dataset.pwned" in page  # the example is shown ...
    assert "<script>document.body" not in page  # ... but never as markup
    assert "&lt;script&gt;document.body.dataset.pwned=&#x27;script&#x27;&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=" in page
    # only our three script elements: plotly, the figure data, the driver
    assert page.count("<script") == 3


def test_figures_json_cannot_close_a_script() -> None:
    text = figures_json({"a": {"layout": {"title": "</script><script>alert(1)</script>&"}}})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["a"]["layout"]["title"] == "</script><script>alert(1)</script>&"


def test_figures_carry_every_variant(report) -> None:
    from quantscope.report.plots import all_figures

    figures = all_figures(report.analysis, report.recommendation)
    pareto_names = {t["name"] for t in figures["plot-pareto"]["data"] if t.get("mode") == "markers+text"}
    assert pareto_names == {"bf16", "fp8", "w4a16", "nvfp4"}
    truncation = figures["plot-truncation"]["data"][0]
    assert dict(zip(truncation["x"], truncation["y"], strict=True))["w4a16"] == pytest.approx(100 * 26 / 80)
    budget_names = [t["name"] for t in figures["plot-budget-0"]["data"]]
    assert budget_names == ["bf16", "fp8", "w4a16", "nvfp4"]


def test_ecdf_is_thinned_but_ends_at_100() -> None:
    x, y = ecdf(list(range(1000)), points=50)
    assert len(x) <= 51 and x[0] == 0.0 and x[-1] == 999 and y[-1] == 100.0
    assert all(b >= a for a, b in itertools.pairwise(y))


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    out.write_text("old")
    write_atomic(out, "new")
    assert out.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=20000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_chromium_renders_every_plot_and_runs_no_generated_script(report, tmp_path: Path) -> None:
    # control: the console-error detector does see a script error on a broken page
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    control = _chromium(["--dump-dom", broken.as_uri()], tmp_path)
    assert _console_errors(control.stderr), control.stderr[-2000:]

    done = _chromium(["--dump-dom", report.path.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body is not None
    figures = 2 + 2 * len(report.analysis.tasks)
    assert f'data-plots-rendered="{figures}"' in body.group(0), body.group(0)
    assert "data-errors" not in body.group(0) and "data-pwned" not in body.group(0)
    assert '<section id="traces"><h2>Why thinking differs</h2>' in done.stdout
    assert '<section id="levels"><h2>By level</h2>' in done.stdout
    assert _console_errors(done.stderr) == []
    # plotly drew SVG into each plot element
    assert done.stdout.count('class="main-svg"') >= figures
    # the generated <script> is visible as text in the page
    assert "&lt;script&gt;document.body.dataset.pwned='script'&lt;/script&gt;" in done.stdout


def test_cli_compare_recommend_report(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the shared console may hold a fixed width by now (another test's monkeypatch restored one)
    monkeypatch.setattr(console, "width", 220)
    runner = CliRunner()
    env = {"COLUMNS": "220"}
    compared = runner.invoke(app, ["compare", "--store", str(store_dir)], env=env)
    assert compared.exit_code == 0, compared.output
    assert "vs baseline bf16" in compared.output
    assert "w4a16 on synthetic: accuracy loss mostly explained by truncation" in compared.output
    recommended = runner.invoke(app, ["recommend", "--budget", "6MB", "--store", str(store_dir)], env=env)
    assert recommended.exit_code == 0, recommended.output
    assert "For a 6.00 MB budget: run w4a16" in recommended.output
    out = tmp_path / "r.html"
    written = runner.invoke(app, ["report", "--out", str(out), "--store", str(store_dir)], env=env)
    assert written.exit_code == 0, written.output
    assert out.is_file() and f"wrote {out}" in written.output.replace("\n", "")
    missing = runner.invoke(app, ["report", "--store", str(tmp_path / "nothing")], env=env)
    assert missing.exit_code == 2 and "no quantscope store" in missing.output
    bad = runner.invoke(app, ["recommend", "--budget", "lots", "--store", str(store_dir)], env=env)
    assert bad.exit_code == 2 and "cannot read size" in bad.output


def test_compare_reads_at_80_columns(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A narrow terminal gets the compact tables: every header and verdict whole, nothing cut."""
    monkeypatch.setattr(console, "width", 80)
    compared = CliRunner().invoke(app, ["compare", "--store", str(store_dir)], env={"COLUMNS": "80"})
    assert compared.exit_code == 0, compared.output
    lines = compared.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in compared.output
    for header in ("variant", "acc", "Δ pts [95% CI]", "cut (Δ)", "verdict", "hesit./1k", "not given"):
        assert header in compared.output
    assert any("w4a16" in line and "worse: trunc." in line for line in lines)
    assert "w4a16 on synthetic: accuracy loss mostly explained by truncation" in " ".join(lines)
    monkeypatch.setattr(console, "width", 200)
    wide = CliRunner().invoke(app, ["compare", "--store", str(store_dir)], env={"COLUMNS": "200"})
    assert "acc finished" in wide.output and "cut, looping" in wide.output


def test_recommend_on_a_gpu_reads_at_80_columns(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recommendation with a GPU's capacity columns: under 120 columns the candidates and the
    capacity are two narrow tables, every header whole."""
    monkeypatch.setattr(console, "width", 80)
    from quantscope.toy import checkpoint_dir

    config = str(checkpoint_dir() / "config.json")  # the store's variants are not checkpoints
    args = [
        "recommend",
        "--store",
        str(store_dir),
        "--gpu",
        "H100",
        "--budget",
        "10MB",
        "--model-config",
        config,
    ]
    narrow = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    assert max(len(line) for line in narrow.output.splitlines()) <= 80
    assert "…" not in narrow.output
    for header in ("variant", "mem", "Δ pts", "fits", "why", "at once", "decode ≤ tok/s", "correct/GPU-h"):
        assert header in narrow.output
    assert any(line.strip("│ ").startswith("fp8 ★") for line in narrow.output.splitlines())
