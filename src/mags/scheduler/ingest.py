"""Event ingest: follows one agent's event stream and feeds it to the state applier.

The stream is resumable: on any error we reconnect with exponential backoff and ask for
``after=<last seq received>``, dropping anything at or below it should the agent resend.
"""

from __future__ import annotations

import asyncio
import logging

from mags.agent.models import AgentClient
from mags.core.tasks import cancel_and_wait
from mags.scheduler.applier import StateApplier
from mags.scheduler.changes import Change

log = logging.getLogger(__name__)


class EventIngest:
    """One per agent."""

    def __init__(
        self,
        agent: AgentClient,
        applier: StateApplier,
        *,
        backoff_min: float = 0.05,
        backoff_max: float = 5.0,
    ) -> None:
        self.agent = agent
        self.applier = applier
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.last_seq = 0
        self.connects = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mags-ingest-{self.agent.agent_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        delay = self.backoff_min
        while True:
            self.connects += 1
            try:
                async for event in self.agent.events(after=self.last_seq):
                    if event.seq <= self.last_seq:
                        continue
                    self.last_seq = event.seq
                    delay = self.backoff_min
                    if event.job_id:
                        self.applier.submit(Change.from_event(event))
                log.info("event stream of agent %s ended; reconnecting", self.agent.agent_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any agent failure fails the job/stream
                if getattr(self.agent, "closed", False):  # shutting down: the client is gone
                    log.debug("event stream of agent %s closed", self.agent.agent_id)
                    return
                log.warning("event stream of agent %s failed (%s); reconnecting", self.agent.agent_id, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
