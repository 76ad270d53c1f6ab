"""The edge proxy as its own process (production): ``python -m mags.proxy [--config FILE]``.

Same code as the embedded proxy; it reads routes from the shared database and reaches the
agents listed in its ``agents`` table (their ``url``: ``unix:///path`` or ``http://host:port``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from sqlalchemy import Connection, select

from mags.agent.client import HttpAgentClient
from mags.config import Settings
from mags.core.db import Database, create_database
from mags.core.ids import Clock
from mags.core.schema import agents
from mags.core.urls import UrlStore
from mags.proxy.server import EdgeProxy, freeze_startup_heap
from mags.scheduler.registry import AgentRegistry

log = logging.getLogger(__name__)
AGENT_REFRESH_S = 30.0


def _agent_rows(conn: Connection) -> list[tuple[str, str]]:
    rows = conn.execute(select(agents.c.id, agents.c.url).where(agents.c.url.is_not(None))).all()
    return [(r[0], r[1]) for r in rows]


def agent_client(agent_id: str, url: str) -> HttpAgentClient:
    """An agent client for an ``agents.url`` value."""
    if url.startswith("unix://"):
        return HttpAgentClient(agent_id, uds=url[len("unix://") :])
    return HttpAgentClient(agent_id, base_url=url)


async def refresh_agents(db: Database, registry: AgentRegistry) -> None:
    """Add agents registered since the last look (new hosts)."""
    for agent_id, url in await db.read(_agent_rows):
        if registry.get(agent_id) is None:
            registry.add(agent_client(agent_id, url), url)


class _Control(asyncio.Protocol):
    """The child's stdin: route labels to forget, one per line; EOF (the server is gone) stops."""

    def __init__(self, proxy: EdgeProxy, stop: asyncio.Event) -> None:
        self.proxy = proxy
        self.stop = stop
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        *lines, self.buf = (self.buf + data).split(b"\n")
        labels = [line.decode(errors="replace") for line in lines if line]
        if labels:
            self.proxy.routes_changed(labels)

    def eof_received(self) -> bool:
        self.stop.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


async def serve_child(settings: Settings, fds: list[int]) -> None:
    """The proxy of ``mags server`` (``ProxyProcess``): accept on inherited sockets ``fds``."""
    socks = [socket.socket(fileno=fd) for fd in fds]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the server decides when we stop
    await _serve(settings, stop, socks=socks, control=True)


async def serve_proxy(settings: Settings) -> None:
    """Run the edge proxy until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await _serve(settings, stop)


async def _serve(settings: Settings, stop: asyncio.Event, *, socks: list[socket.socket] | None = None,
                 control: bool = False) -> None:  # fmt: skip
    db = create_database(settings.db_url)
    registry = AgentRegistry()
    proxy = EdgeProxy(settings, UrlStore(db, Clock()), registry)
    loop = asyncio.get_running_loop()
    try:
        await refresh_agents(db, registry)
        await proxy.start(socks=socks)
        if control:
            await loop.connect_read_pipe(lambda: _Control(proxy, stop), sys.stdin)
        freeze_startup_heap()
        if not control:
            domains = ", ".join(f"*.{d}" for d in settings.served_apps_domains)
            print(f"mags edge proxy ready on port {proxy.port} for {domains}", flush=True)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), AGENT_REFRESH_S)
            except TimeoutError:
                try:
                    await refresh_agents(db, registry)
                except Exception as exc:  # noqa: BLE001 - keep serving with the agents we know
                    log.warning("cannot refresh agents: %s", exc)
    finally:
        await proxy.close()
        for agent in registry.all():
            await agent.close()
        await db.close()
