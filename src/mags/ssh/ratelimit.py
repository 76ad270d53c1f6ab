"""Failed-authentication limits per client address: a token bucket, then a temporary ban.

Every failed authentication (unknown key, key of a stopped sandbox, a user other than
``root``) takes one token from the client address's bucket; the bucket refills slowly.  An
empty bucket bans the address for ``ban_s``: its connections are dropped before they can try
again.  Successful logins cost nothing, so a busy legitimate client is never slowed down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# enough for a user fumbling with a few keys; far too few for guessing
DEFAULT_BURST = 10
DEFAULT_REFILL_PER_S = 1 / 6  # 10 more failures per minute
DEFAULT_BAN_S = 60.0
# addresses remembered at most (each entry is tiny; the oldest full buckets go first)
MAX_TRACKED = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float
    banned_until: float = 0.0


class AuthRateLimiter:
    """Token bucket of failed authentications per client address."""

    def __init__(
        self,
        burst: int = DEFAULT_BURST,
        refill_per_s: float = DEFAULT_REFILL_PER_S,
        ban_s: float = DEFAULT_BAN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = float(burst)
        self.refill_per_s = refill_per_s
        self.ban_s = ban_s
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.refill_per_s)
        bucket.updated = now

    def banned(self, addr: str) -> bool:
        """True while ``addr`` is banned."""
        bucket = self._buckets.get(addr)
        return bucket is not None and bucket.banned_until > self.clock()

    def failure(self, addr: str) -> bool:
        """Record one failed authentication; returns True if ``addr`` is banned from now on."""
        now = self.clock()
        bucket = self._buckets.get(addr)
        if bucket is None:
            self._forget_some(now)
            bucket = self._buckets[addr] = _Bucket(self.burst, now)
        self._refill(bucket, now)
        bucket.tokens -= 1.0
        if bucket.tokens < 0.0 and bucket.banned_until <= now:
            bucket.banned_until = now + self.ban_s
            # after the ban, start again from an empty bucket: only slow retries get through
            bucket.tokens = 0.0
            return True
        return bucket.banned_until > now

    def _forget_some(self, now: float) -> None:
        """Bound memory: drop buckets that are full again and not banned, or the oldest."""
        if len(self._buckets) < MAX_TRACKED:
            return
        for addr, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            if bucket.tokens >= self.burst and bucket.banned_until <= now:
                del self._buckets[addr]
        while len(self._buckets) >= MAX_TRACKED:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


# like sshd's MaxStartups: logins in progress (connected, not yet authenticated)
MAX_STARTUPS_PER_ADDR = 10
MAX_STARTUPS = 100


class StartupLimiter:
    """Counts unauthenticated connections per client address and in all; refuses past a cap.

    Key exchange costs the gateway CPU before anyone is authenticated: without a cap, one
    address could hold hundreds of half-done logins open until ``login_timeout``.
    """

    def __init__(self, per_addr: int = MAX_STARTUPS_PER_ADDR, total: int = MAX_STARTUPS) -> None:
        self.per_addr = per_addr
        self.total = total
        self._counts: dict[str, int] = {}
        self._all = 0

    def begin(self, addr: str) -> bool:
        """A login starts; False (and nothing counted) if a cap is reached."""
        if self._all >= self.total or self._counts.get(addr, 0) >= self.per_addr:
            return False
        self._counts[addr] = self._counts.get(addr, 0) + 1
        self._all += 1
        return True

    def end(self, addr: str) -> None:
        """A login finished (authenticated, or the connection closed)."""
        n = self._counts.get(addr, 0)
        if n <= 0:
            return
        if n == 1:
            del self._counts[addr]
        else:
            self._counts[addr] = n - 1
        self._all -= 1

    def in_progress(self, addr: str | None = None) -> int:
        return self._all if addr is None else self._counts.get(addr, 0)
