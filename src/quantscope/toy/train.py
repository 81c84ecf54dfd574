"""Train the toy reasoner from scratch: `python -m quantscope.toy.train --out DIR [--steps N ...]`.

Seeded and self-contained: training problems are drawn on the fly (held-out benchmark
problems are never drawn), the loss covers only the assistant turn, AdamW with warm-up and a
cosine decay, fp32 master weights, bf16 checkpoint. The verdicts of each check (the token after
every digit pair of a "compare" line: the next pair, "ok" or "wait") weigh `--check-weight` times
a normal token, so the few tokens that decide a retry are not drowned by the many that copy.
Runs on CPU (slow) or on a GPU when `--device cuda`. Every `--eval-every` steps a quick greedy
check on a validation set (its own seed, not the benchmark's) prints per-level accuracy; a
checkpoint is written every `--save-every` steps and at the end, each time to a temporary folder
renamed into place.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig

from quantscope.toy.corpus import example_text
from quantscope.toy.evaluate import format_summary, generate_outcomes, summarize
from quantscope.toy.model import build_model, count_parameters
from quantscope.toy.problems import MAX_TRAIN_DIGITS, benchmark_problems, training_example
from quantscope.toy.tokenizer import build_tokenizer, save_tokenizer

VALIDATION_SEED = 999


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded next to the checkpoint)."""

    steps: int = 3000
    batch_size: int = 32
    max_len: int = 448  # room for 5-digit traces with two redos
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    slip_rate: float = 0.4
    no_think_rate: float = 0.1
    max_digits: int = MAX_TRAIN_DIGITS
    check_weight: float = 5.0
    seed: int = 0


_COMPARE = re.compile(r"compare ((?:\d\d )+)(?:ok|wait)")


def check_positions(completion: str) -> list[int]:
    """Character offsets in `completion` of each check verdict: the token after every digit pair.

    The thinking is plain characters (one token each), so these are also token offsets.
    """
    positions = []
    for match in _COMPARE.finditer(completion):
        pairs = len(match.group(1)) // 3
        positions.extend(match.start(1) + 3 * (k + 1) for k in range(pairs))
    return positions


class Batches:
    """Endless seeded stream of (input_ids, labels, weights) batches.

    Labels are -100 outside the completion; weights are 1 per completion token,
    `config.check_weight` on each check verdict (`check_positions`), and 0 on the prompt and padding.
    """

    def __init__(self, config: TrainConfig, tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.rng = random.Random(config.seed)
        held_out = benchmark_problems()
        self.held_out = {p.operands for p in held_out}
        self.queue: list[list[tuple[list[int], list[int], list[float]]]] = []

    def _example(self) -> tuple[list[int], list[int], list[float]]:
        while True:
            problem, thinking = training_example(
                self.rng, self.config.slip_rate, self.config.no_think_rate, self.config.max_digits
            )
            if problem.operands in self.held_out:
                continue
            prompt, completion = example_text(problem, thinking)
            p_ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
            c_ids = self.tokenizer(completion, add_special_tokens=False).input_ids
            if len(p_ids) + len(c_ids) <= self.config.max_len:
                weights = [0.0] * len(p_ids) + [1.0] * len(c_ids)
                for offset in check_positions(completion):
                    weights[len(p_ids) + offset] = self.config.check_weight
                return p_ids + c_ids, [-100] * len(p_ids) + c_ids, weights

    def _refill(self) -> None:
        # Draw 8 batches at once and group examples of similar length, so little is padding.
        size = self.config.batch_size
        pool = sorted((self._example() for _ in range(8 * size)), key=lambda row: len(row[0]))
        chunks = [pool[i : i + size] for i in range(0, len(pool), size)]
        self.rng.shuffle(chunks)
        self.queue.extend(chunks)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch, right-padded to its longest example."""
        if not self.queue:
            self._refill()
        rows = self.queue.pop()
        width = max(len(ids) for ids, _, _ in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab, _ in rows])
        weights = torch.tensor([w + [0.0] * (width - len(w)) for _, _, w in rows])
        return ids, labels, weights


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, each target weighted, normalised by the number of targets.

    With all weights 1 this is the mean loss transformers computes from `labels`.
    """
    targets, weights = labels[:, 1:], weights[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="none"
    )
    return (losses * weights.flatten()).sum() / (targets != -100).sum().clamp(min=1)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save_checkpoint(model, out: Path, meta: dict) -> None:
    """Write a bf16 HF checkpoint (+ tokenizer, generation config, training record) to `out` atomically."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    frozen = copy.deepcopy(model).to("cpu", torch.bfloat16)
    frozen.save_pretrained(tmp)
    save_tokenizer(tmp)
    tokenizer = build_tokenizer()
    GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
        top_k=20,
        max_new_tokens=512,
    ).save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def quick_eval(model, per_level: int, max_new_tokens: int) -> str:
    """Greedy accuracy per level on validation problems (seed VALIDATION_SEED, not the benchmark)."""
    problems = benchmark_problems(per_level=per_level, seed=VALIDATION_SEED)
    outcomes = generate_outcomes(model, problems, max_new_tokens=max_new_tokens, batch_size=len(problems))
    model.train()
    return format_summary(summarize(outcomes))


def _load(path: Path):
    """A checkpoint to continue from, as fp32 master weights."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    defaults = TrainConfig()
    for field, value in asdict(defaults).items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--init", type=Path, default=None, help="continue from this checkpoint")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when visible)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument(
        "--eval-every", type=int, default=500, help="steps between validation checks (0: off)"
    )
    parser.add_argument("--eval-per-level", type=int, default=16)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument(
        "--stop-after", type=int, default=0, help="save and stop after this many steps (0: run all --steps)"
    )
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> None:
    """Run the training loop described by the parsed command line."""
    config = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    torch.backends.cuda.matmul.allow_tf32 = True
    tokenizer = build_tokenizer()
    model = build_model(config.seed) if args.init is None else _load(args.init)
    model = model.to(device)
    print(f"params {count_parameters(model)} device {device} config {asdict(config)}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    batches = Batches(config, tokenizer)
    meta = {"config": asdict(config), "device": str(device), "torch": torch.__version__}
    if args.init is not None:
        previous = args.init / "training.json"
        meta["init"] = json.loads(previous.read_text()) if previous.is_file() else str(args.init)
    model.train()
    start = time.perf_counter()
    for step in range(config.steps):
        ids, labels, weights = batches.next()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        out = model(input_ids=ids.to(device), output_router_logits=True)
        loss = weighted_loss(out.logits, labels.to(device), weights.to(device))
        loss = loss + model.config.router_aux_loss_coef * out.aux_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        done = step + 1
        if done % args.log_every == 0 or done == 1:
            elapsed = time.perf_counter() - start
            print(
                f"step {done} loss {loss.item():.4f} aux {out.aux_loss.item():.3f} "
                f"lr {learning_rate(step, config):.2e} {elapsed / done:.3f} s/step",
                flush=True,
            )
        if args.eval_every and done % args.eval_every == 0:
            print(quick_eval(model, args.eval_per_level, 384), flush=True)
        last = done == config.steps or done == args.stop_after
        if done % args.save_every == 0 or last:
            meta.update(
                steps_done=done, seconds=round(time.perf_counter() - start, 1), final_loss=loss.item()
            )
            save_checkpoint(model, args.out, meta)
        if last:
            break
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    train(_parse(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
