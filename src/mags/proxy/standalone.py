"""The edge proxy as its own process (production): ``python -m mags.proxy [--config FILE]``.

Same code as the embedded proxy; it reads routes from the shared database and reaches the
agents listed in its ``agents`` table (their ``url``: ``unix:///path`` or ``http://host:port``).
"""

from __future__ import annotations

import asyncio
import logging
import signal

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


async def serve_proxy(settings: Settings) -> None:
    """Run the edge proxy until SIGTERM/SIGINT."""
    db = create_database(settings.db_url)
    registry = AgentRegistry()
    proxy = EdgeProxy(settings, UrlStore(db, Clock()), registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await refresh_agents(db, registry)
        await proxy.start()
        freeze_startup_heap()
        print(f"mags edge proxy ready on port {proxy.port} for *.{settings.apps_domain}", flush=True)
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
