"""Background tasks of the server: stopping one, and running work every N seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Periodic:
    """Calls ``tick()`` every ``interval`` seconds in a task; a failing tick is logged and the
    next one runs as planned."""

    def __init__(self, name: str, interval: float, tick: Callable[[], Awaitable[Any]], failure: str) -> None:
        self.name = name
        self.interval = interval
        self.tick = tick
        self.failure = failure  # logged with the traceback when a tick raises
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except Exception:  # retried at the next tick
                log.warning("%s", self.failure, exc_info=True)
