"""Generations read from other harnesses' files -> ordinary rows in the store.

Every `Generated` record becomes a `ResultRow`, derived the same way whatever the format:

- thinking and answer: the harness's separate reasoning (vLLM's `reasoning` field) when it kept
  one, else the completion split at `</think>` by `engines.base.split_thinking`, the splitter
  every engine uses;
- tokens: the source's counts, else counted with the model's tokenizer (`--model`, a local path
  or hub id; never `trust_remote_code`) as vLLM's `usage` counts them (the completion's tokens,
  plus the end-of-turn token when it stopped); with neither, NULL in the store and the summary
  says they are unknown (analysis leaves such rows out of every token figure; accuracy,
  truncation and the verdicts do not need them);
- finish reason: the source's, else inferred: "length" when the count reached the recorded cap
  or the thinking was never closed, else "stop" (each such row is marked `finish_inferred`, and
  the summary counts them);
- correctness: re-judged by quantscope's judge when the task is one it knows (`tasks.registry.
  canonical_task`, other harnesses' names accepted) or `--judge` names one, else the source's
  own verdict; the run's settings say which (`served["correct"]`).

The settings the source recorded (cap, sampling, chat template, thinking) become the run's
`OutputSettings`; what it did not record stays None ("unknown"), and comparisons say so. The
runs table holds unknown sampling values as NULL, and an unknown cap as the longest completion
counted (the largest budget the rows speak for; analysis's budget grids need one), 0 when none
was counted; the settings JSON keeps None.

Everything is read, derived and checked before the store is touched, so malformed input leaves it
unchanged; rows already stored (same variant, task, item, sample) are skipped, so importing a
file twice adds nothing and an interrupted import resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from quantscope.engines.base import THINK_CLOSE, count_thinking_tokens, split_thinking, think_close_id
from quantscope.errors import QuantscopeError
from quantscope.ingest.records import Generated, Source, SourceSettings
from quantscope.store.database import Store
from quantscope.store.rows import ResultRow, RunRecord, Variant
from quantscope.store.settings import (
    COMPARABLE,
    OutputSettings,
    current_environment,
    differences,
    run_record,
    text_fingerprint,
)
from quantscope.tasks.base import Judgement, Sample

JUDGES = ("math", "choice")
"""The judges `--judge` names for a task quantscope does not know."""

# Finish reasons as harnesses write them -> quantscope's two (inspect_ai's StopReason,
# OpenAI / vLLM's finish_reason); anything else is inferred.
_FINISH = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
}
# The form each known task's judge wants its gold in (see `_sample`; "choice:N": a letter among N
# options, when the source does not list them); other tasks take it as written.
_GOLD = {"aime25": "integer", "math500": "math", "gpqa_diamond": "choice:4", "mmlu_pro": "choice:10"}


@dataclass(frozen=True)
class ImportOptions:
    """How to import: the variant's name (and whether it is the baseline), the task (default: the
    one the source names), a judge for a task quantscope does not know, the model or tokenizer
    (local path or hub id) that counts tokens, settings declared for what the source did not
    record (`declared`, never over what it did), and the weights' memory (bytes, or a checkpoint
    to read it from)."""

    variant: str
    baseline: bool = False
    task: str | None = None
    judge: str | None = None
    model: str | None = None
    declared: SourceSettings = field(default_factory=SourceSettings)
    memory_bytes: int | None = None
    memory_from: str | None = None


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: `rows` generations read, `added` new rows (0 on a repeat), and how each
    derived value was obtained (`correct`, `tokens` in words; `inferred_finish` rows whose finish
    reason was inferred, `unknown_tokens` rows without token counts); `unknown_settings` the
    comparable settings neither the source nor a flag recorded."""

    variant: str
    task: str
    format: str
    files: tuple[str, ...]
    rows: int
    added: int
    correct: str
    tokens: str
    inferred_finish: int
    unknown_tokens: int
    unknown_settings: tuple[str, ...]


