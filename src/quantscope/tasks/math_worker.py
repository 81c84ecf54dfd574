"""The math-equivalence worker: a child process that runs math_verify, one request per line.

Run by `quantscope.tasks.math_check` as `python -P math_worker.py INNER_TIMEOUT_S MEMORY_BYTES`,
never imported by the parent. Protocol on stdin/stdout, one JSON object per line:
`{"gold": "\\\\frac{1}{2}", "predicted": "0.5"}` -> `1` (equivalent) or `0`. It prints `ready` once
math_verify is imported. math_verify's own signal-based limits run here in the main thread;
the parent additionally kills this process when an answer blows past its wall-clock limit
(a C-level computation such as a huge integer power does not see signals).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys


def _limit_memory(max_bytes: int) -> None:
    """Cap this process's address space so a runaway expression fails fast with MemoryError."""
    if max_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def main() -> None:
    """Serve equivalence requests until stdin closes."""
    inner_timeout_s = int(sys.argv[1])
    _limit_memory(int(sys.argv[2]))
    # Keep the protocol channel private: anything a library prints goes to stderr instead.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # math_verify logs every timeout with the whole input; a wrong answer is the only outcome we need.
    logging.disable(logging.CRITICAL)

    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    # Pay the lazy parser set-up now, so the first timed request is not charged for it.
    verify(parse("\\boxed{\\frac{1}{2}}"), parse("\\boxed{[0, 1)}"))
    channel.write("ready\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            gold = parse("\\boxed{" + request["gold"] + "}", parsing_timeout=inner_timeout_s)
            predicted = parse("\\boxed{" + request["predicted"] + "}", parsing_timeout=inner_timeout_s)
            same = bool(gold) and bool(predicted) and verify(gold, predicted, timeout_seconds=inner_timeout_s)
        except (Exception, TimeoutException):  # any failure to compare scores as wrong
            same = False
        channel.write("1\n" if same else "0\n")


if __name__ == "__main__":
    main()
