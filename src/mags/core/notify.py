"""In-process wake-ups for long-polls and log followers, keyed by job id.

The event ingest calls :meth:`JobNotifier.notify` after every commit that touched a job;
whoever waits on that job re-reads it.  A waiter subscribes *before* reading the database,
so a change committed between the read and the wait is never missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

# The notifier is in-process; re-reading this often keeps waits correct when the event
# ingest runs in another process sharing the database.
RECHECK_S = 1.0


class JobNotifier:
    """A registry of futures per job, resolved on :meth:`notify`."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.closed = False

    def subscribe(self, job_id: str) -> asyncio.Future[None]:
        """A future resolved at the next change of ``job_id``; pair with :meth:`unsubscribe`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.closed:
            fut.set_result(None)
            return fut
        self._waiters.setdefault(job_id, set()).add(fut)
        return fut

    def close(self) -> None:
        """Wake every waiter for good (server shutting down: answer long-polls now)."""
        self.closed = True
        self.notify(list(self._waiters))

    def unsubscribe(self, job_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._waiters[job_id]
        if not fut.done():
            fut.cancel()

    def notify(self, job_ids: Iterable[str]) -> None:
        """Wake everyone waiting on any of ``job_ids``."""
        for job_id in job_ids:
            waiters = self._waiters.pop(job_id, None)
            if waiters:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)

    async def wait(self, fut: asyncio.Future[None], timeout: float) -> bool:
        """Wait for a subscribed future up to ``timeout`` seconds; True if it fired."""
        if timeout <= 0:
            return fut.done()
        done, _ = await asyncio.wait((fut,), timeout=timeout)
        return bool(done)

    def waiting(self, job_id: str) -> int:
        """How many waiters a job has (for tests and metrics)."""
        return len(self._waiters.get(job_id, ()))


async def wait_until(
    notifier: JobNotifier,
    job_id: str,
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    timeout: float,
) -> T:
    """``read()`` once ``done`` holds for it, or as it is after ``timeout`` seconds.

    Woken by every change of ``job_id``; re-read at least every ``RECHECK_S`` anyway.  On
    shutdown (notifier closed) it answers at once with what it read.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        fut = notifier.subscribe(job_id)
        try:
            value = await read()
            remaining = deadline - loop.time()
            if done(value) or remaining <= 0 or notifier.closed:
                return value
            await notifier.wait(fut, min(remaining, RECHECK_S))
        finally:
            notifier.unsubscribe(job_id, fut)
