"""The agents this control plane can place sandboxes on."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from mags.agent.models import AgentClient
from mags.errors import AgentError


class AgentRegistry:
    """AgentClients by id; :meth:`pick` chooses where the next sandbox goes."""

    def __init__(self, agents: Iterable[AgentClient] = (), urls: Mapping[str, str] | None = None) -> None:
        self._agents: dict[str, AgentClient] = {}
        self._urls: dict[str, str] = {}
        self._cycle: itertools.cycle[str] | None = None
        for agent in agents:
            self.add(agent, (urls or {}).get(agent.agent_id) or getattr(agent, "url", None))

    def add(self, agent: AgentClient, url: str | None = None) -> None:
        """Register an agent; ``url`` is where it listens (one agent per url at a time)."""
        if agent.agent_id in self._agents:
            raise AgentError(f"agent {agent.agent_id} is already registered")
        self._agents[agent.agent_id] = agent
        if url:
            self._urls[agent.agent_id] = url
        self._cycle = itertools.cycle(list(self._agents))

    def url(self, agent_id: str) -> str | None:
        return self._urls.get(agent_id)

    def urls(self) -> list[str]:
        return list(self._urls.values())

    def get(self, agent_id: str | None) -> AgentClient | None:
        return self._agents.get(agent_id) if agent_id else None

    def all(self) -> list[AgentClient]:
        return list(self._agents.values())

    def ids(self) -> list[str]:
        return list(self._agents)

    def pick(self) -> AgentClient | None:
        """The agent for the next batch of sandboxes (round robin; one local agent for now)."""
        if self._cycle is None:
            return None
        return self._agents[next(self._cycle)]
