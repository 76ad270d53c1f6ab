"""Local port forwarding (``ssh -L``, direct-tcpip) onto the agent's ``connect`` WebSocket.

Only the sandbox's own ports are reachable: the destination must name the sandbox
(``localhost``, a loopback address, ``mags-vm`` or the sandbox's address); the agent then
connects to that port of the sandbox.  Anything else is refused, so the gateway is never an
open proxy into the host's networks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
from websockets.exceptions import ConnectionClosed

from mags.ssh.bridge import _STOP, ChannelBridge

log = logging.getLogger(__name__)

SANDBOX_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "mags-vm"})


def names_sandbox(host: str) -> bool | None:
    """True if ``host`` means the sandbox itself, False if it cannot, None: ask (an IP address)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name in SANDBOX_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    return True if addr.is_loopback else None


class ForwardSession(ChannelBridge, asyncssh.SSHTCPSession):  # type: ignore[type-arg]
    """One forwarded TCP connection: bytes both ways between the channel and the WebSocket."""

    def __init__(self, ws: Any, label: str) -> None:
        self._bridge_init()
        self._ws = ws
        self._label = label

    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def session_started(self) -> None:
        self._start(self._run())

    def data_received(self, data: bytes, datatype: Any) -> None:
        self._enqueue(bytes(data))

    def eof_received(self) -> bool:
        # the agent's tunnel has no half-close: keep reading the answer until the sandbox closes
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._bridge_lost()
        if self._task is None:  # never started: still close the tunnel
            asyncio.get_running_loop().create_task(self._stop_sender(None, self._ws))

    async def _run(self) -> None:
        sender = asyncio.get_running_loop().create_task(self._send_loop(self._ws))
        try:
            async for msg in self._ws:
                if isinstance(msg, bytes):
                    if msg and not await self._write(msg):
                        break
                else:  # the agent could not connect: {"type": "error", ...}
                    log.info("ssh %s: forward failed: %s", self._label, msg[:200])
                    break
        except ConnectionClosed:
            pass
        finally:
            self._queue.put_nowait(_STOP)
            await self._stop_sender(sender, self._ws)
        if not self._closed and self._chan is not None:
            try:
                self._chan.write_eof()
            except (BrokenPipeError, OSError):
                pass
            self._chan.close()


ConnectOpener = Callable[[int], Awaitable[Any]]
