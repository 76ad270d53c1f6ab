"""Agents found through the database, for a gateway running outside ``mags server``.

Every control plane upserts its agents (id, url) into the ``agents`` table; a standalone
gateway reads it to reach the agent a job runs on.  ``unix:///path`` urls are agent sockets
on this host, anything else an ``http(s)://`` agent address.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Connection, select

from mags.agent.client import HttpAgentClient
from mags.core.db import Database
from mags.core.schema import agents

log = logging.getLogger(__name__)

REFRESH_S = 10.0


def _all_agents(conn: Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute(select(agents.c.id, agents.c.url)) if r[1]}


def client_for(agent_id: str, url: str) -> HttpAgentClient:
    """An agent client for a url as stored in the ``agents`` table."""
    if url.startswith("unix://"):
        return HttpAgentClient(agent_id, uds=url[len("unix://") :])
    return HttpAgentClient(agent_id, base_url=url)


class DbAgentDirectory:
    """``get(agent_id)`` from the ``agents`` table, refreshed every ``REFRESH_S`` seconds."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._urls: dict[str, str] = {}
        self._clients: dict[str, HttpAgentClient] = {}
        self._loaded = 0.0

    async def refresh(self) -> None:
        """Re-read the agents table (clients of agents whose url changed are replaced)."""
        urls = await self.db.read(_all_agents)
        for agent_id, client in list(self._clients.items()):
            if urls.get(agent_id) != self._urls.get(agent_id):
                await client.close()
                del self._clients[agent_id]
        self._urls = urls
        self._loaded = time.monotonic()

    def get(self, agent_id: str | None) -> Any:
        if not agent_id or agent_id not in self._urls:
            return None
        client = self._clients.get(agent_id)
        if client is None:
            client = self._clients[agent_id] = client_for(agent_id, self._urls[agent_id])
        return client

    def stale(self) -> bool:
        return time.monotonic() - self._loaded > REFRESH_S

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


class ChainedAgents:
    """This server's own agents first, then any agent the database knows (several servers).

    With several ``mags server`` processes on one database, a key issued by one may be used
    on another's gateway; the job's agent is then reached through its url from ``agents``.
    """

    def __init__(self, local: Any, directory: DbAgentDirectory) -> None:
        self.local = local
        self.directory = directory

    def get(self, agent_id: str | None) -> Any:
        return self.local.get(agent_id) or self.directory.get(agent_id)

    async def refresh(self) -> None:
        await self.directory.refresh()

    async def close(self) -> None:
        await self.directory.close()
