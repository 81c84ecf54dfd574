"""Measuring damage: next-token KL against the original model on fixed calibration tokens.

Reference distributions are kept as final hidden states (`[N, T, hidden]`), not logits, so a
248k-token vocabulary costs no more memory than a 256-token one; logits are recomputed in
chunks and compared with `quantscope.checkpoint.modeling.logits_kl` (float64). Position buckets (0-512,
512-2k, 2k-8k… scaled to the sequence length) show the damage that appears late in long
generations, where reasoning models spend their tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from quantscope.checkpoint.modeling import LOGIT_CHUNK_ELEMENTS, logits_kl
from quantscope.errors import QuantscopeError
from quantscope.numerics.actquant import ActPoint, activations_quantized
from quantscope.numerics.fakequant import QdqTarget, fake_quantized
from quantscope.sensitivity.records import Damage


def default_buckets(seq_len: int) -> tuple[int, ...]:
    """Position-bucket edges for `seq_len`: quarter, sixteenth and 1/64 of it, so a 32k sequence
    gets 0-512, 512-2k, 2k-8k, 8k-32k and a 256-token one 0-4, 4-16, 16-64, 64-256. Buckets
    narrower than 4 positions are merged into the first."""
    edges = {0, seq_len} | {seq_len // 4**k for k in (1, 2, 3) if seq_len // 4**k >= 4}
    return tuple(sorted(edges))


def make_buckets(seq_len: int, edges: Sequence[int] | None = None) -> tuple[int, ...]:
    """Bucket edges from user `edges` (positions, ascending) clipped to `seq_len`, or the default.

    Edges at or beyond `seq_len` are dropped and `0` / `seq_len` added, so `0,512,2048,8192` works
    for any calibration length. Raises QuantscopeError for negative or unsorted edges.
    """
    if not edges:
        return default_buckets(seq_len)
    if any(e < 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise QuantscopeError(f"--buckets must be ascending non-negative positions, got {list(edges)}")
    return tuple(sorted({0, seq_len} | {e for e in edges if 0 < e < seq_len}))


class KLMeter:
    """Measures next-token KL against the original model on fixed calibration tokens.

    Construct once (one reference pass), then call `measure(targets)` per variant: it
    fake-quantizes the targets in place, runs the calibration tokens, and restores the weights.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokens: torch.Tensor,
        buckets: Sequence[int],
        batch_size: int = 4,
        fused_sets: Sequence[Sequence[str]] = (),
    ) -> None:
        self.model = model.eval()
        self.tokens = tokens
        self.buckets = tuple(buckets)
        self.batch_size = max(1, batch_size)
        self.fused_sets = tuple(tuple(members) for members in fused_sets)
        self.head = model.get_output_embeddings()
        self.device = next(model.parameters()).device
        self.reference = self._final_hidden()

    def reference_pass(self) -> None:
        """Run the calibration tokens through the model as it is now (for hooks that observe it)."""
        self._final_hidden()

    @torch.no_grad()
    def _final_hidden(self) -> torch.Tensor:
        """Final (normed) hidden states `[N, T, hidden]` of the model as it is now."""
        base = self.model.base_model
        outputs = []
        for start in range(0, self.tokens.shape[0], self.batch_size):
            batch = self.tokens[start : start + self.batch_size].to(self.device)
            outputs.append(base(input_ids=batch, use_cache=False).last_hidden_state)
        return torch.cat(outputs)

    def _touches_head(self, targets: Sequence[QdqTarget]) -> bool:
        head_weight = self.head.weight
        return any(self.model.get_parameter(t.where.param) is head_weight for t in targets)

    @torch.no_grad()
    def measure(
        self, targets: Sequence[QdqTarget], scheme: str, activations: Sequence[ActPoint] = ()
    ) -> Damage:
        """Damage of fake-quantizing `targets` and rounding the layer inputs of `activations`
        (both undone afterwards), labelled `scheme`."""
        reference_head = self.head.weight.detach().clone() if self._touches_head(targets) else None
        with (
            fake_quantized(self.model, targets, self.fused_sets),
            activations_quantized(self.model, activations),
        ):
            variant = self._final_hidden()
            kl, agree = self._token_kl(variant, reference_head)
        return self._summarize(kl, agree, scheme)

    def _token_kl(
        self, variant: torch.Tensor, reference_head: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position KL `[N, T]` (float64, CPU) and top-1 agreement, logits chunk by chunk."""
        n, t, hidden = variant.shape
        chunk = max(1, LOGIT_CHUNK_ELEMENTS // self.head.weight.shape[0])
        flat_ref, flat_var = self.reference.reshape(-1, hidden), variant.reshape(-1, hidden)
        kl = torch.empty(n * t, dtype=torch.float64)
        agree = torch.empty(n * t, dtype=torch.bool)
        ref_weight = self.head.weight if reference_head is None else reference_head
        head_device = ref_weight.device  # a sharded model's head may sit on another GPU
        for start in range(0, n * t, chunk):
            window = slice(start, start + chunk)
            ref_logits = torch.nn.functional.linear(
                flat_ref[window].to(head_device), ref_weight, self.head.bias
            )
            var_logits = self.head(flat_var[window].to(head_device))
            kl[window], agree[window] = logits_kl(ref_logits, var_logits)
        return kl.reshape(n, t), agree.reshape(n, t)

    def _summarize(self, kl: torch.Tensor, agree: torch.Tensor, scheme: str) -> Damage:
        by_bucket = tuple(
            float(kl[:, lo:hi].mean()) for lo, hi in zip(self.buckets, self.buckets[1:], strict=False)
        )
        return Damage(scheme, float(kl.mean()), by_bucket, float(agree.double().mean()))
