"""Flow control between an SSH channel and an agent WebSocket (shared by sessions and forwards).

SSH → sandbox: asyncssh hands us data in callbacks; it is queued in order (with control
messages between) and sent by one task.  Past ``INBOUND_HIGH`` queued bytes the channel stops
reading, so the client's window closes instead of our memory growing.
Sandbox → SSH: writes wait while asyncssh says the channel's send buffer is full
(``pause_writing``), so a slow client slows the WebSocket reads and hence the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

INBOUND_HIGH = 1 << 20  # bytes queued towards the sandbox before the channel pauses reading

# ends the sender task
_STOP = object()


class ChannelBridge:
    """Queue towards a WebSocket with back-pressure on an asyncssh channel; mixed into sessions."""

    _chan: Any

    def _bridge_init(self) -> None:
        self._chan = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queued = 0
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -------------------------------------------------------------- SSH → WebSocket
    def _enqueue(self, item: bytes | str) -> None:
        """Queue stdin bytes (binary message) or a control message (text) for the sandbox."""
        self._queue.put_nowait(item)
        if isinstance(item, bytes):
            self._queued += len(item)
            if self._queued > INBOUND_HIGH and not self._reading_paused and self._chan is not None:
                self._reading_paused = True
                self._chan.pause_reading()

    async def _send_loop(self, ws: Any) -> None:
        """Send queued items in order until stopped; resumes the channel when the queue drains."""
        while (item := await self._dequeue()) is not _STOP:
            await ws.send(item)

    async def _dequeue(self) -> Any:
        """The next queued item (or ``_STOP``), reading from the channel again once it drained."""
        item = await self._queue.get()
        if isinstance(item, bytes):
            self._queued -= len(item)
            if self._reading_paused and self._queued < INBOUND_HIGH // 2 and not self._closed:
                self._reading_paused = False
                self._chan.resume_reading()
        return item

    # -------------------------------------------------------------- WebSocket → SSH
    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def _write(self, data: bytes, stderr: bool = False) -> bool:
        """Write to the client once it has room; False if the channel is gone."""
        if not self._writable.is_set():
            await self._writable.wait()
        if self._closed or self._chan is None:
            return False
        try:
            if stderr:
                self._chan.write_stderr(data)
            else:
                self._chan.write(data)
        except (BrokenPipeError, OSError):
            return False
        return True

    # -------------------------------------------------------------- lifetime
    def _start(self, coro: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(coro)

    def _bridge_lost(self) -> None:
        """The SSH channel closed: stop pumping (closing the WebSocket ends the sandbox side)."""
        self._closed = True
        self._writable.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    @staticmethod
    async def _stop_sender(sender: asyncio.Task[None] | None, ws: Any) -> None:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        with contextlib.suppress(Exception):
            await ws.close()
