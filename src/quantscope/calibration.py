"""Calibration data, offline, for `quantize` and `profile` alike: one set of rules.

Sources: a list of strings; a `.txt`/`.md` file (paragraphs separated by blank lines); a
`.jsonl`/`.json` file of records; a Hugging Face dataset id or local dataset folder; "toy" (the
bundled task's text). Documents are tokenized, joined with the end-of-sequence token and cut
into windows of exactly `seqlen` tokens, so every window reaches AutoRound (it silently drops
samples shorter than `seqlen`) and a run is reproducible from the token ids alone.

There is no network default: AutoRound's own default is a hub dataset (NeelNanda/pile-10k).
The bundled toy model calibrates on its own task's text; any other model needs data.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError

TOY = "toy"  # the built-in source: the bundled toy task's prompts and reasoning traces
_TEXT_SUFFIXES = (".txt", ".md")
_JSON_SUFFIXES = (".jsonl", ".json")
_SUFFIXES = _TEXT_SUFFIXES + _JSON_SUFFIXES

CalibrationSource = str | Path | Sequence[str] | None
# A calibration document: plain text, or chat messages rendered with the model's chat template.
Document = str | list[Mapping[str, Any]]


@dataclass(frozen=True)
class CalibrationSet:
    """Token windows for calibration: `windows[i]` has exactly `seqlen` token ids.

    `source`: a description of where the text came from. `requested`: the number of windows
    asked for (fewer exist when the data is short).
    """

    source: str
    seqlen: int
    windows: tuple[tuple[int, ...], ...]
    requested: int

    @property
    def sha256(self) -> str:
        """A hash of the token ids (identifies the exact calibration data)."""
        digest = hashlib.sha256()
        for window in self.windows:
            digest.update(json.dumps(window).encode())
        return digest.hexdigest()

    def autoround_samples(self) -> list[dict[str, Any]]:
        """The windows as AutoRound dataset items: `input_ids` / `attention_mask` tensors `[1, seqlen]`."""
        import torch

        samples = []
        for window in self.windows:
            ids = torch.tensor([window], dtype=torch.long)
            samples.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        return samples


def load_documents(
    dataset: CalibrationSource,
    *,
    model: str | Path = "",
    split: str = "train",
    text_field: str | None = None,
    seed: int = 0,
) -> tuple[str, Iterator[Document]]:
    """`(description, documents)` for a calibration source.

    `dataset`: a list of strings; a `.txt`/`.md` file (paragraphs separated by blank lines); a
    `.jsonl`/`.json` file of objects; a Hugging Face dataset id or local dataset folder (loaded with
    `datasets`, `split`); "toy" for the bundled task's text; or None, which means "toy" for the
    toy checkpoint and is an error for any other model. Records use `text_field`, else the first
    of "text", "messages" (chat), "prompt"+"completion"/"response".
    """
    from quantscope.toy.bundled import is_bundled

    if dataset is None:
        if is_bundled(model):
            return toy_documents(seed)
        raise QuantscopeError(
            f"no calibration data for {model}: pass a text/JSONL file or a Hugging Face dataset id "
            "(--dataset for quantize, --data for profile); quantscope never downloads a default, and only "
            "the bundled toy model has built-in data"
        )
    if isinstance(dataset, Sequence) and not isinstance(dataset, str):
        if not all(isinstance(text, str) for text in dataset):
            raise QuantscopeError("calibration dataset: a list must hold only strings")
        return f"{len(dataset)} texts", iter(list(dataset))
    if str(dataset) == TOY:
        return toy_documents(seed)
    path = Path(dataset).expanduser()
    if path.is_file():
        return str(path), _file_documents(path, text_field)
    looks_like_a_file = path.is_absolute() or str(dataset).startswith((".", "~")) or path.suffix in _SUFFIXES
    if not path.is_dir() and looks_like_a_file:
        raise QuantscopeError(f"calibration dataset {dataset}: no such file")
    return _hub_documents(str(dataset), path, split, text_field, seed)


def toy_documents(seed: int = 0) -> tuple[str, Iterator[Document]]:
    """The bundled toy task's conversations (prompt + thinking + answer), generated from `seed`."""
    from quantscope.toy.corpus import conversations

    return f"{TOY} (quantscope.toy task text, seed {seed})", conversations(seed)


