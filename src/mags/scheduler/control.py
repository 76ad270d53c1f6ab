"""Job actions the API asks of the scheduler: submit (and dispatch at once), stop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Row

from mags.agent.models import StopRequest
from mags.core.jobs import JobStore, NewJob
from mags.core.states import SCRIPT_DONE, VmStatus
from mags.errors import AgentError, Conflict, MagsError
from mags.scheduler.applier import StateApplier
from mags.scheduler.changes import CANCEL_REASON, USER_STOP_REASON, Change
from mags.scheduler.dispatcher import Dispatcher
from mags.scheduler.registry import AgentRegistry

log = logging.getLogger(__name__)

LAUNCH_WAIT_S = 30.0


class JobController:
    """Submits and stops jobs on behalf of API callers."""

    def __init__(
        self,
        jobs: JobStore,
        applier: StateApplier,
        registry: AgentRegistry,
        dispatcher: Dispatcher,
        clock: Callable[[], float],
    ) -> None:
        self.jobs = jobs
        self.applier = applier
        self.registry = registry
        self.dispatcher = dispatcher
        self.clock = clock

    async def submit(self, user_id: int, job: NewJob) -> None:
        """Store a pending job and wake the dispatcher."""
        await self.jobs.create(user_id, job)
        self.dispatcher.wake()

    async def stop(self, user_id: int, job_id: str, reason: str = USER_STOP_REASON) -> Row[Any]:
        """Stop a job's sandbox; returns the job as it is afterwards.

        Not yet claimed: cancelled (``error``, "stopped before start").  Being launched: waits
        for the launch, then stops.  Already stopped: 409.
        """
        row = await self.jobs.get(user_id, job_id)
        m = row._mapping
        if m["vm_status"] == VmStatus.PENDING:
            if await self.applier.apply(Change("cancel", job_id, self.clock(), reason=CANCEL_REASON)):
                return await self.jobs.get(user_id, job_id)
            row = await self.jobs.get(user_id, job_id)  # a dispatcher claimed it meanwhile
            m = row._mapping
        if m["vm_status"] == VmStatus.STARTING:
            await self.dispatcher.wait_launch(job_id, LAUNCH_WAIT_S)
            row = await self.jobs.get(user_id, job_id)
            m = row._mapping
        if m["vm_status"] == VmStatus.STOPPED and m["status"] in SCRIPT_DONE:
            raise Conflict(f"job {job_id} is already stopped")
        internal = await self.jobs.get_internal(job_id)
        assert internal is not None
        agent = self.registry.get(internal._mapping["agent_id"])
        if agent is None:
            # another server's agent (or a dead one: the housekeeper ends those jobs)
            raise AgentError(
                f"job {job_id} runs on agent {internal._mapping['agent_id']}, which this server does not manage"
            )
        await self.applier.apply(Change("stop_requested", job_id, self.clock(), reason=reason))
        try:
            info = await agent.stop_sandbox(m["vm_id"], StopRequest(reason=reason))
        except MagsError as exc:
            if exc.status_code not in (404, 410):  # SandboxGone, NotFound, or their HTTP status
                raise AgentError(f"could not stop job {job_id}: {exc}") from exc
            await self.applier.apply(Change("finish", job_id, self.clock(), reason=reason))
        except Exception as exc:
            raise AgentError(f"could not stop job {job_id}: {exc}") from exc
        else:
            # show the outcome now instead of when the event stream catches up
            await self.applier.apply(Change("state", job_id, self.clock(), state=info.state, reason=reason))
        return await self.jobs.get(user_id, job_id)
