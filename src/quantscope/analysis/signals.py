"""What one generation's text shows, as numbers: loops, hesitations, where the gold answer was found.

Each signal is a pure function of one generation's text (and, for "found", its gold answer),
linear in the text's length, so it can run once per generation (benchmarks/trace_signals.py
measures the cost on 50–130 KB generations: about 2 ms per 50 KB). `read_trace` returns all of
them; `analysis.traces` aggregates them over a store. Their precision and recall on the
hand-labelled traces in tests/data/labelled_traces.yaml (benchmarks/trace_labels.py) are in the
README ("Why a variant thinks longer").

- loop (`repeated_tail`): the generation ends in one block of characters repeated back to back,
  at least `loop_repeats` times over at least `loop_chars` characters. Characters, not words: a
  cap that cuts the last copy anywhere (mid-word: "…Wait, 7777 is 7") leaves the tail periodic,
  and runs without spaces ("5555…", ",3,3,3") are loops too. A trailing U+FFFD (half of a
  multi-byte character, cut by the cap) is dropped first.
- hesitations (`hesitation_starts`): a marker (`HESITATION_MARKERS`: wait, hmm, alternatively,
  hold on, on second thought; the markers arXiv 2606.00206 finds quantized reasoners over-use,
  "but" counted where it leads into one) that opens a sentence or clause: at the start of a line
  or after . ! ? ; : , ( … or a dash, possibly after a lead-in word ("But wait", "Oh wait",
  "Actually, wait"). A run of markers with only commas, dashes or an ellipsis between ("Hmm,
  wait", "wait wait") is one hesitation. "but", "however", "actually" joining an argument,
  "or alternatively" and "wait" as a verb are not hesitations.
- found (`first_statement_of`, math tasks): the thinking states the gold answer where it reads as
  a conclusion: a `\\boxed{}`, "the answer is X" / "final answer: X" (not after "if", "whether",
  "suppose"), or a sentence opening with so / thus / therefore / hence / finally whose value
  (after its last "=", "is", "are", "equals", "has") is X; plus the task's own patterns.
  Answers are compared as normalized text, as numbers when the gold is one (3/4 = 0.75 =
  \\frac{3}{4}; an integer gold written as an expression, 2^{10}, is missed), intervals and
  tuples with their brackets ((-∞,2) ≠ (-∞,2]), and otherwise, when both have the same shape
  (LaTeX commands, letters, outer brackets), by math_verify as the judges run it
  (`tasks.math_check`: a killable worker with a time limit), at most `MAX_VERIFY` statements
  per generation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import lru_cache

HESITATION_MARKERS = ("wait", "hmm", "alternatively", "hold on", "on second thought")
"""Markers that open a hesitation (a marker's last letter may repeat: "hmmm")."""

LEAD_INS = ("but", "oh", "no", "and", "so", "okay", "ok", "well", "actually", "however")
"""Words that may lead into a marker within the same hesitation ("But wait" is one)."""

CONCLUSION_WORDS = ("so", "thus", "therefore", "hence", "finally", "in conclusion", "in summary")
"""Words whose sentence states a conclusion when they open it."""

_OPENERS = frozenset(".!?;:,()…—–\n")
_PREFIX = frozenset(" \t\"'*_>#-")
_RUN_GAP = r"(?:[\s,…—–-]|\.\.+)+"
"""What may stand between two markers of one run: spaces, commas, dashes, an ellipsis (a sentence
end starts a new hesitation)."""
_OPENER = re.compile(r"[.!?;:,(…—–\n]")
_LEAD_GAP = frozenset(" \t,")
_KEY = 16
"""Characters at the end of a text that every loop candidate must repeat (the search key)."""


@dataclass(frozen=True)
class TraceRules:
    """What the signals count. `markers` and `lead_ins`: hesitation markers and the words that may
    lead into them (lower case words or phrases); `hesitation_patterns` / `answer_patterns`: a
    task's own regexes (MULTILINE) for a hesitation / for a stated answer (one group) in its own
    trace format; loops: a block of at most `max_period` characters repeated at least
    `loop_repeats` times over at least `loop_chars` characters; `verify`: compare answers that
    differ in form with math_verify (time-limited)."""

    markers: tuple[str, ...] = HESITATION_MARKERS
    lead_ins: tuple[str, ...] = LEAD_INS
    answer_patterns: tuple[str, ...] = ()
    hesitation_patterns: tuple[str, ...] = ()
    loop_repeats: int = 3
    loop_chars: int = 100
    max_period: int = 4000
    verify: bool = True

    def with_patterns(self, answers: Sequence[str] = (), hesitations: Sequence[str] = ()) -> TraceRules:
        """These rules plus a task's own answer and hesitation patterns."""
        return replace(
            self,
            answer_patterns=(*self.answer_patterns, *answers),
            hesitation_patterns=(*self.hesitation_patterns, *hesitations),
        )


@dataclass(frozen=True)
class TraceSignals:
    """What one generation shows: `loop_chars` (the repeated tail's length in characters, 0 when
    it does not loop) and `loop_period` (its block's length), `hesitations` (in the thinking), and
    for math tasks `found` (the gold answer stated as a conclusion in the thinking; None for other
    tasks) with `first_found` (the share of the thinking's characters before the first such
    statement; None when not found)."""

    loops: bool
    loop_chars: int
    loop_period: int
    hesitations: int
    found: bool | None
    first_found: float | None


def read_trace(
    thinking: str, text: str, target: str | None, rules: TraceRules, *, math: bool
) -> TraceSignals:
    """The signals of one generation (`text` is all of it, `thinking` its thinking part);
    `target` the gold answer, used on math tasks only."""
    length, period = repeated_tail(text, rules.max_period, rules.loop_chars, rules.loop_repeats)
    found, first = None, None
    lowered = thinking.lower()  # both text signals read the lower-cased thinking: lower it once
    if math and target is not None:
        position = first_statement_of(thinking, target, rules, lowered=lowered)
        found = position is not None
        first = position / max(len(thinking), 1) if position is not None else None
    hesitations = len(hesitation_starts(thinking, rules, lowered=lowered))
    return TraceSignals(period > 0, length, period, hesitations, found, first)


# ---- loops ----------------------------------------------------------------------------------


def repeated_tail(
    text: str, max_period: int = 4000, min_chars: int = 100, repeats: int = 3
) -> tuple[int, int]:
    """The shortest block (at most `max_period` characters) that `text` ends in, repeated back to
    back over at least `repeats` blocks and `min_chars` characters: (the repeated tail's length,
    the block's length) in characters, or (0, 0). The last copy may be cut anywhere.

    Every candidate block must repeat the text's last `_KEY` characters, so candidates are found
    with `str.rfind` and each is checked with slice comparisons: linear in the tail, not in
    `max_period` times the text."""
    text = text.rstrip("\ufffd")
    n = len(text)
    if n < max(2 * _KEY, min_chars):
        return 0, 0
    key = text[n - _KEY :]
    low, end = max(0, n - _KEY - max_period), n - 1
    while (at := text.rfind(key, low, end)) >= 0:
        period = n - _KEY - at
        length = _periodic_run(text, period) + period
        if length >= repeats * period and length >= min_chars:
            return length, period
        end = at + _KEY - 1
    return 0, 0


def _periodic_run(text: str, period: int) -> int:
    """How many characters at the end of `text` equal the character `period` before them
    (galloping slice comparisons: O(run) character work, O(log run) Python steps per mismatch)."""
    n, run, step = len(text), 0, _KEY
    limit = n - period
    while run < limit:
        size = min(step, limit - run)
        high = n - run
        if text[high - size : high] == text[high - size - period : high - period]:
            run += size
            step *= 2
        elif size == 1:
            break
        else:
            step = size // 2
    return run


# ---- hesitations ----------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _marker_regex(markers: tuple[str, ...]) -> re.Pattern[str]:
    """A run of markers ("hmm, wait, wait") over lower-cased text: one alternation, longest first,
    a marker's last letter may repeat, none followed by a letter. It starts with literals, so the
    regex engine skips ahead between candidates (a leading look-behind or IGNORECASE would not:
    issue 31 measured 13–23 MB/s with them), and a run is one match however long."""
    words = sorted((m.lower().strip() for m in markers if m.strip()), key=len, reverse=True)
    alternatives = [re.escape(w).replace(r"\ ", r"\s+") + re.escape(w[-1]) + "*" for w in words]
    one = "(?:" + "|".join(alternatives) + ")(?![a-z])"
    return re.compile(one + "(?:" + _RUN_GAP + one + ")*")


def hesitation_starts(thinking: str, rules: TraceRules, *, lowered: str | None = None) -> list[int]:
    """Where each hesitation of `thinking` starts (characters; the lead-in word when there is one):
    a run of markers opening a sentence or clause, counted once (module docstring), plus every
    match of the task's own `hesitation_patterns`. `lowered`: `thinking.lower()`, when the caller
    has it already."""
    lowered = thinking.lower() if lowered is None else lowered
    regex = _marker_regex(rules.markers)
    leads = frozenset(rules.lead_ins)
    starts: list[int] = []
    at = 0
    while (match := regex.search(lowered, at)) is not None:
        begin = match.start()
        start = None if begin and lowered[begin - 1].isalpha() else _clause_opening(lowered, begin, leads)
        if start is None:  # inside a word ("await") or in prose ("we wait, hmm"): the run's next
            opener = _OPENER.search(lowered, begin, match.end())  # marker after an opener may open
            at = opener.end() if opener is not None else match.end()
            continue
        starts.append(start)
        at = match.end()
    for pattern in rules.hesitation_patterns:
        starts.extend(m.start() for m in re.finditer(pattern, thinking, re.MULTILINE))
    return sorted(set(starts))


def _clause_opening(lowered: str, begin: int, leads: frozenset[str]) -> int | None:
    """Where the hesitation whose marker starts at `begin` opens (its lead-in word, if any), or
    None when the marker does not open a sentence or clause."""
    at = begin
    gap = at
    while gap > 0 and lowered[gap - 1] in _LEAD_GAP:
        gap -= 1
    word = gap
    while word > 0 and lowered[word - 1].isalpha():
        word -= 1
    if word < gap and lowered[word:gap] in leads:
        at = word
    before = at
    while before > 0 and lowered[before - 1] in _PREFIX:
        before -= 1
    return at if before == 0 or lowered[before - 1] in _OPENERS else None


# ---- found, not given -----------------------------------------------------------------------

_BOX = re.compile(r"\\boxed\s*\{")
_ANSWER = re.compile(r"answer[\s*]*(?:is|should\s+be|would\s+be|must\s+be|will\s+be|=|:)(?:[\s*:]|\\\(|\$)*")
_HYPOTHETICAL = re.compile(r"\b(?:if|whether|suppose|assuming|assume|unless|what if)\b")
_VALUE_AFTER = re.compile(r"(?:=|\s(?:is|are|equals|has|have|be)\s)")
_SENTENCE_END = re.compile(r"\n|[.!?](?=\s|$)")
_CLAUSE_END = re.compile(r"\n|[.!?](?=\s|$)|[,;]")
_MAX_STATEMENT = 400
"""Characters a concluding sentence may span; a longer one is not read as a statement of a value."""


def answer_statements(
    thinking: str, rules: TraceRules, *, lowered: str | None = None
) -> list[tuple[int, str]]:
    """Every place `thinking` states an answer as a conclusion: (where the statement starts, the
    value stated), in order of position (the module docstring lists the forms). `lowered`:
    `thinking.lower()`, when the caller has it already."""
    lowered = thinking.lower() if lowered is None else lowered
    found: list[tuple[int, str]] = []
    for match in _BOX.finditer(thinking):
        content = _balanced(thinking, match.end() - 1)
        if content is not None:
            found.append((match.start(), content))
    for match in _ANSWER.finditer(lowered):
        if match.start() and lowered[match.start() - 1].isalpha():
            continue
        sentence_start = _sentence_start(lowered, match.start())
        if not _HYPOTHETICAL.search(lowered, sentence_start, match.start()):
            found.append((match.start(), _value(thinking, match.end())))
    for start, sentence in _concluding_sentences(thinking, lowered):
        cut = list(_VALUE_AFTER.finditer(sentence))
        if cut:
            found.append((start, sentence[cut[-1].end() :]))
    for pattern in rules.answer_patterns:
        found.extend((m.start(), m.group(1)) for m in re.finditer(pattern, thinking, re.MULTILINE))
    return sorted(found)


def first_statement_of(
    thinking: str, target: str, rules: TraceRules, *, lowered: str | None = None
) -> int | None:
    """Where the first conclusion of `thinking` stating `target` starts (characters), or None.
    At most `MAX_VERIFY` statements per generation go to math_verify (the rest compare cheaply)."""
    budget = MAX_VERIFY if rules.verify else 0
    number = _normal_gold(target)[1]
    for position, stated in answer_statements(thinking, rules, lowered=lowered):
        if number is not None and _DIGIT.search(stated) is None:
            continue  # a number gold is stated only with its digits (`_cheap_same`): skip the rest
        for value in _readings(stated):
            same = _cheap_same(value, target)
            if same is None and budget > 0:
                budget -= 1
                same = _verified(_normal_gold(target)[0], normal_answer(value))
            if same:
                return position
    return None


def _concluding_sentences(thinking: str, lowered: str) -> list[tuple[int, str]]:
    """(start, text) of every sentence that opens with a conclusion word, up to its end."""
    sentences = []
    for match in _conclusion_regex().finditer("\n" + lowered):  # the text's start opens a line
        begin = match.start(1) - 1
        end = _statement_end(thinking, match.end() - 1, sentence=True)
        if end is not None:
            sentences.append((begin, thinking[begin:end]))
    return sentences


@lru_cache(maxsize=1)
def _conclusion_regex() -> re.Pattern[str]:
    """A conclusion word opening a sentence: after a line break, or after . ! ? and a space or tab;
    markdown allowed. It starts with one character class (the sentence end), so the engine skips
    ahead between sentence ends: an alternation there ("[.!?][ \t]+|\n") has no such prefix in
    Python's compiler (`_get_charset_prefix` in Lib/re/_compiler.py reads a leading class or a
    branch of literals only) and tried a match at every character, twice as slow on 50 KB."""
    words = "|".join(re.escape(w) for w in sorted(CONCLUSION_WORDS, key=len, reverse=True))
    # [ \t] then [ \t*>#-]* is the language of the old [ \t]+[ \t*>#-]*, after a line break nothing
    # is required: the look-behind picks the branch once the class matched
    return re.compile(r"[.!?\n](?:(?<=\n)|[ \t])[ \t*>#-]*(" + words + r")(?![a-z])")


def _sentence_start(lowered: str, at: int) -> int:
    """Where the sentence holding position `at` starts (after the last . ! ? or line break)."""
    low = max(0, at - _MAX_STATEMENT)
    return max(lowered.rfind(mark, low, at) for mark in (". ", "! ", "? ", "\n")) + 1


def _value(thinking: str, start: int) -> str:
    """The value stated from `start` to the end of its clause."""
    end = _statement_end(thinking, start, sentence=False)
    return thinking[start : end if end is not None else min(len(thinking), start + _MAX_STATEMENT)]


def _statement_end(text: str, start: int, *, sentence: bool) -> int | None:
    """Where the clause (or, with `sentence`, the sentence) from `start` ends: a line break, or
    . ! ? followed by a space or the end, or (clause) , ; with every bracket and `$` before it
    closed; None when it runs past `_MAX_STATEMENT` characters."""
    pattern = _SENTENCE_END if sentence else _CLAUSE_END
    limit = min(len(text), start + _MAX_STATEMENT)
    at = start
    while (match := pattern.search(text, at, limit)) is not None:
        end = match.start()
        if text[end] == "\n" or _closed(text[start:end]):
            return end
        at = end + 1
    return limit if limit == len(text) else None


def _closed(span: str) -> bool:
    """Whether every bracket opened in `span` is closed in it, and its `$` pair up."""
    opened = span.count("(") + span.count("[") + span.count("{")
    return opened <= span.count(")") + span.count("]") + span.count("}") and span.count("$") % 2 == 0


def _balanced(text: str, brace: int) -> str | None:
    """The text inside the braces opening at `brace`, or None when they do not close."""
    depth = 0
    for at in range(brace, min(len(text), brace + 2 * _MAX_STATEMENT)):
        if text[at] == "{":
            depth += 1
        elif text[at] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : at]
    return None


