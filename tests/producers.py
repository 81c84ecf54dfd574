"""Checkpoints written by other producers, built once per test run: AutoRound (RTN, straight from
its API, in any of its export formats) and compressed-tensors alone (`tests/ct_producer.py`).

`ProducerExports` is a keyed cache: the export of (model, scheme, format) is built the first time a
test asks for it and shared by every test after (the `producer_exports` fixture in conftest.py).
Tests read these exports and never write into them."""

from __future__ import annotations

from pathlib import Path

from tests.ct_producer import compressed_tensors_export

COMPRESSED_TENSORS = "compressed-tensors"
"""The format key of a compressed-tensors export (its scheme is a compressed-tensors preset)."""


def autoround_export(source: Path, scheme: str, fmt: str, out: Path) -> Path:
    """AutoRound (RTN) straight from its API: `scheme` (e.g. "W4A16") saved with `format=fmt`
    (e.g. "auto_gptq") into `out`; returns the folder holding the export's config.json."""
    import torch
    import transformers
    from auto_round import AutoRound

    from quantscope.quantize.autoround import hybrid_attention_masks
    from quantscope.util import frozen_heap

    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    text = ["The quick brown fox jumps over the lazy dog. " * 8] * 4
    # Plain RTN (disable_opt_rtn): AutoRound then picks its RTN compressor instead of the
    # imatrix-optimised one (auto_round/autoround.py, _select_rtn_compressor_base_cls); the
    # rounded values differ, the export format and its layout do not, in about two thirds of the time.
    # hybrid_attention_masks: AutoRound 0.16's hybrid-attention replay bug; frozen_heap: its
    # per-block gc.collect() calls walk only what the export creates (quantscope.util)
    with hybrid_attention_masks(model), frozen_heap():
        rounder = AutoRound(
            model,
            tokenizer,
            scheme=scheme,
            iters=0,
            disable_opt_rtn=True,
            nsamples=2,
            seqlen=32,
            dataset=text,
            device_map="cpu",
        )
        rounder.quantize_and_save(str(out), format=fmt)
    return next(out.rglob("config.json")).parent


class ProducerExports:
    """(model, scheme, format) -> the export's folder, each built once. `sources` names the source
    checkpoints ("qwen3": a tiny Qwen3, "moe": a tiny Qwen3.5-MoE); `root` holds the exports."""

    def __init__(self, sources: dict[str, Path], root: Path) -> None:
        self.sources = sources
        self.root = root
        self._built: dict[tuple[str, str, str], Path] = {}

    def __call__(self, model: str, scheme: str, fmt: str) -> Path:
        key = (model, scheme, fmt)
        if key not in self._built:
            out = self.root / "-".join(key)
            source = self.sources[model]
            if fmt == COMPRESSED_TENSORS:
                self._built[key] = compressed_tensors_export(scheme, source, out)
            else:
                self._built[key] = autoround_export(source, scheme, fmt, out)
        return self._built[key]
