"""The toy reasoner's character-level tokenizer: a Qwen3.5 tokenizer with a character vocabulary.

One token per printable ASCII character, plus Qwen's chat tokens as single tokens. It is
transformers' own `Qwen3_5Tokenizer` (byte-level BPE, Qwen's pre-tokenizer) with no merges, so
every character stays a token. That matters: for a `qwen3_5_moe_text` checkpoint, transformers'
`AutoTokenizer` always builds `Qwen3_5Tokenizer` from `tokenizer.json`, whatever class the file
names, and a plain character tokenizer loaded that way loses its spaces and newlines. The chat
template follows Qwen3 / Qwen3.5: the generation prompt opens `<think>\\n`, and
`enable_thinking=False` closes an empty think block so the model answers at once.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import AddedToken
from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

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
    """Token -> id: the specials first (pad is 0, `<|im_end|>` is 3), then the characters, then fillers.

    Characters are written as byte-level symbols (a space is "Ġ", a newline "Ċ"), as in Qwen's vocab.
    """
    symbols = bytes_to_unicode()  # GPT-2's byte -> symbol table that byte-level vocabularies use
    tokens = (*SPECIALS, *(symbols[ord(c)] for c in CHARS))
    vocab = {tok: i for i, tok in enumerate(tokens)}
    for i in range(len(vocab), VOCAB_SIZE):
        vocab[f"<|extra_{i}|>"] = i
    return vocab


def build_tokenizer() -> PreTrainedTokenizerBase:
    """A fresh tokenizer object (deterministic; nothing is read from disk or the network)."""
    tokenizer = Qwen3_5Tokenizer(
        vocab=vocabulary(),
        merges=[],
        unk_token=UNK,
        eos_token=IM_END,
        pad_token=PAD,
        padding_side="left",
        model_max_length=2048,
    )
    # The think tags stay visible in decoded text (special=False), as in Qwen's tokenizer.
    tokenizer.add_tokens([AddedToken(THINK, special=False), AddedToken(THINK_END, special=False)])
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """Write `tokenizer.json`, `tokenizer_config.json` (with the chat template) into directory `path`."""
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(path)
    return tokenizer
