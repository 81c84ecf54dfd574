"""The task registry: benchmark names -> `"module:Class"` strings, imported only when asked for.

`get_task("aime25", path="aime.jsonl")` returns a task; its module is imported only then, so
listing tasks or loading one never imports the others (or `datasets`, or math_verify).
Every built-in task takes `path=` (a local JSONL/Parquet file in the hub schema instead of the
Hugging Face Hub) and `seed=` (the option-shuffle seed where a benchmark shuffles).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from quantscope.errors import QuantscopeError
from quantscope.tasks.base import Task
from quantscope.util import import_target

_REGISTRY: dict[str, str] = {
    "aime25": "quantscope.tasks.aime:AIME25Task",
    "math500": "quantscope.tasks.math500:Math500Task",
    "gpqa_diamond": "quantscope.tasks.gpqa:GPQADiamondTask",
    "mmlu_pro": "quantscope.tasks.mmlu_pro:MMLUProTask",
    "synthetic": "quantscope.tasks.synthetic:SyntheticTask",
}

# The names other harnesses give these benchmarks, so their results import under quantscope's:
# lm-eval (lm_eval/tasks/aime/aime25.yaml, hendrycks_math/hendrycks_math500.yaml,
# minerva_math/minerva_math500.yaml, gpqa/*/gpqa_diamond_*.yaml, mmlu_pro/), lighteval
# (`aime25`, `math_500`, `gpqa:diamond`, `mmlu_pro`; details name a task `suite|task|shots` or `task|shots`),
# EvalScope (`aime25`, `math_500`, `gpqa_diamond`, `mmlu_pro`) and inspect_evals (`aime2025`,
# `gpqa_diamond`, `mmlu_pro`).
ALIASES: dict[str, str] = {
    "aime2025": "aime25",
    "aime_2025": "aime25",
    "math_500": "math500",
    "math-500": "math500",
    "hendrycks_math500": "math500",
    "minerva_math500": "math500",
    "gpqa:diamond": "gpqa_diamond",
    "gpqa-diamond": "gpqa_diamond",
    "gpqa_diamond_zeroshot": "gpqa_diamond",
    "gpqa_diamond_n_shot": "gpqa_diamond",
    "gpqa_diamond_cot_zeroshot": "gpqa_diamond",
    "gpqa_diamond_cot_n_shot": "gpqa_diamond",
    "gpqa_diamond_generative_n_shot": "gpqa_diamond",
    "mmlu-pro": "mmlu_pro",
}


def canonical_task(name: str) -> str | None:
    """quantscope's name for a benchmark another harness calls `name` (any case; a lighteval
    `suite|task|shots` or `task|shots` name by its task part), or None when this install does not know it."""
    key = name.strip().lower()
    parts = key.split("|")
    # lighteval names a task `suite|task|shots`, and since its tasks/lighteval_task.py builds
    # `full_name = f"{name}|{num_fewshots}"`, `task|shots`: the task is the part before the shots
    if len(parts) >= 2:
        key = parts[-2]
    key = ALIASES.get(key, key)
    return key if key in _REGISTRY else None


def list_tasks() -> list[str]:
    """The names `get_task` accepts, sorted."""
    return sorted(_REGISTRY)


def task_class(name: str) -> type:
    """The class of the benchmark called `name` (QuantscopeError listing the known ones)."""
    target = _REGISTRY.get(name)
    if target is None:
        raise QuantscopeError(f"unknown task {name!r}; known tasks: {', '.join(list_tasks())}")
    return import_target(target)


def get_task(name: str, **options: Any) -> Task:
    """The benchmark called `name`, built with `options` (e.g. `path=`, `seed=`).

    Raises QuantscopeError for an unknown name (listing the known ones) or an option the task
    does not take (listing the ones it does).
    """
    cls = task_class(name)
    _check_options(name, cls, options)
    return cls(**options)


def _check_options(name: str, task_class: type, options: dict[str, Any]) -> None:
    """Raise naming the options `task_class` does not accept (unless it takes **kwargs)."""
    parameters = inspect.signature(task_class).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        accepted = ", ".join(parameters) or "none"
        raise QuantscopeError(f"task {name!r} has no option {', '.join(unknown)}; it takes: {accepted}")


def answer_equality(name: str) -> Callable[[str, str], bool] | None:
    """How the task called `name` compares two extracted answers (its `same_answer`, the way its
    judge compares an answer with the gold), or None for a task this install does not know."""
    try:
        return task_class(name).same_answer
    except QuantscopeError:
        return None
