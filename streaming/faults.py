"""Named crash points for the fault-injection suite.

The runner calls :func:`crash_point` at the places a processor can die: after a poll, after its
outputs are produced, inside the transaction commit, and while a checkpoint is being written. When
the environment variable ``ANOMREC_CRASH_AT`` names that point, the process kills itself with
SIGKILL there, as ``kill -9`` from outside would: no ``finally`` blocks, no flushes, no atexit.
``ANOMREC_CRASH_AFTER=N`` lets the first N passes through the point go by (default 0, the first
pass crashes). ``ANOMREC_CRASH_SIGNAL=SIGSTOP`` freezes the process there instead, once, so a test
can make a zombie frozen inside an open transaction and wake it with SIGCONT.

With the variable unset, a crash point costs one dictionary lookup.

Examples
--------
>>> from anomrec.streaming.faults import CRASH_POINTS, crash_point
>>> crash_point("after-poll")  # ANOMREC_CRASH_AT is not set: nothing happens
>>> CRASH_POINTS
('after-poll', 'after-produce', 'in-commit', 'in-checkpoint-write')
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_POINTS = ("after-poll", "after-produce", "in-commit", "in-checkpoint-write")
CRASH_AT_ENV = "ANOMREC_CRASH_AT"
CRASH_AFTER_ENV = "ANOMREC_CRASH_AFTER"
CRASH_SIGNAL_ENV = "ANOMREC_CRASH_SIGNAL"

_passes: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """SIGKILL (or SIGSTOP) this process here if ``ANOMREC_CRASH_AT`` names ``name``, on the pass
    after the first ``ANOMREC_CRASH_AFTER``."""
    target = os.environ.get(CRASH_AT_ENV)
    if target is None or target != name:
        return
    if name not in CRASH_POINTS:  # pragma: no cover - a typo in our own call site
        raise ValueError(f"unknown crash point {name!r}: expected one of {', '.join(CRASH_POINTS)}")
    allowed = int(os.environ.get(CRASH_AFTER_ENV, "0"))
    _passes[name] += 1
    if _passes[name] == allowed + 1:
        os.kill(os.getpid(), signal.Signals[os.environ.get(CRASH_SIGNAL_ENV, "SIGKILL")])
