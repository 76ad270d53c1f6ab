"""Job actions the API asks of the scheduler: submit, stop, exec, sync, live settings.

Submissions naming a workspace or a base go through :class:`~mags.scheduler.admission.
WorkspaceAdmission` (one sandbox per workspace, forks).  Everything that reaches a sandbox
goes through the job's agent; the agent's answers are translated into our errors here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Row

from mags.agent.models import AgentClient, ExecRequest, ExecResult, SandboxSettings, StopRequest, SyncResult
from mags.config import Settings
from mags.core.files import FileStore
from mags.core.jobs import JobStore, NewJob
from mags.core.notify import wait_until
from mags.core.states import SCRIPT_DONE, VM_STARTING, VmStatus, still_starting
from mags.core.workspaces import SyncCommit, WorkspaceStore
from mags.errors import AgentError, CommitConflict, Conflict, MagsError, ValidationError
from mags.scheduler.admission import WorkspaceAdmission
from mags.scheduler.applier import StateApplier
from mags.scheduler.changes import CANCEL_REASON, USER_STOP_REASON, Change
from mags.scheduler.dispatcher import Dispatcher
from mags.scheduler.registry import AgentRegistry

log = logging.getLogger(__name__)

LAUNCH_WAIT_S = 30.0
# how long a stop waits for the agent's own report of it (after the final sync) before going on
STOP_REPORT_WAIT_S = 60.0
NOT_RUNNING = "sandbox is not running: start it with mags new"
_UP = (VmStatus.RUNNING, VmStatus.SLEEPING)


@dataclass
class Submitted:
    """The answer to a submission: the job's id, and whether it is an existing live sandbox."""

    request_id: str
    existing: bool = False


def agent_failure(exc: Exception, what: str) -> MagsError:
    """Our error for an agent's failure: gone -> 409 not running, its 4xx kept, else 502."""
    status = exc.status_code if isinstance(exc, MagsError) else 0
    if status in (404, 410):
        return Conflict(NOT_RUNNING)
    if status == 409:
        return Conflict(str(exc))
    if status in (400, 413, 422):
        return ValidationError(str(exc))
    return AgentError(f"could not {what}: {exc}")


