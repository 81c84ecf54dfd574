"""The bundled tiny reasoner: a Qwen3.5-MoE (Gated DeltaNet + gated attention + MoE) trained here.

It adds numbers column by column inside `<think>…</think>`, checks the sum, says "wait" and
redoes the work when the check disagrees, then answers in `\\boxed{}`. The checkpoint ships in
the package (`checkpoint_dir()`), so `quantscope demo` and the tests run offline on a CPU.
See MODEL_CARD.md next to this file for its measured accuracy and thinking lengths.

`problems` holds the task (levels, traces, the answer check), `corpus` its text, `tokenizer`,
`model`, `train` and `evaluate` the rest; this package imports nothing from `quantscope.tasks`.
`offline` is the real material registry packages ship, for checks that must not rest on the toy
model alone.
"""

from quantscope.toy.bundled import checkpoint_dir, is_bundled, model_card

__all__ = ["checkpoint_dir", "is_bundled", "model_card"]
