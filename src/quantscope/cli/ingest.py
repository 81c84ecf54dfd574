"""`quantscope import`: other harnesses' generations into the store, as rows compare, recommend,
report and trace read like any generated variant's."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from quantscope.cli.app import StoreOpt, app, console, friendly_errors, size_or_none, store_dir

if TYPE_CHECKING:
    from quantscope.ingest import ImportOptions


@app.command(name="import")
@friendly_errors
def import_(
    format: Annotated[
        str, typer.Argument(help="json | lm-eval | eee | lighteval | inspect: the harness that wrote them.")
    ],
    paths: Annotated[list[Path], typer.Argument(help="The files (lm-eval: samples_<task>_<date>.jsonl).")],
    variant: Annotated[str, typer.Option(help="Name of the variant these generations came from.")],
    baseline: Annotated[bool, typer.Option("--baseline", help="Mark this variant as the baseline.")] = False,
    task: Annotated[
        str | None,
        typer.Option(
            help="Task name (default: the one the files name). AIME25, MATH-500, GPQA-Diamond and MMLU-Pro, "
            "under lm-eval's, lighteval's, EvalScope's or inspect_evals' names too, are re-judged by "
            "quantscope."
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(help="math | choice: re-judge a task quantscope does not know against --field gold."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="The model (local dir or hub id) whose tokenizer counts tokens the files lack."),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            help="json: NAME=PATH, where a field lives (dotted path, e.g. text=choices.0.message.content); "
            "NAME one of id, sample, prompt, text, reasoning, gold, choices, correct, completion_tokens, "
            "thinking_tokens, finish_reason, seconds. Repeatable."
        ),
    ] = None,
    thinking: Annotated[
        bool | None, typer.Option("--thinking/--no-thinking", help="Reasoning mode, if the files do not say.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature, if the files do not say.")
    ] = None,
    top_p: Annotated[float | None, typer.Option(help="top_p, if the files do not say.")] = None,
    top_k: Annotated[int | None, typer.Option(help="top_k (0 = off), if the files do not say.")] = None,
    min_p: Annotated[float | None, typer.Option(help="min_p (0 = off), if the files do not say.")] = None,
    presence_penalty: Annotated[float | None, typer.Option(help="If the files do not say.")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="If the files do not say.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Generation cap in tokens, if the files do not say.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed, if the files do not say.")] = None,
    memory: Annotated[str | None, typer.Option(help="This variant's weight memory, e.g. 30.3GB.")] = None,
    memory_from: Annotated[
        str | None, typer.Option(help="Read the weight memory from a checkpoint dir with the same weights.")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Import generations another harness wrote (lm-eval, plain JSON/JSONL) as a variant in the store.

    Thinking and answer are split at the think tags, tokens counted with --model's tokenizer where the
    files have no counts, finish reasons inferred where they record none, and known tasks re-judged.
    Importing the same file again adds nothing.
    """
    flags = dict(locals())
    from quantscope.cli.views.ingest import import_lines
    from quantscope.ingest import import_files
    from quantscope.ingest.plain_json import parse_fields
    from quantscope.store.database import Store

    with Store.open(store_dir(store)) as opened:
        summary = import_files(format, paths, opened, _options(flags), parse_fields(field or []))
    console.print(import_lines(summary), highlight=False)


def _options(flags: dict[str, Any]) -> ImportOptions:
    """import's flags as the stage's options: the settings flags declare what the files do not record."""
    from quantscope.ingest import ImportOptions, SourceSettings

    names = {f.name for f in fields(SourceSettings)} - {"task", "model", "chat_template_sha"}
    declared = SourceSettings(**{name: flags[name] for name in names})
    return ImportOptions(
        variant=flags["variant"],
        baseline=flags["baseline"],
        task=flags["task"],
        judge=flags["judge"],
        model=flags["model"],
        declared=declared,
        memory_bytes=size_or_none(flags["memory"]),
        memory_from=flags["memory_from"],
    )