# ---- comparing a stated answer with the gold one ---------------------------------------------

_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|boxed)\s*\{([^{}]*)\}")
_NOISE = ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\(", "\\)")
_TRAILING_WORDS = re.compile(r"\s+(?:[a-z][a-z/°%-]*\s*){1,4}$")
_WORD_END = frozenset("abcdefghijklmnopqrstuvwxyz/°%-")
"""What a value with trailing words ends in (the last character `_TRAILING_WORDS` can match)."""
_DIGIT = re.compile(r"\d")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_SIMPLE_FRACTION = re.compile(r"^([+-]?)(?:\\frac(?:\{(\d+)\}\{(\d+)\}|(\d)(\d))|(\d+)/(\d+))$")
_COMMAND = re.compile(r"\\[a-zA-Z]+")
MAX_VERIFY = 4
"""Statements of one generation that may go to math_verify (each costs a worker round trip)."""
_PROSE = re.compile(r"(?<![\\a-z])[a-z]{3,}")


def _readings(stated: str) -> tuple[str, ...]:
    """The stated text, and the same without trailing words ("24 positive divisors" -> "24")."""
    value = stated.strip().rstrip(".;:!").strip()
    if not value or value[-1] not in _WORD_END:  # `_TRAILING_WORDS` needs a word at the end
        return (value,)
    bare = _TRAILING_WORDS.sub("", value)
    return (value,) if bare == value or not bare else (value, bare)


