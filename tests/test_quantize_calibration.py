"""Calibration data offline: files, datasets, the toy task's text, exact token windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from quantscope.calibration import build_calibration, load_documents, record_text
from quantscope.errors import QuantscopeError


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen3_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_qwen3_dir)


def _windows(tokenizer, dataset, nsamples: int = 3, seqlen: int = 20, **kwargs):
    source, documents = load_documents(dataset, model="some/model", **kwargs)
    return build_calibration(tokenizer, documents, nsamples=nsamples, seqlen=seqlen, source=source)


def test_text_file_paragraphs_become_exact_windows_joined_by_eos(tokenizer, tmp_path: Path):
    path = tmp_path / "calib.txt"
    path.write_text("first paragraph of text\n\nsecond one, a bit longer than the first\n\n\nthird")
    calibration = _windows(tokenizer, str(path), nsamples=2, seqlen=20)
    assert calibration.source == str(path)
    assert [len(w) for w in calibration.windows] == [20, 20]
    assert tokenizer.eos_token_id in calibration.windows[0] + calibration.windows[1]
    samples = calibration.autoround_samples()
    assert samples[0]["input_ids"].shape == (1, 20)
    assert samples[0]["attention_mask"].sum() == 20


def test_same_data_gives_the_same_windows_and_hash(tokenizer, tmp_path: Path):
    path = tmp_path / "calib.txt"
    path.write_text("\n\n".join(f"paragraph number {i} about apples" for i in range(20)))
    first, second = _windows(tokenizer, path), _windows(tokenizer, path)
    assert first.windows == second.windows
    assert first.sha256 == second.sha256


def test_jsonl_reads_text_chat_and_prompt_completion_records(tokenizer, tmp_path: Path):
    path = tmp_path / "calib.jsonl"
    records = [
        {"text": "plain text record " * 3},
        {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello!"}]},
        {"prompt": "2+2=", "completion": "4"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    source, documents = load_documents(path, model="m")
    docs = list(documents)
    assert docs[0].startswith("plain text")
    assert docs[1][1]["content"] == "hello!"  # chat turns are rendered with the model's template later
    assert docs[2] == "2+2=4"
    calibration = build_calibration(tokenizer, docs, nsamples=1, seqlen=16, source=source)
    text = tokenizer.decode(sum(calibration.windows, ()))
    assert len(calibration.windows[0]) == 16 and text


def test_bad_records_name_the_file_line_and_field(tmp_path: Path):
    path = tmp_path / "calib.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    with pytest.raises(QuantscopeError, match=r"calib\.jsonl:2: no calibration text"):
        list(load_documents(path, model="m")[1])
    with pytest.raises(QuantscopeError, match="field 'body' is missing"):
        record_text({"text": "x"}, "body", "here")
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(QuantscopeError, match=r"broken\.jsonl:1: not valid JSON"):
        load_documents(broken, model="m")


def test_local_dataset_goes_through_the_datasets_library(tokenizer, tmp_path: Path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    rows = [{"content": f"row {i} of a local dataset with some words"} for i in range(30)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    calibration = _windows(tokenizer, str(folder), nsamples=4, seqlen=16, text_field="content")
    assert calibration.source == f"{folder}[train]"
    assert len(calibration.windows) == 4


def test_too_little_text_fails_with_the_numbers(tokenizer):
    with pytest.raises(QuantscopeError, match=r"has \d+ tokens, fewer than one window of seqlen=500"):
        _windows(tokenizer, ["short text"], seqlen=500)


def test_short_data_gives_fewer_windows_and_records_the_request(tokenizer):
    calibration = _windows(tokenizer, ["x" * 45], nsamples=10, seqlen=20)
    assert len(calibration.windows) == 2
    assert calibration.requested == 10


def test_no_dataset_is_an_error_for_any_model_but_the_toy():
    with pytest.raises(QuantscopeError, match="--dataset"):
        load_documents(None, model="Qwen/Qwen3.5-9B")
    with pytest.raises(QuantscopeError, match="no such file"):
        load_documents("/nonexistent/calib.txt", model="m")


def test_toy_task_text_is_built_in_and_seeded():
    source, documents = load_documents("toy", model="m", seed=3)
    first = [next(documents) for _ in range(3)]
    again = [next(load_documents("toy", model="m", seed=3)[1]) for _ in range(1)]
    assert source.startswith("toy")
    assert "<think>" in first[0] and "\\boxed{" in "".join(first)
    assert again[0] == first[0]


def test_a_missing_relative_file_is_named_not_looked_up_on_the_hub(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QuantscopeError, match=r"calibration dataset calib\.txt: no such file"):
        load_documents("calib.txt", model="m")


def test_profile_and_quantize_read_a_text_file_by_the_same_paragraph_rule(tokenizer, tmp_path: Path):
    from quantscope.sensitivity.profiler import calibration_tokens

    path = tmp_path / "calib.txt"
    path.write_text("first paragraph\n\nsecond paragraph\n")
    documents = list(load_documents(path, model="m")[1])
    assert documents == ["first paragraph", "second paragraph"]
    eos = tokenizer.eos_token_id
    first, second = (tokenizer(text)["input_ids"] for text in documents)
    stream = [*first, eos, *second, eos]
    assert calibration_tokens(documents, tokenizer, 1, 8).flatten().tolist() == stream[:8]
