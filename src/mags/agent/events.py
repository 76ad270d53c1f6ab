"""The agent's event log: sequence-numbered, bounded, with waiters for live streaming."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from mags.agent.models import AgentEvent


class EventLog:
    """Keeps the last ``capacity`` events; readers resume from a sequence number."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._events: deque[AgentEvent] = deque(maxlen=capacity)
        self._seq = 0
        self._cond = asyncio.Condition()
        self._pending = False

    @property
    def last_seq(self) -> int:
        return self._seq

    def emit(self, type_: str, sandbox_id: str, job_id: str, **fields: Any) -> AgentEvent:
        self._seq += 1
        ev = AgentEvent(seq=self._seq, type=type_, sandbox_id=sandbox_id, job_id=job_id, ts=time.time(), **fields)  # type: ignore[arg-type]
        self._events.append(ev)
        if not self._pending:
            # wake readers once per loop iteration, not once per line
            self._pending = True
            asyncio.get_running_loop().call_soon(self._wake)
        return ev

    def _wake(self) -> None:
        self._pending = False
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def since(self, after: int) -> list[AgentEvent]:
        out: list[AgentEvent] = []
        for ev in reversed(self._events):  # O(new events): readers are usually near the end
            if ev.seq <= after:
                break
            out.append(ev)
        out.reverse()
        return out

    async def follow(self, after: int) -> AsyncIterator[list[AgentEvent]]:
        """Yield batches of events with seq > after, forever."""
        cursor = after
        while True:
            batch = self.since(cursor)
            if batch:
                cursor = batch[-1].seq
                yield batch
                continue
            async with self._cond:
                if self._seq <= cursor:
                    try:
                        await asyncio.wait_for(self._cond.wait(), 15.0)
                    except TimeoutError:
                        yield []  # heartbeat: lets the HTTP layer notice dead clients