def normal_answer(answer: str) -> str:
    """`answer` as compared: no spaces, `$`, `\\left`/`\\right`, `\\text{}` wrappers or edge
    punctuation; Unicode minus and infinity in ASCII / LaTeX; `\\dfrac` / `\\tfrac` as `\\frac`.
    Brackets stay: (a, b) and [a, b] differ."""
    text = answer
    if "\\" in text:  # LaTeX: most stated values have none, and skip this work
        for _ in range(3):
            unwrapped = _WRAPPER.sub(r"\1", text)
            if unwrapped == text:
                break
            text = unwrapped
        for noise in _NOISE:
            text = text.replace(noise, "")
        text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.replace("$", "").replace("**", "").replace("−", "-").replace("∞", "\\infty")
    text = "".join(text.split())
    return text.strip(".,;:*").replace("{,}", "")


@lru_cache(maxsize=256)
def _normal_gold(gold: str) -> tuple[str, int | Fraction | None]:
    """The gold answer's normal form and its value when it is a number (cached: one per item)."""
    normal = normal_answer(gold)
    return normal, _as_number(normal) if normal else None


def _as_number(text: str) -> int | Fraction | None:
    """`text` (normalized) as an exact number when it is an integer, a decimal or a simple fraction."""
    # isdecimal, not isdigit: "5²" is digits to isdigit and int() refuses it
    if text.isdecimal() or (text[:1] in "+-" and text[1:].isdecimal()):
        return int(text)  # the common case, without building a Fraction
    if _NUMBER.match(text):
        return Fraction(text)
    fraction = _SIMPLE_FRACTION.match(text)
    if fraction is None:
        return None
    sign, *parts = fraction.groups()
    top, bottom = next((a, b) for a, b in zip(parts[::2], parts[1::2], strict=True) if a is not None)
    if int(bottom) == 0:
        return None
    return Fraction(int(top), int(bottom)) * (-1 if sign == "-" else 1)


