"""The dispatcher: claims pending jobs and starts their sandboxes, each launch its own task.

Woken at once by :meth:`Dispatcher.wake` (job submitted) and by a slow periodic sweep (jobs
submitted through another process, agents that came back).  A launch that fails ends the job
as ``error`` with the agent's message.  A launch cut short by a shutdown leaves the job
claimed: the next start requeues it unless its script did start (scheduler/reconcile.py).
A job whose workspace has a local copy on another of our agents is launched there (local
workspaces live on one host; persistent ones are cached).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Row

from mags.agent.models import AgentClient
from mags.config import Settings
from mags.core.db import Database
from mags.core.tasks import cancel_and_wait
from mags.core.workspaces import WorkspaceStore, workspace_key
from mags.scheduler.applier import StateApplier
from mags.scheduler.changes import Change
from mags.scheduler.claim import claim_in, claim_jobs
from mags.scheduler.launch import LaunchContext, load_context, needs_context, rebind, sandbox_request
from mags.scheduler.registry import AgentRegistry

__all__ = ["Dispatcher", "sandbox_request", "workspace_key"]

log = logging.getLogger(__name__)


class Dispatcher:
    """Claims pending jobs and launches them on agents."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: AgentRegistry,
        applier: StateApplier,
        clock: Callable[[], float],
        *,
        sweep_interval: float = 2.0,
        claim_batch: int = 32,
        max_concurrent_launches: int = 64,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.applier = applier
        self.clock = clock
        self.sweep_interval = sweep_interval
        self.claim_batch = claim_batch
        self._wake = asyncio.Event()
        self._launch_slots = asyncio.Semaphore(max_concurrent_launches)
        self._launching: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self.claimed = 0  # jobs claimed by this dispatcher (tests, metrics)
        self.workspaces = WorkspaceStore(db, clock)

    def wake(self) -> None:
        """Look for pending jobs now."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mags-dispatcher")
            self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let launches in flight finish (up to ``timeout``), cancel the rest."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        pending = list(self._launching.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)

    async def wait_launch(self, job_id: str, timeout: float) -> None:
        """Wait until this process's launch of ``job_id`` (if any) has returned."""
        task = self._launching.get(job_id)
        if task is not None:
            await asyncio.wait((task,), timeout=timeout)

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow our cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sweep_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self._claim_once() >= self.claim_batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming jobs failed; retrying at the next sweep")

    async def _claim_once(self) -> int:
        agent = self.registry.pick()
        if agent is None:
            return 0
        rows = await claim_jobs(self.db, agent.agent_id, self.claim_batch, self.clock)
        self.launch(agent, rows)
        return len(rows)

    def claim_at_submit(self) -> SubmitClaim | None:
        """A claim to run in a submit's own transaction, or None to leave the job to the loop.

        Saves a job a second write and a trip through the dispatcher loop: the submit that
        inserts it also claims the oldest pending jobs (itself included, unless a backlog is
        ahead of it) for an agent, and hands them to :meth:`launch`.
        """
        if self._task is None or self._task.done():
            return None
        agent = self.registry.pick()
        if agent is None:
            return None
        return SubmitClaim(self, agent)

    def launch(self, agent: AgentClient, rows: list[Row[Any]]) -> None:
        """Start a launch task for each claimed row."""
        self.claimed += len(rows)
        for row in rows:
            job_id = row._mapping["request_id"]
            task = asyncio.create_task(self._launch(agent, row), name=f"mags-launch-{job_id}")
            self._launching[job_id] = task
            task.add_done_callback(lambda _t, j=job_id: self._launching.pop(j, None))

    async def _target(self, agent: AgentClient, row: Row[Any], ctx: LaunchContext) -> AgentClient:
        """The agent to launch on: the one holding the workspace's local copy, if it is ours."""
        ws = ctx.workspace
        held_by = ws._mapping["agent_id"] if ws is not None else None
        if not held_by or held_by == agent.agent_id:
            return agent
        job_id = row._mapping["request_id"]
        other = self.registry.get(held_by)
        if other is not None:
            await rebind(self.db, job_id, other.agent_id)
            return other
        if ws is not None and ws._mapping["mode"] == "local":
            message = (
                f"local workspace {ws._mapping['name']} was kept on agent {held_by}, which this server "
                f"does not manage: starting it empty on {agent.agent_id}"
            )
            log.warning("job %s: %s", job_id, message)
            self.applier.submit(Change("log", job_id, self.clock(), source="system", message=message))
        return agent

    async def _launch(self, agent: AgentClient, row: Row[Any]) -> None:
        job_id = row._mapping["request_id"]
        async with self._launch_slots:
            try:
                ctx = LaunchContext()
                if needs_context(row):
                    ctx = await load_context(self.db, row, self.settings, self.clock())
                    agent = await self._target(agent, row, ctx)
                req = sandbox_request(row, self.settings, ctx)
                await agent.create_sandbox(req)
            except asyncio.CancelledError:
                # shutting down: whether the agent still spawns the script is unknown here, so
                # the claim stays for the next start to settle with the agent's spawn records
                log.info("job %s: launch cut short by the shutdown; settled at the next start", job_id)
                raise
            except Exception as exc:  # noqa: BLE001 - any agent failure fails the job/stream
                log.warning("job %s: sandbox failed to start: %s", job_id, exc)
                message = str(exc) or type(exc).__name__
                self.applier.submit(Change("launch_failed", job_id, self.clock(), reason=message))
                return
        # the agent's own `started` event may arrive later than this answer: apply it now
        self.applier.submit(Change("started", job_id, self.clock()))
        if ctx.workspace is not None:
            try:
                await self.workspaces.launched(ctx.workspace._mapping["id"], agent.agent_id, req.disk_gb)
            except Exception:
                log.warning("job %s: cannot record its workspace's agent", job_id, exc_info=True)


class SubmitClaim:
    """The submit fast path: claim pending jobs inside the transaction that inserts one."""

    def __init__(self, dispatcher: Dispatcher, agent: AgentClient) -> None:
        self.dispatcher = dispatcher
        self.agent = agent

    def __call__(self, conn: Connection, now: float) -> list[Row[Any]]:
        return claim_in(conn, self.agent.agent_id, self.dispatcher.claim_batch, now)

    def launch(self, rows: list[Row[Any]], job_id: str) -> None:
        """Launch what the transaction claimed; wake the loop for anything left pending."""
        self.dispatcher.launch(self.agent, rows)
        if len(rows) >= self.dispatcher.claim_batch or all(r._mapping["request_id"] != job_id for r in rows):
            self.dispatcher.wake()
