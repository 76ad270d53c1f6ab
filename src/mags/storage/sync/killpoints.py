"""Crash injection for tests: SIGKILL ourselves at a named step of a sync or restore.

Set ``MAGS_STORAGE_KILL_AT=<step>`` (or ``<step>:<n>`` to die the n-th time the step is reached)
in a syncer subprocess's environment.  Unset, :func:`killpoint` costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "MAGS_STORAGE_KILL_AT"

_target: tuple[str, int] | None = None
_counts: dict[str, int] = {}
_lock = threading.Lock()


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, nth = value.partition(":")
    return name, int(nth) if nth else 1


_target = _parse(os.environ.get(ENV))


def killpoint(step: str) -> None:
    """Die at once (SIGKILL, no cleanup) if the environment asks for it at ``step``."""
    if _target is None or _target[0] != step:
        return
    with _lock:
        _counts[step] = _counts.get(step, 0) + 1
        hit = _counts[step] >= _target[1]
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)
