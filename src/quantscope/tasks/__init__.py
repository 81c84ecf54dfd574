"""Benchmarks behind one protocol (`quantscope.tasks.base.Task`), found by name (`registry`).

Each benchmark module loads its items (`loading`, hub or a local file in the hub schema) and
judges final answers (`answers`, `math_check`, `choice`); prompts live in `prompts`.
"""

from quantscope.tasks.base import Judgement, Sample, Task
from quantscope.tasks.registry import get_task, list_tasks

__all__ = ["Judgement", "Sample", "Task", "get_task", "list_tasks"]