def import_generations(
    format_name: str, sources: Sequence[Source], store: Store, options: ImportOptions
) -> ImportSummary:
    """Turn `sources` (one per file, read by the format's reader) into rows of `options.variant`
    and write them to `store`; see the module docstring. Raises QuantscopeError, with the store
    unchanged, for input that cannot be imported."""
    if options.judge is not None and options.judge not in JUDGES:
        raise QuantscopeError(f"--judge {options.judge!r}: choose one of {', '.join(JUDGES)}")
    recorded = _merged(sources)
    settings = options.declared.over(recorded)
    task = _task_name(options.task or recorded.task, sources)
    judge, correct = _judge(task, options.judge)
    gold_form = _GOLD.get(
        task, {"choice": "choice:10"}.get(options.judge or "", options.judge or "as written")
    )
    records = [r for s in sources for r in s.records]
    _check_keys(records)
    thinking = settings.thinking if settings.thinking is not None else _thinks(records)
    counter = _Counter(options.model)
    built = [_row(r, thinking, settings.max_tokens, counter, judge, gold_form) for r in records]
    model = options.model or settings.model or f"imported ({format_name})"
    output = _output_settings(format_name, model, task, thinking, settings, correct, counter.label)
    _check_resume(store, options.variant, task, output)
    spec_hash = _spec_hash(output, options.variant)
    rows = [_result_row(b, options.variant, task, spec_hash) for b in built]
    added = _write(store, format_name, sources, options, model, output, rows)
    return ImportSummary(
        variant=options.variant,
        task=task,
        format=format_name,
        files=tuple(str(s.path) for s in sources),
        rows=len(rows),
        added=added,
        correct=correct,
        tokens=counter.label,
        inferred_finish=sum(b.finish_inferred for b in built),
        unknown_tokens=sum(b.completion_tokens is None for b in built),
        unknown_settings=tuple(
            name
            for name in ("thinking", "max_tokens", "temperature", "top_p", "top_k")
            if getattr(output, name) is None
        ),
    )


# ---- what the sources say -----------------------------------------------------------------


def _merged(sources: Sequence[Source]) -> SourceSettings:
    """The settings the files recorded, the first file's first; files that record a setting
    differently are different runs and are refused."""
    merged = SourceSettings()
    for source in sources:
        for name, value in asdict(source.settings).items():
            known = getattr(merged, name)
            if value is not None and known is not None and value != known:
                raise QuantscopeError(
                    f"{source.path} was generated with {name} {value!r}, the files before it with {known!r}: "
                    "import each run as its own --variant"
                )
        merged = merged.over(source.settings)
    return merged


def _task_name(name: str | None, sources: Sequence[Source]) -> str:
    from quantscope.tasks.registry import canonical_task

    if name is None:
        raise QuantscopeError(f"{sources[0].path} does not name its task: pass --task NAME")
    return canonical_task(name) or name


def _judge(task: str, judge: str | None) -> tuple[Callable[[Sample, str], Judgement] | None, str]:
    """The judge for `task` (None: keep the source's verdicts) and how the run describes it."""
    from quantscope.tasks.registry import canonical_task, get_task

    if canonical_task(task) == task:
        return get_task(task).judge, f"re-judged by quantscope ({task})"
    if judge == "math":
        from quantscope.tasks.math_check import judge_math

        return (lambda sample, answer: judge_math(sample.target, answer)), "re-judged by quantscope (math)"
    if judge == "choice":
        from quantscope.tasks.choice import judge_choice

        return judge_choice, "re-judged by quantscope (choice)"
    return None, "the source's own score"


