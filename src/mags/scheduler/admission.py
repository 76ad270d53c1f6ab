"""Admission of a job on a workspace: bases, one sandbox per workspace, ``new`` reuse.

Rules (CONTRACT.md "Workspace modes"; decisions in docs/API-NOTES.md, "Workspaces"):

* ``--base B``: B must be one of the caller's workspaces with a synced head (else 404).  A new
  fork freezes B's head and B's own layers as its read-only ``layers``; B never changes.  An
  existing workspace keeps the base it was created with (a different ``--base`` is a 409).
* One sandbox per workspace.  For each *live* job on the workspace (its sandbox not stopped):

  - a ``mags new`` request (``sleep infinity``, persistent) finds a live persistent sandbox on
    the workspace: that job is returned (``existing: true``) -- unless the request needs a new
    sandbox (turns sync on, another disk size, files to place): then it is replaced;
  - the VM is up (``running``/``sleeping``) and its script has finished, or it is itself a
    ``mags new`` sandbox: it is stopped with a final sync ("replaced by job <new id>") and the
    new job starts once that sync is the workspace's head;
  - otherwise (a script still executing, or a sandbox still starting): 409 busy.

* Quotas (core/quotas.py): what the job adds -- a sandbox (minus the ones it replaces), a new
  workspace, disk (a new workspace's size, the growth of an existing one, an ephemeral
  sandbox's scratch disk) -- must fit the user's limits, else 429 ``quota_exceeded``.  The
  check and the insert run under the user's quota lock, so concurrent submissions of one
  user cannot both take the last place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import Row

from mags.config import Settings
from mags.core.jobs import JobStore, NewJob
from mags.core.quotas import Ask
from mags.core.quotas import check as check_quota
from mags.core.states import VmStatus
from mags.core.workspaces import WorkspaceStore
from mags.errors import Conflict, MagsError, NotFound, ValidationError
from mags.scheduler.changes import Change, replaced_reason

log = logging.getLogger(__name__)

NEW_SCRIPT = "sleep infinity"
VM_UP = frozenset({VmStatus.RUNNING.value, VmStatus.SLEEPING.value})
DELETE_WAIT_S = 10.0  # a submit on a workspace being deleted (expiring) waits this long

StopFn = Callable[[int, str, str], Awaitable[Any]]


@dataclass
class Decision:
    """What to do with a submission on a workspace with live jobs."""

    action: Literal["free", "existing", "replace", "busy"]
    job: Row[Any] | None = None  # existing / busy: the job concerned
    replace: list[Row[Any]] = field(default_factory=list)


def is_new_request(job: NewJob) -> bool:
    """A ``mags new`` / SDK ``new()`` submission."""
    return job.persistent and job.script.strip() == NEW_SCRIPT


def decide(job: NewJob, live: list[Row[Any]], ws: Row[Any] | None) -> Decision:
    """Apply the one-sandbox-per-workspace rules to the live jobs of the job's workspace."""
    if not live:
        return Decision("free")
    wants_sync = job.persistent and not job.no_sync
    needs_fresh = bool(job.file_ids) or (
        job.disk_gb is not None and ws is not None and job.disk_gb != ws._mapping["disk_gb"]
    )
    if is_new_request(job) and not needs_fresh:
        for row in live:
            m = row._mapping
            if m["persistent"] and m["vm_status"] != VmStatus.STOPPING and not (wants_sync and m["no_sync"]):
                return Decision("existing", row)
    replace, busy = [], []
    for row in live:
        m = row._mapping
        done = m["finished_at"] is not None or bool(m["is_new"])
        (replace if m["vm_status"] in VM_UP and done else busy).append(row)
    if busy:
        return Decision("busy", busy[0])
    return Decision("replace", replace=replace)


def busy_message(name: str, row: Row[Any]) -> str:
    m = row._mapping
    doing = (
        "is still running" if m["vm_status"] in VM_UP or m["vm_status"] == "stopping" else "is still starting"
    )
    return f'workspace "{name}" is busy: job {m["request_id"]} {doing} (stop it or wait)'


