"""The agent's event log: sequence-numbered, bounded, with waiters for live streaming."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from mags.agent.models import AgentEvent


EVENT_OVERHEAD = 200  # bytes an event costs besides its text (object, fields)


def _event_bytes(fields: dict[str, Any]) -> int:
    return EVENT_OVERHEAD + sum(len(v) for v in fields.values() if isinstance(v, str | bytes))


class EventLog:
    """Keeps the last ``capacity`` events, at most ``max_bytes`` of them; readers resume from a
    sequence number.

    The byte bound matters more than the count: log events carry up to a line each, and a
    tenant printing long lines must not grow the agent's memory without limit.
    """

    def __init__(self, capacity: int = 200_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._events: deque[AgentEvent] = deque()
        self._sizes: deque[int] = deque()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0
        self._seq = 0
        self._cond = asyncio.Condition()
        self._pending = False
        self._followers: dict[int, int] = {}  # follower id -> last seq handed to it
        self._next_follower = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def emit(self, type_: str, sandbox_id: str, job_id: str, **fields: Any) -> AgentEvent:
        self._seq += 1
        ev = AgentEvent(seq=self._seq, type=type_, sandbox_id=sandbox_id, job_id=job_id, ts=time.time(), **fields)  # type: ignore[arg-type]
        size = _event_bytes(fields)
        self._events.append(ev)
        self._sizes.append(size)
        self._bytes += size
        while len(self._events) > 1 and (len(self._events) > self._capacity or self._bytes > self._max_bytes):
            self._events.popleft()
            self._bytes -= self._sizes.popleft()
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

    async def drained(self, timeout: float) -> bool:
        """Wait until every follower was handed every event so far (shutdown); False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(seq < self._seq for seq in self._followers.values()):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def follow(self, after: int) -> AsyncIterator[list[AgentEvent]]:
        """Yield batches of events with seq > after, forever."""
        fid = self._next_follower
        self._next_follower += 1
        self._followers[fid] = after
        try:
            async for batch in self._follow(after, fid):
                yield batch
        finally:
            self._followers.pop(fid, None)

    async def _follow(self, after: int, fid: int) -> AsyncIterator[list[AgentEvent]]:
        cursor = after
        while True:
            batch = self.since(cursor)
            if batch:
                cursor = batch[-1].seq
                yield batch
                # the consumer resumed us: the batch went out
                self._followers[fid] = cursor
                continue
            async with self._cond:
                if self._seq <= cursor:
                    try:
                        await asyncio.wait_for(self._cond.wait(), 15.0)
                    except TimeoutError:
                        yield []  # heartbeat: lets the HTTP layer notice dead clients