def _check_keys(records: Sequence[Generated]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for record in records:
        key = (record.item_id, record.sample)
        if key in seen:
            raise QuantscopeError(
                f"{record.where}, field 'id': item {record.item_id!r} sample {record.sample} again (first at "
                f"{seen[key]}); give each generation its own id or sample index"
            )
        seen[key] = record.where


def _thinks(records: Sequence[Generated]) -> bool:
    """Thinking mode when nothing recorded it: on when any generation kept reasoning or closed a
    think block."""
    return any(r.reasoning is not None or THINK_CLOSE in r.text for r in records)


# ---- one record -> one row ----------------------------------------------------------------


@dataclass(frozen=True)
class _Built:
    record: Generated
    text: str
    thinking: str
    answer: str
    completion_tokens: int | None
    thinking_tokens: int | None
    finish_reason: str
    finish_inferred: bool
    target: str
    judgement: Judgement


def _row(
    record: Generated,
    thinking_on: bool,
    cap: int | None,
    counter: _Counter,
    judge: Callable[[Sample, str], Judgement] | None,
    gold_form: str,
) -> _Built:
    text, thinking, answer, closed = _split(record, thinking_on)
    given = _FINISH.get((record.finish_reason or "").strip().lower())
    counted = record.completion_tokens if record.completion_tokens is not None else counter.count(text)
    finish = given or (
        "length" if not closed or (cap is not None and counted is not None and counted >= cap) else "stop"
    )
    if record.completion_tokens is None and counted is not None and finish == "stop":
        counted += 1  # vLLM's usage counts the end-of-turn token of a generation that stopped
    thoughts = _thinking_tokens(record, text, thinking, answer, counted, finish, counter)
    target, judgement = _judged(record, answer, judge, gold_form)
    return _Built(
        record=record,
        text=text,
        thinking=thinking,
        answer=answer,
        completion_tokens=counted if thoughts is not None else None,
        thinking_tokens=thoughts if counted is not None else None,
        finish_reason=finish,
        finish_inferred=given is None or record.finish_inferred,
        target=target,
        judgement=judgement,
    )


def _split(record: Generated, thinking_on: bool) -> tuple[str, str, str, bool]:
    """(whole completion, thinking, answer, whether the thinking was closed)."""
    if record.reasoning is not None:  # kept apart by the server: rebuild the completion around the tag
        content = record.text
        text = f"{record.reasoning}{THINK_CLOSE}{content}" if content else record.reasoning
        return text, record.reasoning.strip(), content.replace(THINK_CLOSE, "").strip(), bool(content.strip())
    thinking, answer = split_thinking(record.text, thinking_on)
    return record.text, thinking, answer, not thinking_on or THINK_CLOSE in record.text


def _thinking_tokens(
    record: Generated,
    text: str,
    thinking: str,
    answer: str,
    completion: int | None,
    finish: str,
    counter: _Counter,
) -> int | None:
    if record.thinking_tokens is not None:
        return record.thinking_tokens
    if not thinking:
        return 0
    if not answer and completion is not None:  # all thinking: every token but the end-of-turn one
        return completion - (finish == "stop")
    return counter.thinking(text, thinking)


def _judged(
    record: Generated, answer: str, judge: Callable[[Sample, str], Judgement] | None, gold_form: str
) -> tuple[str, Judgement]:
    """(the target stored, the judgement): quantscope's judge on the answer, or the source's verdict."""
    if judge is None:
        if record.correct is None:
            raise QuantscopeError(
                f"{record.where}, field 'correct': no verdict, and quantscope does not know this task; "
                "map the source's score with --field correct=PATH, or a gold answer with --field gold=PATH "
                "and --judge math|choice"
            )
        return record.gold or "", Judgement(record.correct, None)
    if record.gold is None or not record.gold.strip():
        raise QuantscopeError(
            f"{record.where}, field 'gold': no gold answer to judge against; map it with --field gold=PATH"
        )
    sample = _sample(record, gold_form)
    return sample.target, judge(sample, answer)


def _sample(record: Generated, gold_form: str) -> Sample:
    """The item as the judge sees it, the gold in the judge's form (an integer for AIME, a letter
    for multiple choice, a math answer's last `\\boxed{}` when the gold is a worked solution)."""
    from quantscope.tasks.answers import CHOICE_LETTERS, last_boxed, parse_integer

    gold = (record.gold or "").strip()
    if gold_form == "integer":
        value = parse_integer(last_boxed(gold) or gold)
        if value is None:
            raise QuantscopeError(
                f"{record.where}, field 'gold': {gold!r} is not an integer; AIME answers are"
            )
        return Sample(record.item_id, record.prompt, str(value))
    if gold_form.startswith("choice:"):
        choices = record.choices or tuple(CHOICE_LETTERS[: int(gold_form.partition(":")[2])])
        return Sample(record.item_id, record.prompt, _letter(record, gold, choices), choices)
    if gold_form == "math":
        return Sample(record.item_id, record.prompt, last_boxed(gold) or gold)
    return Sample(record.item_id, record.prompt, gold)


def _letter(record: Generated, gold: str, choices: tuple[str, ...]) -> str:
    from quantscope.tasks.answers import CHOICE_LETTERS

    letters = CHOICE_LETTERS[: len(choices)]
    bare = gold.strip().strip("()").strip()
    if len(bare) == 1 and bare.upper() in letters:
        return bare.upper()
    if bare.isdigit() and int(bare) < len(letters):
        return letters[int(bare)]
    if gold in choices:
        return letters[choices.index(gold)]
    raise QuantscopeError(
        f"{record.where}, field 'gold': {gold!r} names no option (a letter {letters[0]}-{letters[-1]}, "
        "an index, or an option's text); map the gold letter with --field gold=PATH"
    )


class _Counter:
    """Token counts with the model's tokenizer, loaded on first use; None everywhere without one."""

    def __init__(self, model: str | None) -> None:
        self.model = model
        self._tokenizer: Any = None

    @property
    def label(self) -> str:
        """How tokens are obtained, in words (from the options alone, so every file of a run says
        the same and a resume compares equal)."""
        if self.model is None:
            return "the source's where it has them, else unknown (pass --model to count them)"
        return f"the source's, else counted with {self.model}'s tokenizer"

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.model, trust_remote_code=False)
            except (OSError, ValueError) as exc:
                raise QuantscopeError(
                    f"--model {self.model}: no tokenizer loads from it ({exc}); pass the model's local "
                    "directory or hub id, or leave --model out (token counts are then unknown)"
                ) from None
        return self._tokenizer

    def count(self, text: str) -> int | None:
        """Tokens of a completion (no special tokens added), or None without a tokenizer."""
        if self.model is None:
            return None
        return len(self.tokenizer().encode(text, add_special_tokens=False))

    def thinking(self, text: str, thinking: str) -> int | None:
        """Tokens before `</think>`, counted in the completion's own ids when the tag is one token
        (as the engines count them), else the thinking's own tokens; None without a tokenizer."""
        if self.model is None:
            return None
        tokenizer = self.tokenizer()
        close = think_close_id(tokenizer)
        if close is not None:
            return count_thinking_tokens(tokenizer.encode(text, add_special_tokens=False), close)
        return len(tokenizer.encode(thinking, add_special_tokens=False))


