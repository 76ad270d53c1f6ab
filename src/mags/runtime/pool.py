"""A pool of pre-started, interchangeable sandboxes so a run does not pay for start-up.

Only *plain* sandboxes are pooled: default image, fresh scratch writable layer, no extra
layers or mounts.  A taken sandbox gets the caller's id and limits; the pool then refills in
the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mags.runtime.base import Sandbox

log = logging.getLogger(__name__)


class WarmPool:
    def __init__(self, create: Callable[[], Awaitable[Sandbox]], size: int, refill_delay: float = 0.015) -> None:
        self._create = create
        self.size = size
        self.refill_delay = refill_delay
        self._ready: list[Sandbox] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.failures = 0

    def start(self) -> None:
        if self.size > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refill_loop())

    @property
    def ready(self) -> int:
        return len(self._ready)

    def take(self) -> Sandbox | None:
        while self._ready:
            sb = self._ready.pop(0)
            self._wake.set()
            if not sb.conn.closed.is_set():
                return sb
        self._wake.set()
        return None

    async def wait_full(self, timeout: float = 30.0) -> None:
        """Wait until the pool holds ``size`` sandboxes (benchmarks and tests)."""
        async def _wait() -> None:
            while len(self._ready) < self.size:
                await asyncio.sleep(0.005)

        await asyncio.wait_for(_wait(), timeout)

    async def drain(self) -> None:
        ready, self._ready = self._ready, []
        await asyncio.gather(*(sb.destroy() for sb in ready), return_exceptions=True)
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        await self.drain()

    async def _refill_loop(self) -> None:
        while not self._closed:
            if len(self._ready) >= self.size:
                self._wake.clear()
                await self._wake.wait()
                # a sandbox was just taken: let its first run go before building the next
                await asyncio.sleep(self.refill_delay)
                continue
            try:
                sb = await self._create()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving cold starts; retry later
                self.failures += 1
                log.warning("warm pool: cannot pre-start a sandbox: %s", exc)
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(self.failures, 6)))
                continue
            self.failures = 0
            if self._closed:
                await sb.destroy()
                return
            self._ready.append(sb)
