"""Where the bundled tiny reasoner lives in the installed package: its checkpoint and its card."""

from __future__ import annotations

from pathlib import Path

from quantscope.errors import QuantscopeError

_HERE = Path(__file__).resolve().parent
_CHECKPOINT = _HERE / "checkpoint"


def checkpoint_dir() -> Path:
    """The directory of the shipped checkpoint (config.json, model.safetensors, tokenizer files).

    Load it with `quantscope.checkpoint.modeling.load_causal_lm(checkpoint_dir())`; nothing is downloaded.
    """
    if not (_CHECKPOINT / "config.json").is_file() or not (_CHECKPOINT / "model.safetensors").is_file():
        raise QuantscopeError(
            f"the toy checkpoint is missing from {_CHECKPOINT}; reinstall quantscope, or rebuild it with "
            "`python -m quantscope.toy.train --out <dir>` and copy the result there"
        )
    return _CHECKPOINT


def model_card() -> Path:
    """The path of the toy model's card (markdown)."""
    return _HERE / "MODEL_CARD.md"


def is_bundled(model: str | Path) -> bool:
    """True when `model` names the bundled toy checkpoint directory."""
    try:
        return Path(model).expanduser().resolve() == checkpoint_dir().resolve()
    except (QuantscopeError, OSError):
        return False
