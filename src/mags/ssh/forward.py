"""Local port forwarding (``ssh -L``, direct-tcpip) onto the agent's ``connect`` WebSocket.

Only the sandbox's own ports are reachable: the destination must name the sandbox
(``localhost``, a loopback address, ``mags-vm`` or the sandbox's address); the agent then
connects to that port of the sandbox.  Anything else is refused, so the gateway is never an
open proxy into the host's networks.

The agent connects to the sandbox's *address*, which a server bound to loopback only (Vite,
``rails s``, many dev servers) never sees.  When the agent answers "nothing listens", the
forward falls back to a small relay started in the sandbox through ``attach`` that connects
to ``localhost:PORT`` from inside; what the client sent meanwhile is replayed, so the client
notices nothing.  The relay also carries half-closes, which the agent's tunnel cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
from websockets.exceptions import ConnectionClosed

from mags.ssh.bridge import _STOP, ChannelBridge

log = logging.getLogger(__name__)

SANDBOX_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "mags-vm"})
# client bytes kept for a replay through the relay, until the sandbox answers (then dropped)
REPLAY_MAX = 1 << 20
# connects to localhost:PORT inside the sandbox (IPv4 or IPv6 loopback); stdin/stdout are the stream
RELAY = """\
import os, socket, sys, threading
s = socket.create_connection(("localhost", int(sys.argv[1])), timeout=10)
s.settimeout(None)
def up():
    try:
        while True:
            d = os.read(0, 65536)
            if not d:
                break
            s.sendall(d)
    finally:
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
threading.Thread(target=up, daemon=True).start()
out = sys.stdout.buffer
while True:
    d = s.recv(65536)
    if not d:
        break
    out.write(d)
    out.flush()
"""
_EOF = object()  # the client half-closed


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


def relay_start(port: int) -> str:
    """The attach start message of the loopback relay for ``port``."""
    return json.dumps({"command": ["python3", "-c", RELAY, str(port)], "pty": False, "env": {}, "cwd": "/"})


class ForwardSession(ChannelBridge, asyncssh.SSHTCPSession):  # type: ignore[type-arg]
    """One forwarded TCP connection: bytes both ways between the channel and the sandbox."""

    def __init__(
        self, ws: Any, label: str, port: int, open_relay: Callable[[], Awaitable[Any]] | None
    ) -> None:
        self._bridge_init()
        self._ws = ws
        self._label = label
        self._port = port
        self._open_relay = open_relay
        self._relay = False  # True once the stream goes through the relay (attach protocol)
        self._replay: list[Any] | None = [] if open_relay is not None else None
        self._replay_size = 0
        self._send_lock = asyncio.Lock()

    # ------------------------------------------------------------ asyncssh callbacks
    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def session_started(self) -> None:
        self._start(self._run())

    def data_received(self, data: bytes, datatype: Any) -> None:
        self._enqueue(bytes(data))

    def eof_received(self) -> bool:
        self._queue.put_nowait(_EOF)
        return True  # half-open: the answer is still to come

    def connection_lost(self, exc: Exception | None) -> None:
        self._bridge_lost()
        if self._task is None:  # never started: still close the tunnel
            asyncio.get_running_loop().create_task(self._stop_sender(None, self._ws))

    # ------------------------------------------------------------ client → sandbox
    async def _send_loop(self, ws: Any) -> None:
        """Like the bridge's, but to whichever stream is current, recording for a replay."""
        while (item := await self._dequeue()) is not _STOP:
            async with self._send_lock:
                self._record(item)
                with contextlib.suppress(ConnectionClosed):  # kept in the replay, if one is coming
                    await self._send(item)

    def _record(self, item: Any) -> None:
        if self._replay is None:
            return
        self._replay.append(item)
        self._replay_size += len(item) if isinstance(item, bytes) else 0
        if self._replay_size > REPLAY_MAX:
            self._replay = None  # a big upload before any answer: no fallback for this one

    async def _send(self, item: Any) -> None:
        if item is _EOF:
            if self._relay:
                await self._ws.send(json.dumps({"type": "eof"}))
            return  # the agent's tunnel has no half-close
        await self._ws.send(item)

    # ------------------------------------------------------------ sandbox → client
    async def _run(self) -> None:
        sender = asyncio.get_running_loop().create_task(self._send_loop(self._ws))
        try:
            while True:
                fallback = await self._pump()
                if not fallback or not await self._switch_to_relay():
                    break
        except ConnectionClosed:
            pass
        finally:
            self._queue.put_nowait(_STOP)
            await self._stop_sender(sender, self._ws)
        if not self._closed and self._chan is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._chan.write_eof()
            self._chan.close()

    async def _pump(self) -> bool:
        """Copy the current stream to the client; True if it failed in a way the relay may fix."""
        async for msg in self._ws:
            if isinstance(msg, bytes):
                data = msg
                if self._relay:
                    if msg[:1] == b"\x02":
                        log.info(
                            "ssh %s: relay: %s", self._label, msg[1:200].decode(errors="replace").strip()
                        )
                        continue
                    data = msg[1:]
                if data:
                    self._replay = None  # the sandbox answered: this stream works
                    if not await self._write(data):
                        return False
                continue
            ctl = json.loads(msg) if msg.startswith("{") else {"type": "error", "error": msg}
            if self._relay:
                if ctl.get("type") in ("exit", "error"):
                    return False
                continue
            log.info("ssh %s: forward failed: %s", self._label, str(ctl.get("error"))[:200])
            return "nothing listens" in str(ctl.get("error")) and self._replay is not None
        return False

    async def _switch_to_relay(self) -> bool:
        """Go through the loopback relay instead, replaying what the client sent so far."""
        assert self._open_relay is not None
        try:
            relay = await self._open_relay()
        except Exception as exc:  # noqa: BLE001 - the forward just ends
            log.info("ssh %s: relay not available: %s", self._label, exc)
            return False
        async with self._send_lock:
            old, self._ws, self._relay = self._ws, relay, True
            with contextlib.suppress(Exception):
                await old.close()
            await relay.send(relay_start(self._port))
            for item in self._replay or ():
                await self._send(item)
            self._replay = None
        return True
