"""`quantscope import inspect`: inspect_ai logs, written with inspect_ai's own classes and
`write_eval_log` (inspect_ai/log/_file.py), read back through `read_eval_log`."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from quantscope.errors import QuantscopeError
from quantscope.ingest import ImportOptions, import_files
from quantscope.store.database import Store
from quantscope.store.settings import OutputSettings
from quantscope.toy.bundled import checkpoint_dir

TOY = str(checkpoint_dir())


def write_log(path: Path) -> Path:
    from inspect_ai.log import (
        EvalConfig,
        EvalDataset,
        EvalLog,
        EvalPlan,
        EvalSample,
        EvalSpec,
        write_eval_log,
    )
    from inspect_ai.model import (
        ChatCompletionChoice,
        ChatMessageAssistant,
        ContentReasoning,
        ContentText,
        GenerateConfig,
        ModelOutput,
        ModelUsage,
    )
    from inspect_ai.scorer import Score

    def sample(
        item: str, epoch: int, thinking: str, answer: str, stop: str, tokens: int, verdict: str
    ) -> EvalSample:
        message = ChatMessageAssistant(
            content=[ContentReasoning(reasoning=thinking), ContentText(text=answer)]
        )
        usage = ModelUsage(input_tokens=5, output_tokens=tokens, total_tokens=tokens + 5, reasoning_tokens=3)
        output = ModelOutput(
            model="m", choices=[ChatCompletionChoice(message=message, stop_reason=stop)], usage=usage
        )
        return EvalSample(
            id=item,
            epoch=epoch,
            input="What is 3+4?",
            target="7",
            output=output,
            scores={"match": Score(value=verdict)},
        )

    spec = EvalSpec(
        created="2026-05-01T10:00:00",
        task="aime25",
        dataset=EvalDataset(),
        model="vllm/Qwen/Qwen3-8B",
        config=EvalConfig(),
    )
    config = GenerateConfig(max_tokens=64, temperature=0.6, top_p=0.95, top_k=20, seed=3)
    log = EvalLog(
        eval=spec,
        plan=EvalPlan(config=config),
        samples=[
            sample("1", 1, "3 and 4 make 7.", "\\boxed{7}", "stop", 12, "I"),
            sample("1", 2, "Adding", "", "max_tokens", 64, "I"),
        ],
    )
    write_eval_log(log, str(path))
    return path


@pytest.mark.parametrize("suffix", [".eval", ".json"])
def test_an_inspect_log_becomes_rows(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip(
        "inspect_ai",
        reason="inspect_ai is an optional extra (pip install 'quantscope[inspect]'); not installed here",
    )
    path = write_log(tmp_path / f"log{suffix}")
    with Store.open(tmp_path) as store:
        import_files("inspect", [path], store, ImportOptions("q4", model=TOY))
        rows = {(r["item_id"], r["sample"]): r for r in store.rows("q4")}
        settings = OutputSettings.from_json(store.runs("q4")[0].settings_json)
        again = import_files("inspect", [path], store, ImportOptions("q4", model=TOY))
        assert len(store.rows("q4")) == 2
    assert set(rows) == {("1", 0), ("1", 1)}  # epochs as samples, from 0
    done, cut = rows[("1", 0)], rows[("1", 1)]
    assert (done["thinking"], done["answer"], done["finish_reason"], done["completion_tokens"]) == (
        "3 and 4 make 7.",
        "\\boxed{7}",
        "stop",
        12,
    )
    assert (cut["finish_reason"], cut["completion_tokens"]) == ("length", 64)
    assert (done["thinking_tokens"], done["answer_tokens"]) == (3, 9)  # usage.reasoning_tokens
    # aime25 is re-judged by quantscope: the source's "I" verdict is overruled for the right answer
    assert done["correct"] == 1 and cut["correct"] == 0
    assert (settings.temperature, settings.top_p, settings.top_k, settings.max_tokens, settings.seed) == (
        0.6,
        0.95,
        20,
        64,
        3,
    )
    del again


def test_without_inspect_ai_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = builtins.__import__

    def no_inspect(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("inspect_ai"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_inspect)
    path = tmp_path / "log.eval"
    path.write_bytes(b"PK")
    with (
        Store.open(tmp_path) as store,
        pytest.raises(QuantscopeError, match=r"pip install 'quantscope\[inspect\]'"),
    ):
        import_files("inspect", [path], store, ImportOptions("q4", model=TOY))


def test_the_cli_prints_the_extra_unmangled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rich would read `[inspect]` as markup and drop it from the printed error."""
    from typer.testing import CliRunner

    from quantscope.cli import app
    from quantscope.cli.app import err_console

    monkeypatch.setattr(err_console, "width", 400)
    real = builtins.__import__
    monkeypatch.setattr(
        builtins,
        "__import__",
        lambda name, *a, **k: (
            (_ for _ in ()).throw(ImportError(name)) if name.startswith("inspect_ai") else real(name, *a, **k)
        ),
    )
    path = tmp_path / "log.eval"
    path.write_bytes(b"PK")
    args = ["import", "inspect", str(path), "--variant", "q4", "--model", TOY, "--store", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "pip install 'quantscope[inspect]'" in result.output, result.output
