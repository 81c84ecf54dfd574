"""The toy reasoner's character-level tokenizer, saved as a standard HF `tokenizer.json`.

One token per printable ASCII character, plus Qwen's chat tokens as single tokens. The chat
template follows Qwen3 / Qwen3.5: the generation prompt opens `<think>\\n`, and
`enable_thinking=False` closes an empty think block so the model answers at once.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

VOCAB_SIZE = 128
PAD, UNK, IM_START, IM_END, THINK, THINK_END = (
    "<|endoftext|>",
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
)
SPECIALS = (PAD, UNK, IM_START, IM_END, THINK, THINK_END)
CHARS = tuple(dict.fromkeys(string.printable))

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' and m.get('reasoning_content') is not none %}"
    "<|im_start|>assistant\n<think>\n{{ m['reasoning_content'] }}\n</think>\n\n{{ m['content'] }}<|im_end|>\n"
    "{% else %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}"
    "{% endif %}"
)


def vocabulary() -> dict[str, int]:
    """Token -> id: the specials first (pad is 0, `<|im_end|>` is 3), then the characters, then fillers."""
    vocab = {tok: i for i, tok in enumerate((*SPECIALS, *CHARS))}
    for i in range(len(vocab), VOCAB_SIZE):
        vocab[f"<|extra_{i}|>"] = i
    return vocab


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tokenizer object (deterministic; nothing is read from disk or the network)."""
    backend = Tokenizer(models.WordLevel(vocab=vocabulary(), unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    # The think tags stay visible in decoded text (special=False), as in Qwen's tokenizer.
    backend.add_tokens([AddedToken(THINK, special=False), AddedToken(THINK_END, special=False)])
    backend.add_special_tokens([AddedToken(tok, special=True) for tok in (PAD, UNK, IM_START, IM_END)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=IM_END,
        padding_side="left",
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """Write `tokenizer.json`, `tokenizer_config.json` (with the chat template) into directory `path`."""
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(path)
    return tokenizer