class WorkspaceAdmission:
    """Submits jobs that name a workspace or a base, applying the rules above."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        workspaces: WorkspaceStore,
        stop: StopFn,
        cancel: Callable[[Change], Awaitable[Any]],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.workspaces = workspaces
        self.stop = stop
        self.cancel = cancel
        self.clock = clock
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._quota_locks: dict[int, asyncio.Lock] = {}

    def lock(self, user_id: int, name: str) -> asyncio.Lock:
        # in-process: a second server sharing the database still cannot start two sandboxes on
        # one workspace (the claim checks), it can only admit a second job that then waits
        return self._locks.setdefault((user_id, name), asyncio.Lock())

    def _quota_lock(self, user_id: int) -> asyncio.Lock:
        # always taken last (inside a workspace's lock), so it never deadlocks
        return self._quota_locks.setdefault(user_id, asyncio.Lock())

    async def _check_quota(self, user_id: int, ask: Ask) -> None:
        await self.jobs.db.read(check_quota, user_id, ask, self.settings)

    def scratch_gb(self, job: NewJob) -> int:
        """The scratch disk an ephemeral job's sandbox gets."""
        return job.disk_gb or self.settings.default_disk_gb

    @asynccontextmanager
    async def quota_guard(self, user_id: int, job: NewJob) -> AsyncIterator[None]:
        """Check an ephemeral job (one sandbox, its scratch disk) against the user's quotas.

        The caller stores the job inside the ``async with``: the user's quota lock is held
        until then, so two submissions cannot both take the last place.
        """
        async with self._quota_lock(user_id):
            await self._check_quota(user_id, Ask(disk_gb=self.scratch_gb(job), sandboxes=1))
            yield

    async def _base(self, user_id: int, job: NewJob) -> Row[Any] | None:
        name = job.base_workspace_id
        if not name:
            return None
        if name == job.workspace_id:
            raise ValidationError("a workspace cannot be its own base")
        base = await self.workspaces.get(user_id, name)
        if base is None or base._mapping["head_snapshot_id"] is None or base._mapping["deleting_at"]:
            raise NotFound(f'base workspace "{name}" not found (or never synced: run it with -p first)')
        return base

    async def _settled(self, user_id: int, name: str) -> Row[Any] | None:
        """The workspace row, after any delete in progress has finished (expiry is quick)."""
        deadline = asyncio.get_running_loop().time() + DELETE_WAIT_S
        while True:
            ws = await self.workspaces.get(user_id, name)
            if ws is None or ws._mapping["deleting_at"] is None:
                return ws
            if asyncio.get_running_loop().time() >= deadline:
                raise Conflict(f'workspace "{name}" is being deleted: try again in a moment')
            await asyncio.sleep(0.1)

    async def submit(self, user_id: int, job: NewJob) -> tuple[str, bool]:
        """Store the job (or find the live one it asks for); returns ``(request_id, existing)``."""
        base = await self._base(user_id, job)
        name = job.workspace_id
        if name is None:  # --base without -w: an ephemeral sandbox on top of the base
            async with self.quota_guard(user_id, job):
                await self.jobs.create(user_id, job)
            return job.request_id, False
        async with self.lock(user_id, name):
            ws = await self._settled(user_id, name)
            if ws is not None and job.base_workspace_id is not None:
                current = ws._mapping["base_id"]
                if base is None or current != base._mapping["id"]:
                    raise Conflict(
                        f'workspace "{name}" already exists'
                        + (" with another base" if current is not None else " without a base")
                        + ": --base only applies when a workspace is created"
                    )
            decision = decide(job, await self.workspaces.live_jobs(user_id, name), ws)
            if decision.action == "existing":
                assert decision.job is not None
                return decision.job._mapping["request_id"], True
            if decision.action == "busy":
                assert decision.job is not None
                raise Conflict(busy_message(name, decision.job))
            wants_sync = job.persistent and not job.no_sync
            old_gb = ws._mapping["disk_gb"] if ws is not None else 0
            ask = Ask(
                disk_gb=(job.disk_gb or old_gb or self.settings.default_disk_gb) - old_gb,
                workspaces=0 if ws is not None else 1,
                sandboxes=1 - len(decision.replace),  # a replaced sandbox gives its place
            )
            async with self._quota_lock(user_id):
                await self._check_quota(user_id, ask)
                await self.workspaces.prepare(
                    user_id,
                    name,
                    mode="persistent" if wants_sync else "local",
                    disk_gb=job.disk_gb or self.settings.default_disk_gb,
                    base=base if ws is None else None,
                )
                # pending, but not claimable while the replaced sandbox is alive (see claim.py)
                await self.jobs.create(user_id, job)
            # stop inside the lock: a third submission must see these as going away, not free
            await asyncio.shield(self._replace(user_id, job, decision.replace))
        return job.request_id, False

    async def _replace(self, user_id: int, job: NewJob, old: list[Row[Any]]) -> None:
        reason = replaced_reason(job.request_id)
        for row in old:
            old_id = row._mapping["request_id"]
            try:
                await self.stop(user_id, old_id, reason)
            except Conflict:
                continue  # it stopped on its own meanwhile
            except MagsError as exc:
                message = f"could not stop job {old_id} on the same workspace: {exc}"
                log.warning("job %s: %s", job.request_id, message)
                await self.cancel(Change("cancel", job.request_id, self.clock(), reason=message))
                raise Conflict(message) from exc
