"""Failed-authentication limits: a burst, a ban, slow refill, bounded memory."""

from __future__ import annotations

from mags.ssh import ratelimit
from mags.ssh.ratelimit import AuthRateLimiter, StartupLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_ban_then_slow_retries() -> None:
    clock = Clock()
    rl = AuthRateLimiter(burst=3, refill_per_s=0.5, ban_s=60, clock=clock)
    assert [rl.failure("1.2.3.4") for _ in range(3)] == [False, False, False]
    assert not rl.banned("1.2.3.4")
    assert rl.failure("1.2.3.4") is True  # the 4th failure in a row bans
    assert rl.banned("1.2.3.4") and not rl.banned("5.6.7.8")
    clock.now += 59
    assert rl.banned("1.2.3.4")
    clock.now += 2
    assert not rl.banned("1.2.3.4")
    # after a ban the bucket starts empty: only one failure per refill period gets through
    assert rl.failure("1.2.3.4") is False  # 61 s of refill, capped at the burst of 3
    clock.now += 1000
    assert [rl.failure("1.2.3.4") for _ in range(4)] == [False, False, False, True]


def test_refill_allows_a_steady_trickle() -> None:
    clock = Clock()
    rl = AuthRateLimiter(burst=2, refill_per_s=1.0, ban_s=60, clock=clock)
    for _ in range(20):
        assert rl.failure("10.0.0.1") is False
        clock.now += 1.0


def test_memory_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_TRACKED", 100)
    clock = Clock()
    rl = AuthRateLimiter(burst=5, refill_per_s=1.0, ban_s=60, clock=clock)
    for i in range(1000):
        rl.failure(f"10.0.{i // 256}.{i % 256}")
    assert len(rl) <= 100


def test_startups_are_capped_per_address_and_in_all() -> None:
    sl = StartupLimiter(per_addr=2, total=3)
    assert sl.begin("a") and sl.begin("a")
    assert not sl.begin("a")  # a third login in progress from one address
    assert sl.begin("b")
    assert not sl.begin("c")  # the total cap
    sl.end("a")
    assert sl.begin("c")
    for addr in ("a", "b", "c", "c"):  # an extra end() is harmless
        sl.end(addr)
    assert sl.in_progress() == 0 and sl.in_progress("a") == 0