def _file_documents(path: Path, text_field: str | None) -> Iterator[Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise QuantscopeError(f"{path}: cannot read calibration text ({error})") from None
    if path.suffix in _JSON_SUFFIXES:
        return iter(list(_json_documents(path, text, text_field)))
    if path.suffix not in _TEXT_SUFFIXES:
        raise QuantscopeError(
            f"{path}: not a calibration file type; use a .txt or .jsonl file (or .md, .json): plain text "
            "in paragraphs, or records with 'text', 'messages' or 'prompt' + 'completion'"
        )
    return iter([part.strip() for part in text.split("\n\n") if part.strip()])


def _json_documents(path: Path, text: str, text_field: str | None) -> Iterator[Document]:
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise QuantscopeError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(records, list):
            raise QuantscopeError(f"{path}: a .json calibration file holds a list of records")
        for index, record in enumerate(records):
            yield record_text(record, text_field, f"{path}[{index}]")
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise QuantscopeError(f"{path}:{number}: not valid JSON ({error})") from None
        yield record_text(record, text_field, f"{path}:{number}")


def record_text(record: Any, text_field: str | None, where: str) -> Document:
    """The calibration text of one record (see `load_documents` for the fields tried)."""
    if isinstance(record, str):
        return record
    if not isinstance(record, Mapping):
        raise QuantscopeError(f"{where}: a record must be an object or a string")
    if text_field is not None:
        if not isinstance(record.get(text_field), str):
            raise QuantscopeError(f"{where}: field {text_field!r} is missing or not a string")
        return record[text_field]
    if isinstance(record.get("text"), str):
        return record["text"]
    if isinstance(record.get("messages"), list):
        return _chat_messages(record["messages"], where)
    answer = record.get("completion", record.get("response"))
    if isinstance(record.get("prompt"), str) and isinstance(answer, str):
        return record["prompt"] + answer
    raise QuantscopeError(
        f"{where}: no calibration text; expected an object with a 'text' string, 'messages' (chat), "
        "'prompt' + 'completion', or a field named with --text-field"
    )


def _chat_messages(messages: list[Any], where: str) -> Document:
    for message in messages:
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise QuantscopeError(f"{where}: each message needs a string 'content'")
    return [dict(message) for message in messages]


def render(tokenizer: Any, document: Document) -> str:
    """A document as text: chat messages through the tokenizer's chat template (or joined)."""
    if isinstance(document, str):
        return document
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(document), tokenize=False)
    return "\n".join(message["content"] for message in document)


def _hub_documents(
    name: str, path: Path, split: str, text_field: str | None, seed: int
) -> tuple[str, Iterator[Document]]:
    import datasets

    try:
        data = datasets.load_dataset(str(path) if path.is_dir() else name, split=split)
    except Exception as error:  # datasets raises many types (ConnectionError, FileNotFoundError, …)
        raise QuantscopeError(
            f"calibration dataset {name!r} (split {split!r}) cannot be loaded "
            f"({type(error).__name__}: {error}); offline, pass a local .txt/.jsonl file instead"
        ) from None
    data = data.shuffle(seed=seed)
    where = f"{name}[{split}]"
    return where, (record_text(row, text_field, f"{where} row {i}") for i, row in enumerate(data))


def build_calibration(
    tokenizer: Any,
    documents: Iterable[Document],
    *,
    nsamples: int,
    seqlen: int,
    source: str,
    shuffle_seed: int | None = 0,
) -> CalibrationSet:
    """Cut `documents` into `nsamples` windows of exactly `seqlen` tokens.

    Documents are joined with the tokenizer's EOS token; reading stops once enough tokens exist.
    A finite list of documents is shuffled with `shuffle_seed` first. Raises QuantscopeError when
    there is not enough text for even one window.
    """
    if nsamples < 1 or seqlen < 2:
        raise QuantscopeError(f"calibration needs nsamples >= 1 and seqlen >= 2 (got {nsamples}, {seqlen})")
    if isinstance(documents, list) and shuffle_seed is not None:
        documents = list(documents)
        random.Random(shuffle_seed).shuffle(documents)
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    needed = nsamples * seqlen
    stream: list[int] = []
    for document in documents:
        stream.extend(tokenizer(render(tokenizer, document), add_special_tokens=False)["input_ids"])
        stream.extend(separator)
        if len(stream) >= needed:
            break
    count = min(nsamples, len(stream) // seqlen)
    if count == 0:
        raise QuantscopeError(
            f"calibration data from {source} has {len(stream)} tokens, fewer than one window of "
            f"seqlen={seqlen}; add text or use shorter windows (--seqlen of quantize, --seq-len of profile)"
        )
    windows = tuple(tuple(stream[i * seqlen : (i + 1) * seqlen]) for i in range(count))
    return CalibrationSet(source=source, seqlen=seqlen, windows=windows, requested=nsamples)