def same_answer(stated: str, gold: str, *, verify: bool = True) -> bool:
    """Whether `stated` states `gold`: decided cheaply where it can be (`_cheap_same`), else (with
    `verify`) by math_verify, through the judges' time-limited checker."""
    same = _cheap_same(stated, gold)
    if same is None:
        return verify and _verified(_normal_gold(gold)[0], normal_answer(stated))
    return same


def _cheap_same(stated: str, gold: str) -> bool | None:
    """Equal normalized text: the same. A number gold: the same only as an equal number (3/4,
    0.75, \\frac{3}{4}). Intervals or tuples that differ only in their brackets: not the same. A
    value much longer than the gold, holding prose, or of another shape (other LaTeX commands,
    letters or outer brackets): not the same. Otherwise None: math_verify decides."""
    ours, (theirs, number) = normal_answer(stated), _normal_gold(gold)
    if not ours:
        return False
    if ours == theirs:
        return True
    if number is not None:
        stated_number = _as_number(ours)
        return stated_number is not None and stated_number == number
    if _bracketed(ours) and _bracketed(theirs) and ours[1:-1] == theirs[1:-1]:
        return False  # (a, b) vs [a, b]: the brackets are part of the answer
    if len(ours) > 2 * len(theirs) + 20 or _PROSE.search(ours.lower()):
        return False
    return None if _shape(ours) == _shape(theirs) else False


def _shape(answer: str) -> tuple[frozenset[str], frozenset[str], str]:
    """What an equivalent form keeps: its LaTeX commands, its letters, its outer brackets."""
    commands = frozenset(_COMMAND.findall(answer))
    letters = frozenset(c for c in _COMMAND.sub("", answer) if c.isalpha())
    edges = answer[:1] + answer[-1:] if _bracketed(answer) else ""
    return commands, letters, edges


def _bracketed(answer: str) -> bool:
    return len(answer) > 1 and answer[0] in "([" and answer[-1] in ")]"


@lru_cache(maxsize=4096)
def _verified(gold: str, stated: str) -> bool:
    from quantscope.tasks.math_check import shared_checker

    return shared_checker().equivalent(gold, stated)