class JobController:
    """Submits jobs and acts on their sandboxes on behalf of API callers."""

    def __init__(
        self,
        jobs: JobStore,
        applier: StateApplier,
        registry: AgentRegistry,
        dispatcher: Dispatcher,
        clock: Callable[[], float],
        *,
        settings: Settings | None = None,
        workspaces: WorkspaceStore | None = None,
        files: FileStore | None = None,
    ) -> None:
        self.jobs = jobs
        self.applier = applier
        self.registry = registry
        self.dispatcher = dispatcher
        self.clock = clock
        self.settings = settings or dispatcher.settings
        self.workspaces = workspaces or WorkspaceStore(jobs.db, clock)
        self.files = files or FileStore(
            jobs.db, clock, self.settings.data_dir / "files", self.settings.file_retention_s
        )
        self.admission = WorkspaceAdmission(
            self.settings, jobs, self.workspaces, self.stop, self.applier.apply, clock
        )

    # ------------------------------------------------------------------ submit / stop
    async def submit(self, user_id: int, job: NewJob) -> Submitted:
        """Store a pending job and wake the dispatcher (or return the live sandbox asked for)."""
        await self.files.owned(user_id, job.file_ids)  # 404 for anything not the caller's
        if job.workspace_id is None and job.base_workspace_id is None:
            async with self.admission.quota_guard(user_id, job):  # 429 past the user's quotas
                claim = self.dispatcher.claim_at_submit()
                if claim is None:
                    await self.jobs.create(user_id, job)
                    self.dispatcher.wake()
                else:
                    claim.launch(await self.jobs.create_then(user_id, job, claim), job.request_id)
            return Submitted(job.request_id)
        request_id, existing = await self.admission.submit(user_id, job)
        self.dispatcher.wake()
        return Submitted(request_id, existing)

    def _agent(self, internal: Row[Any] | None, job_id: str) -> AgentClient:
        agent_id = internal._mapping["agent_id"] if internal is not None else None
        agent = self.registry.get(agent_id)
        if agent is None:
            # another server's agent (or a dead one: the housekeeper ends those jobs)
            raise AgentError(f"job {job_id} runs on agent {agent_id}, which this server does not manage")
        return agent

    async def _settled(self, user_id: int, job_id: str) -> Row[Any]:
        """The job, after waiting for this process's launch of it, if one is in flight."""
        row = await self.jobs.get(user_id, job_id)
        if row._mapping["vm_status"] == VmStatus.STARTING:
            await self.dispatcher.wait_launch(job_id, LAUNCH_WAIT_S)
            row = await self.jobs.get(user_id, job_id)
        return row

    async def wait_started(self, user_id: int, job_id: str, timeout: float | None = None) -> Row[Any]:
        """The job once its sandbox is no longer pending/being created, or after ``timeout``.

        ``timeout`` defaults to ``start_wait_s``.  Woken by the job's state changes (the event
        ingest notifies), so an access or exec sent right after ``run`` answers as soon as the
        sandbox runs.  A caller checks ``vm_status`` of the row it gets (still starting: 409).
        """
        wait = self.settings.start_wait_s if timeout is None else timeout
        return await wait_until(
            self.applier.notifier,
            job_id,
            lambda: self.jobs.get(user_id, job_id),
            lambda row: row._mapping["vm_status"] not in VM_STARTING,
            wait,
        )

    async def stop(
        self, user_id: int, job_id: str, reason: str = USER_STOP_REASON, *, sync: bool = True
    ) -> Row[Any]:
        """Stop a job's sandbox; returns the job as it is afterwards.

        Not yet claimed: cancelled (``error``, "stopped before start").  Being launched: waits
        for the launch, then stops.  Already stopped: 409.  A sandbox with a workspace is
        reported stopped only once the agent's own report arrived, i.e. after its final sync
        was committed: a run submitted right after the stop starts from that snapshot.
        ``sync=False`` skips that final sync (the workspace is being deleted).
        """
        row = await self.jobs.get(user_id, job_id)
        m = row._mapping
        cancel = Change("cancel", job_id, self.clock(), reason=CANCEL_REASON)
        if m["vm_status"] == VmStatus.PENDING and await self.applier.apply(cancel):
            return await self.jobs.get(user_id, job_id)
        row = await self._settled(user_id, job_id)
        m = row._mapping
        if m["vm_status"] == VmStatus.STOPPED and m["status"] in SCRIPT_DONE:
            raise Conflict(f"job {job_id} is already stopped")
        internal = await self.jobs.get_internal(job_id)
        agent = self._agent(internal, job_id)
        await self.applier.apply(Change("stop_requested", job_id, self.clock(), reason=reason))
        reported = self.applier.expect_agent_stop(job_id)
        try:
            try:
                info = await agent.stop_sandbox(m["vm_id"], StopRequest(reason=reason, sync=sync))
            except MagsError as exc:
                if exc.status_code not in (404, 410):  # SandboxGone, NotFound, or their HTTP status
                    raise AgentError(f"could not stop job {job_id}: {exc}") from exc
                await self.applier.apply(Change("finish", job_id, self.clock(), reason=reason))
                return await self.jobs.get(user_id, job_id)
            except Exception as exc:
                raise AgentError(f"could not stop job {job_id}: {exc}") from exc
            if m["workspace_id"] and info.state == VmStatus.STOPPED:
                try:
                    await asyncio.wait_for(asyncio.shield(reported), STOP_REPORT_WAIT_S)
                except TimeoutError:
                    log.warning("job %s: the agent's stop report did not arrive; ending it now", job_id)
        finally:
            self.applier.forget_agent_stop(job_id, reported)
        # show the outcome now instead of when the event stream catches up
        await self.applier.apply(Change("state", job_id, self.clock(), state=info.state, reason=reason))
        self.dispatcher.wake()  # a job waiting for this workspace may go now
        return await self.jobs.get(user_id, job_id)

    # ------------------------------------------------------------------ live sandbox
    async def _live(self, user_id: int, job_id: str) -> tuple[Row[Any], AgentClient]:
        """The job and its agent once its sandbox is up (running or sleeping); else 409.

        A sandbox still pending or being created is waited for (``start_wait_s``).
        """
        row = await self.wait_started(user_id, job_id)
        m = row._mapping
        if m["vm_status"] in VM_STARTING:
            raise still_starting(job_id, self.settings.start_wait_s)
        if m["vm_status"] not in _UP:
            raise Conflict(NOT_RUNNING)
        return row, self._agent(await self.jobs.get_internal(job_id), job_id)

    async def exec(self, user_id: int, job_id: str, command: str, timeout: float) -> ExecResult:
        """Run a command in the job's sandbox (the agent wakes a sleeping one first)."""
        row, agent = await self._live(user_id, job_id)
        internal = await self.jobs.get_internal(job_id)
        env = (internal._mapping["environment"] if internal is not None else None) or {}
        req = ExecRequest(command=command, timeout=timeout, environment=env)
        try:
            return await agent.exec(row._mapping["vm_id"], req)
        except Exception as exc:
            raise agent_failure(exc, f"run the command in job {job_id}") from exc

    async def sync(self, user_id: int, job_id: str) -> tuple[SyncResult, SyncCommit]:
        """Snapshot the job's workspace now and commit it; the sandbox keeps running."""
        row = await self.jobs.get(user_id, job_id)
        m = row._mapping
        ws = await self.workspaces.get(user_id, m["workspace_id"]) if m["workspace_id"] else None
        if ws is None or ws._mapping["mode"] != "persistent" or m["no_sync"]:
            raise Conflict(f"job {job_id} has no persistent workspace to sync (run it with -w NAME -p)")
        row, agent = await self._live(user_id, job_id)
        try:
            result = await agent.sync_sandbox(row._mapping["vm_id"])
        except Exception as exc:
            raise agent_failure(exc, f"sync the workspace of job {job_id}") from exc
        data = {**result.model_dump(), "trigger": "request"}
        commit: SyncCommit = await self.applier.apply(Change("synced", job_id, self.clock(), data=data))
        if commit.outcome == "lost":
            raise CommitConflict(
                f"workspace {m['workspace_id']} moved to snapshot {commit.head} while this sync ran; "
                f"snapshot {commit.snapshot_id} was not committed"
            )
        return result, commit

    async def update_settings(self, user_id: int, job_id: str, values: dict[str, Any]) -> Row[Any]:
        """Change ``no_sleep`` / ``startup_command``; applied to the live sandbox first, if any."""
        row = await self._settled(user_id, job_id)
        m = row._mapping
        if m["vm_status"] in _UP:
            clear = "startup_command" in values and values["startup_command"] is None
            live = SandboxSettings(
                no_sleep=values.get("no_sleep"),
                startup_command=values.get("startup_command"),
                clear_startup_command=clear,
            )
            agent = self.registry.get(_agent_id(await self.jobs.get_internal(job_id)))
            if agent is None:
                log.warning("job %s: its agent is managed by another server; settings only stored", job_id)
            else:
                try:
                    await agent.update_sandbox(m["vm_id"], live)
                except Exception as exc:
                    err = agent_failure(exc, f"change the settings of job {job_id}")
                    if not (isinstance(err, Conflict) and str(err) == NOT_RUNNING):
                        raise err from exc
                    # the sandbox ended meanwhile: storing is all there is to do
        return await self.jobs.update_settings(user_id, job_id, values)


def _agent_id(internal: Row[Any] | None) -> str | None:
    return internal._mapping["agent_id"] if internal is not None else None
