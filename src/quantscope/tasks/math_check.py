"""Math answer checking with math_verify under a hard wall-clock limit.

math_verify (`parse` + `verify`) decides whether a model's final `\\boxed{}` equals the gold
answer (`\\frac{1}{2}` vs `0.5`, `\\sqrt{2}` vs `2^{1/2}`, intervals, sets). Its own timeout
uses `signal.alarm`, which only works in the main thread and cannot interrupt C code (a huge
integer power), so a model answer like `10^{10^{10}}` could hang an evaluation. Here the
comparison runs in a worker process (`math_worker.py`): the parent waits at most `timeout_s`,
then kills the worker, scores the answer wrong and starts a fresh worker for the next one.
Answers longer than `MAX_ANSWER_CHARS` are wrong without being parsed. POSIX only (the wait
uses `select` on the worker's pipe).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from quantscope.errors import QuantscopeError
from quantscope.tasks.answers import clip, final_answer_text, last_boxed, parse_integer
from quantscope.tasks.base import Judgement

DEFAULT_TIMEOUT_S = 6.0
"""Wall-clock seconds one comparison may take (parsing both sides and verifying)."""
MAX_ANSWER_CHARS = 1000
"""Longer boxed answers are scored wrong unparsed; MATH-500 gold answers are under 200 characters."""
WORKER_MEMORY_BYTES = 2 * 1024**3
"""Address-space cap of the worker, so a runaway expression fails fast instead of swapping."""
STARTUP_TIMEOUT_S = 120.0
"""How long the worker may take to import math_verify (slow on a loaded machine)."""

_WORKER_SCRIPT = Path(__file__).with_name("math_worker.py")


class MathChecker:
    """Decides math equivalence in a killable worker process; safe to share between threads.

    The worker starts on first use and is reused; one that exceeds `timeout_s` (seconds) or
    dies is killed and replaced on the next call. `close()` (or the context manager) stops it.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()
        self._pending = b""

    def equivalent(self, gold: str, predicted: str) -> bool:
        """True when math_verify finds `predicted` equal to `gold` (both bare LaTeX, no `\\boxed`).

        False when it does not, when `predicted` is empty or longer than `MAX_ANSWER_CHARS`,
        or when the comparison takes longer than `timeout_s` seconds.
        """
        if not predicted.strip() or len(predicted) > MAX_ANSWER_CHARS:
            return False
        if _compact(gold) == _compact(predicted):
            return True
        request = json.dumps({"gold": gold, "predicted": predicted}).encode() + b"\n"
        with self._lock:
            process = self._running_worker()
            try:
                assert process.stdin is not None
                process.stdin.write(request)
                process.stdin.flush()
                reply = self._read_line(process, time.monotonic() + self.timeout_s)
            except (BrokenPipeError, EOFError):
                reply = None
            if reply is None:
                self._stop_worker()
                return False
            return reply.strip() == b"1"

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        with self._lock:
            self._stop_worker()

    def __enter__(self) -> MathChecker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _running_worker(self) -> subprocess.Popen[bytes]:
        """The live worker, started (and waited for until ready) when there is none."""
        if self._owner_pid != os.getpid():
            # A forked copy of this checker: the worker's pipes belong to the parent process.
            self._process, self._pending, self._owner_pid = None, b"", os.getpid()
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop_worker()
        inner_timeout_s = max(1, int(self.timeout_s / 3))  # parse gold, parse answer, verify
        process = subprocess.Popen(
            [sys.executable, "-P", str(_WORKER_SCRIPT), str(inner_timeout_s), str(WORKER_MEMORY_BYTES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        self._process = process
        try:
            ready = self._read_line(process, time.monotonic() + STARTUP_TIMEOUT_S)
        except EOFError:
            ready = None
        if ready != b"ready\n":
            self._stop_worker()
            raise QuantscopeError(
                f"the math answer checker ({_WORKER_SCRIPT}) did not start within {STARTUP_TIMEOUT_S:.0f} s; "
                "check that math-verify is installed in this Python environment (pip install math-verify)"
            )
        return process

    def _read_line(self, process: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        """One line from the worker, or None past `deadline` (monotonic seconds); EOFError if it died."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise EOFError("math checker worker exited")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line + b"\n"

    def _stop_worker(self) -> None:
        """Kill the worker (if any) and forget its unread output."""
        process, self._process, self._pending = self._process, None, b""
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def _compact(latex: str) -> str:
    """`latex` without whitespace, for the cheap exact-match shortcut."""
    return "".join(latex.split())


_shared_checker: MathChecker | None = None
_shared_lock = threading.Lock()


def shared_checker() -> MathChecker:
    """The process-wide checker the built-in math tasks use (one worker process, stopped at exit)."""
    global _shared_checker
    with _shared_lock:
        if _shared_checker is None:
            _shared_checker = MathChecker()
            atexit.register(_shared_checker.close)
        return _shared_checker


def judge_math(gold: str, answer: str, checker: MathChecker | None = None) -> Judgement:
    """Score a math answer: the last `\\boxed{}` of `answer` against `gold` with math_verify.

    `answer` is the final answer text (after the thinking). No box means wrong with
    `extracted=None`; the comparison is bounded by the checker's `timeout_s` seconds.
    """
    boxed = last_boxed(final_answer_text(answer))
    if boxed is None:
        return Judgement(correct=False, extracted=None)
    return Judgement(correct=(checker or shared_checker()).equivalent(gold, boxed), extracted=clip(boxed))


def judge_integer(gold: int, answer: str, checker: MathChecker | None = None) -> Judgement:
    """Score an answer whose gold is an integer (AIME): `\\boxed{042}` equals 42.

    A box holding a plain integer is compared exactly; any other content (`42.0`, `\\frac{84}{2}`)
    goes to math_verify like `judge_math`.
    """
    boxed = last_boxed(final_answer_text(answer))
    if boxed is None:
        return Judgement(correct=False, extracted=None)
    value = parse_integer(boxed)
    if value is not None:
        return Judgement(correct=value == gold, extracted=clip(boxed))
    same = (checker or shared_checker()).equivalent(str(gold), boxed)
    return Judgement(correct=same, extracted=clip(boxed))


def same_math_answer(first: str, second: str, checker: MathChecker | None = None) -> bool:
    """Whether two extracted math answers are the same as `judge_math` compares an answer with the
    gold: math_verify in the time-limited worker (`\\frac{1}{2}`, `\\dfrac12` and `0.5` agree)."""
    return (checker or shared_checker()).equivalent(first, second)
