"""Long reasoning-like generations, seeded, for the trace-signal tests and the analysis benchmark.

A real study's thinking is 50–130 KB per generation at a 32k cap (real R1-Distill-1.5B AIME traces:
median ~50 KB). These are built from the hand-written traces of tests/data/labelled_traces.yaml
mixed with generated steps (arithmetic, equations in LaTeX, hesitation markers in and out of clause
openings, conclusions that state the gold or a decoy, hypotheticals, boxed answers, intervals,
non-ASCII symbols), in the shapes a study holds (`SHAPES`): finished with an answer after
`</think>`, cut at the cap mid-word or mid-character (a trailing U+FFFD), and cut while looping on
a paragraph, a long block, one word, one digit or a ",3" run; plus a near loop (a block twice,
then new text), which is not one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

DATA = Path(__file__).parent / "data" / "labelled_traces.yaml"
SHAPES = (
    "finished",
    "cut",
    "cut-char",
    "loop-paragraph",
    "loop-long",
    "loop-word",
    "loop-digit",
    "loop-comma",
    "near-loop",
)
GOLDS = ("74", "2", "1275", "-3", "\\frac{3}{4}", "0.75", "(-\\infty, 2]", "[1, 3]", "\\sqrt{2}", "C")


@dataclass(frozen=True)
class LongTrace:
    """One generation: `text` (all of it), `thinking` (before `</think>`), `target` (the gold),
    `math` (a math task: the found detector runs), `shape` (one of `SHAPES`)."""

    thinking: str
    text: str
    target: str
    math: bool
    shape: str


@lru_cache(maxsize=1)
def labelled_pieces() -> tuple[str, ...]:
    """The thinking of every hand-labelled trace that does not loop."""
    traces = yaml.load(DATA.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return tuple(t["thinking"] for t in traces if not t["loop"])


def _step(rng: random.Random, gold: str, gold_rate: float) -> str:
    """One sentence of reasoning; its value is the gold with probability `gold_rate`, else a decoy."""
    a, b = rng.randint(2, 999), rng.randint(2, 99)
    value = gold if rng.random() < gold_rate else rng.choice((str(a + b), f"\\frac{{{a}}}{{{b}}}", str(b)))
    steps = (
        f"Let me compute {a} × {b} = {a * b}.",
        f"So {a} + {b} = {a + b}.",
        f"Wait, {a} · {b} is {a * b}, not {a * b + 1}.",
        f"Hmm, maybe I should check whether {a} is divisible by {b}.",
        f"But wait — the remainder is {a % b}, so that doesn't work.",
        f"Alternatively, we could write $x = \\frac{{{a}}}{{{b}}}$ and simplify.",
        f"Therefore, the answer is {value}.",
        f"Thus the value is {value}.",
        "**Wait**, I think I made an error somewhere.",
        f"Oh wait, that's {a}, not {b}.",
        f"Actually, wait, let me recount: {a}, {a + 1}, {a + 2}.",
        f"Hold on, {b}² = {b * b}, so the area is {b}².",
        f"We await the final count; the sum is {a + b}.",
        f"Hmm, wait, wait... If x = {a} then y = {b}.",
        f"So $x \\in (-\\infty, {b}]$.",
        f"On second thought, the answer should be \\boxed{{{value}}}.",
        f"Finally, the number of divisors is {b} divisors.",
        f"Hence, $\\frac{{{a}}}{{{b}}} \\approx {a / b:.4f}$.",
        f"In summary: {a} − {b} = {a - b}; the answer is ${value}$.",
        f"Suppose the answer is {value}; then {a} would have to be even.",
        f"Hmmm, alternatively the final answer: {value}",
        f"and so on ({a}, {b}), or alternatively [{b}, {a}].",
        f"Let me wait and see: f({a}) = {a * a - b} ≥ 0.",
        f"The ratio is {a}.{b}.So x = {value}, e.g.thus y = {value}.",  # no space after the stop
        f"Is it {a}?\tThus x = {value}.\n> **So** y = {b}!  Hence {a} = {value}",
    )
    return rng.choice(steps)


def _body(rng: random.Random, chars: int, gold: str, gold_rate: float = 0.05) -> str:
    """Paragraphs of steps and hand-written traces, at least `chars` characters."""
    pieces = labelled_pieces()
    parts: list[str] = []
    size = 0
    while size < chars:
        if rng.random() < 0.3:
            part = rng.choice(pieces)
        else:
            part = " ".join(_step(rng, gold, gold_rate) for _ in range(rng.randint(2, 9)))
        parts.append(part)
        size += len(part) + 2
    return "\n\n".join(parts)


def long_trace(rng: random.Random, chars: int, shape: str | None = None) -> LongTrace:
    """A generation of about `chars` characters in `shape` (random when None)."""
    shape = shape or rng.choice(SHAPES)
    gold = rng.choice(GOLDS)
    body = _body(rng, chars, gold, rng.choice((0.0, 0.0, 0.01, 0.05)))[:chars]
    head = body[: int(chars * rng.uniform(0.5, 0.9))]
    rest = chars - len(head)
    if shape == "finished":
        thinking = body.rsplit(" ", 1)[0] + "."
        answer = f"The computation above gives $\\boxed{{{gold}}}$."
        return LongTrace(thinking, f"{thinking}\n</think>\n\n{answer}", gold, gold != "C", shape)
    if shape == "cut":
        thinking = body
    elif shape == "cut-char":
        thinking = body + "\ufffd"
    elif shape in ("loop-paragraph", "loop-long", "near-loop"):
        start = rng.randrange(0, max(1, len(body) - 5000))
        width = rng.randint(2000, 5000) if shape == "loop-long" else rng.randint(60, 1500)
        block = body[start : start + width] + "\n\n"
        if shape == "near-loop":
            thinking = head + block * 2 + _body(rng, 300, gold, 0.0)
        else:
            copies = max(1, rest // len(block)) + rng.randint(0, 2)
            thinking = head + block * copies + block[: rng.randrange(len(block))]
    elif shape == "loop-word":
        word = rng.choice((" wait", " hmm", " so", " Wait,"))
        thinking = head + word * (rest // len(word)) + word[: rng.randrange(len(word))]
    elif shape == "loop-digit":
        thinking = head + " so 5/9 = 0." + "5" * rest
    else:
        thinking = head + " the digits are 3" + ",3" * (rest // 2)
    return LongTrace(thinking, thinking, gold, gold != "C", shape)


def long_traces(count: int, seed: int, sizes: tuple[int, int]) -> list[LongTrace]:
    """`count` generations of `sizes[0]`..`sizes[1]` characters, every shape in turn."""
    rng = random.Random(seed)
    return [long_trace(rng, rng.randint(*sizes), SHAPES[i % len(SHAPES)]) for i in range(count)]
