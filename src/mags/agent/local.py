"""Run an agent inside the current process and event loop (the embedded default).

The agent still serves its real HTTP API (on a unix socket) and the control plane still
talks to it through ``HttpAgentClient`` — the same path a remote agent uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import uvicorn

from mags.agent.app import create_agent_app
from mags.agent.client import HttpAgentClient
from mags.agent.service import AgentService
from mags.config import Settings
from mags.errors import AgentError
from mags.runtime.factory import start_runtime
from mags.runtime.namespaces import BaseRuntime

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class LocalAgentHandle:
    service: AgentService
    runtime: BaseRuntime
    client: HttpAgentClient
    server: _QuietServer
    task: asyncio.Task[None]

    async def stop(self, reason: str = "server shutting down", keep: Collection[str] = ()) -> None:
        """Stop the agent; sandboxes in ``keep`` go to sleep instead of stopping."""
        await self.service.close(reason, keep)
        # the control plane must get the final events (exits, last syncs) before we go
        if not await self.service.events.drained(5.0):
            log.warning("agent stopping before the control plane read its last events")
        await self.client.close()
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, 5)
        except (TimeoutError, asyncio.CancelledError):
            self.task.cancel()
        await self.runtime.close()


async def start_local_agent(settings: Settings) -> LocalAgentHandle:
    """Start runtime + agent service + its HTTP API on ``settings.agent_socket``."""
    runtime = await start_runtime(settings)
    service = AgentService(settings, runtime)
    await service.start()
    sock = settings.agent_socket
    sock.parent.mkdir(parents=True, exist_ok=True)
    if sock.exists():
        sock.unlink()
    config = uvicorn.Config(
        create_agent_app(service), uds=str(sock), log_level="warning", access_log=False, lifespan="off",
        loop="none", http="httptools",
    )
    server = _QuietServer(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            await runtime.close()
            raise AgentError(f"agent API failed to start: {task.exception()}")
        await asyncio.sleep(0.01)
    os.chmod(sock, 0o600)
    client = HttpAgentClient(service.agent_id, uds=str(sock))
    log.info("agent %s ready (runtime %s) on %s", service.agent_id, runtime.name, sock)
    return LocalAgentHandle(service, runtime, client, server, task)
