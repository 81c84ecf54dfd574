"""The bundled tiny reasoner: a Qwen3.5-MoE (Gated DeltaNet + gated attention + MoE) trained here.

It adds numbers column by column inside `<think>…</think>`, checks the sum, says "wait" and
redoes the work when the check disagrees, then answers in `\\boxed{}`. The checkpoint ships in
the package (`checkpoint_dir()`), so `quantscope demo` and the tests run offline on a CPU.
See MODEL_CARD.md next to this file for its measured accuracy and thinking lengths.
"""

from __future__ import annotations

from pathlib import Path

from quantscope.errors import QuantscopeError

_CHECKPOINT = Path(__file__).resolve().parent / "checkpoint"


def checkpoint_dir() -> Path:
    """The directory of the shipped checkpoint (config.json, model.safetensors, tokenizer files).

    Load it with `AutoModelForCausalLM.from_pretrained(checkpoint_dir())`; nothing is downloaded.
    """
    if not (_CHECKPOINT / "config.json").is_file() or not (_CHECKPOINT / "model.safetensors").is_file():
        raise QuantscopeError(
            f"the toy checkpoint is missing from {_CHECKPOINT}; reinstall quantscope, or rebuild it with "
            "`python -m quantscope.toy.train --out <dir>` and copy the result there"
        )
    return _CHECKPOINT


def model_card() -> Path:
    """The path of the toy model's card (markdown)."""
    return Path(__file__).resolve().parent / "MODEL_CARD.md"
