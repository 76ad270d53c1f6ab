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
        self._followers: dict[int, int] = {}  # follower id -> last seq handed to it
        self._next_follower = 0

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
