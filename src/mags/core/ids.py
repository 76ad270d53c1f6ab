"""Identifiers, secrets and clocks used by the control plane."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from datetime import UTC, datetime

TOKEN_PREFIX = "mags_"


def new_request_id() -> str:
    """A job's public id: a random UUID4 string."""
    return str(uuid.uuid4())


def new_vm_id() -> str:
    """A sandbox id: ``vm-`` + 12 random hex digits."""
    return "vm-" + secrets.token_hex(6)


def new_token() -> str:
    """A fresh API token (shown to the user once, never stored)."""
    return TOKEN_PREFIX + secrets.token_hex(24)


def hash_token(token: str) -> str:
    """The sha256 hex digest we store and look tokens up by."""
    return hashlib.sha256(token.encode()).hexdigest()


class Clock:
    """Wall-clock seconds since the epoch, strictly increasing within one process.

    Job listing sorts by ``created_at``; two jobs created in the same microsecond would
    otherwise sort arbitrarily.
    """

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self) -> float:
        now = time.time()
        if now <= self._last:
            now = self._last + 1e-6
        self._last = now
        return now


def iso(ts: float | None) -> str | None:
    """Render epoch seconds as ISO-8601 UTC with millisecond precision (``...Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