# ---- the run's settings and the store -----------------------------------------------------


def _output_settings(
    format_name: str,
    model: str,
    task: str,
    thinking: bool,
    settings: SourceSettings,
    correct: str,
    tokens: str,
) -> OutputSettings:
    """The run's settings: what the source (or a flag) recorded, None where neither did. `served`
    says where the rows came from and how their correctness and tokens were obtained."""
    served: dict[str, Any] = {"imported_from": format_name, "correct": correct, "tokens": tokens}
    if settings.chat_template_sha is not None:
        served["chat_template_sha"] = settings.chat_template_sha
    # the comparable settings (thinking is decided above) and the seed, as the source recorded them
    names = [name for name in COMPARABLE if name != "thinking"] + ["seed"]
    values: dict[str, Any] = {name: getattr(settings, name) for name in names}
    return OutputSettings(
        engine=f"import:{format_name}", model=model, task=task, thinking=thinking, served=served, **values
    )


def _check_resume(store: Store, variant: str, task: str, settings: OutputSettings) -> None:
    """Refuse rows of (variant, task) already stored under other settings: a resume or a repeat
    must be the same run."""
    for spec_hash in sorted(store.spec_hashes(variant, task)):
        run = store.run(spec_hash)
        if run is None or run.settings_json is None:
            continue
        changed = differences(OutputSettings.from_json(run.settings_json), settings)
        if changed:
            raise QuantscopeError(
                f"variant {variant!r} already has {task!r} rows from another run ({', '.join(changed)}): "
                "import these under a new --variant name"
            )


_NOT_ROW_FIELDS = ("record", "judgement")


def _result_row(built: _Built, variant: str, task: str, spec_hash: str) -> ResultRow:
    record = built.record
    as_built = {f.name: getattr(built, f.name) for f in fields(built) if f.name not in _NOT_ROW_FIELDS}
    return ResultRow(
        **as_built,  # text, thinking, answer, token counts, finish reason (and whether inferred), target
        variant=variant,
        task=task,
        item_id=record.item_id,
        sample=record.sample,
        spec_hash=spec_hash,
        seed=record.seed,
        answer_tokens=_answer_tokens(built),
        seconds=record.seconds or 0.0,
        **asdict(built.judgement),  # correct, extracted
        created=time.time(),
        prompt_sha=record.prompt_hash or text_fingerprint(record.prompt, built.target),
    )


def _write(
    store: Store,
    format_name: str,
    sources: Sequence[Source],
    options: ImportOptions,
    model: str,
    settings: OutputSettings,
    rows: Sequence[ResultRow],
) -> int:
    """Register the variant and the run, then insert the rows not stored yet, with their trace
    signals (read from the text now, as the eval writer does); returns how many."""
    from quantscope.analysis.signal_table import signal_batch
    from quantscope.quantize.weight_memory import variant_memory

    memory = variant_memory(model, options.memory_bytes, options.memory_from, hub=False)
    store.put_variant(Variant(options.variant, model, memory.nbytes, None, options.baseline, memory.source))
    spec_hash = rows[0].spec_hash if rows else _spec_hash(settings, options.variant)
    store.record_run(_run_record(format_name, sources, options.variant, settings, rows, spec_hash))
    store.set_run_settings(spec_hash, settings.to_json(), current_environment("imported").to_json())
    return store.write_results(rows, signal_batch(rows))


def _spec_hash(settings: OutputSettings, variant: str) -> str:
    """An import's run key: its settings and its variant. The settings alone would not do: two
    files with the same recorded settings (a baseline and its quantized twin, neither naming its
    model) are two runs."""
    return hashlib.sha256(f"{settings.hash} {variant}".encode()).hexdigest()[:16]


def _answer_tokens(built: _Built) -> int | None:
    if built.completion_tokens is None or built.thinking_tokens is None:
        return None
    return max(built.completion_tokens - built.thinking_tokens, 0)


def _run_record(
    format_name: str,
    sources: Sequence[Source],
    variant: str,
    settings: OutputSettings,
    rows: Sequence[ResultRow],
    spec_hash: str,
) -> RunRecord:
    # no recorded cap: the longest completion counted, the largest budget these rows speak for (0:
    # none counted, the cap unknown; displays show "?")
    longest = max((r.completion_tokens or 0 for r in rows), default=0)
    spec = json.dumps({"import": format_name, "files": [str(s.path) for s in sources]})
    return run_record(settings, variant, spec_hash, spec, max_tokens=longest)
