"""Re-provisioning persistent VMs whose sandbox was lost (the server or its host went down).

At start, :func:`~mags.scheduler.reconcile.reconcile_at_start` finds jobs the database still
shows active but whose sandbox no agent has.  Most end ``error: server restarted``.  A
persistent job on a workspace comes back instead, on the agent that held it:

* always-on (``no_sleep``): booted now from its workspace, like a wake -- the startup command
  runs; a script that had not finished runs again (``mags run -p --no-sleep 'node server.js'``
  is serving again a moment after the restart);
* otherwise, if it was asleep, its script had finished, or it is a ``mags new`` sandbox:
  registered asleep; the next exec, SSH or URL request wakes it as usual.  (A script still
  running in a VM that may sleep ends with "server restarted", as for any job.)

The job keeps its id, name, public URL and workspace; its history records why.

Not when a newer job waits for the workspace: the server went down while it was replacing
this VM (the new job is stored before the old VM is told to stop), so the VM ends as the
replacement would have ended it ("replaced by job X") and the new job runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import Connection, and_, select
from sqlalchemy.engine import Row

from mags.agent.models import AgentClient
from mags.config import Settings
from mags.core.db import Database
from mags.core.jobs import JobStore
from mags.core.schema import jobs
from mags.core.states import JobStatus, VmStatus, script_done
from mags.scheduler.admission import NEW_SCRIPT
from mags.scheduler.applier import StateApplier
from mags.scheduler.changes import RESTART_REASON, Change, replaced_reason
from mags.scheduler.launch import load_context, sandbox_request

log = logging.getLogger(__name__)

REPROVISION_REASON = "re-provisioning: its sandbox was lost when the server or host went down"
ASLEEP_REASON = "asleep: its sandbox was lost when the server or host went down; the next request wakes it"


def resume_mode(row: Row[Any]) -> Literal["running", "sleeping"] | None:
    """How a job whose sandbox is gone comes back, or None if it ends."""
    m = row._mapping
    if not m["persistent"] or not m["workspace_id"] or m["stop_reason"]:
        return None
    if m["vm_status"] not in (VmStatus.RUNNING.value, VmStatus.SLEEPING.value):
        return None  # never started (starting) or already going away (stopping)
    if m["no_sleep"]:
        return "running"
    if m["vm_status"] == VmStatus.SLEEPING.value:
        return "sleeping"  # nothing ran in it: it wakes as it would have
    # a `mags new` sandbox's script only holds the VM open
    return "sleeping" if script_done(row) or m["script"].strip() == NEW_SCRIPT else None


def _replacement(conn: Connection, row: Row[Any]) -> str | None:
    """A job submitted after ``row`` on its workspace and still waiting for it, if any."""
    m = row._mapping
    stmt = (
        select(jobs.c.request_id)
        .where(
            and_(
                jobs.c.user_id == m["user_id"],
                jobs.c.workspace_id == m["workspace_id"],
                jobs.c.request_id != m["request_id"],
                jobs.c.status == JobStatus.PENDING.value,
                jobs.c.vm_status.in_([VmStatus.PENDING.value, VmStatus.STARTING.value]),
                jobs.c.created_at > m["created_at"],
            )
        )
        .order_by(jobs.c.created_at)
        .limit(1)
    )
    found = conn.execute(stmt).scalar()
    return str(found) if found is not None else None


async def resume_lost(
    db: Database,
    agent: AgentClient,
    applier: StateApplier,
    clock: Callable[[], float],
    settings: Settings,
    job_id: str,
) -> bool:
    """Bring back ``job_id``'s VM on ``agent`` if it qualifies; True if it was handled.

    A VM that qualifies but cannot be re-created (workspace deleted, agent failure) ends with
    "server restarted" and why.
    """
    row = await JobStore(db, clock).get_internal(job_id)
    if row is None:
        return False
    mode = resume_mode(row)
    if mode is None:
        return False
    m = row._mapping
    newer = await db.read(_replacement, row)
    if newer is not None:
        reason = replaced_reason(newer)
        log.info("job %s: not re-provisioned, job %s was replacing it", job_id, newer)
        await applier.apply(Change("finish", job_id, clock(), reason=reason))
        return True
    try:
        ctx = await load_context(db, row, settings, clock())
        req = sandbox_request(row, settings, ctx)
        # uploaded files were placed in the workspace at the first start
        req = req.model_copy(update={"resume": mode, "rerun_script": mode == "running" and not script_done(row),
                                     "files": []})
        if mode == "running":
            await applier.apply(Change("state", job_id, clock(), state="starting", reason=REPROVISION_REASON))
        elif m["vm_status"] != VmStatus.SLEEPING.value:
            await applier.apply(Change("state", job_id, clock(), state="sleeping", reason=ASLEEP_REASON))
        await agent.create_sandbox(req)
    except Exception as exc:  # noqa: BLE001 - any failure ends the job, with the reason
        log.warning("job %s: cannot re-provision its sandbox: %s", job_id, exc)
        reason = f"{RESTART_REASON} (could not re-provision its sandbox: {exc})"
        await applier.apply(Change("finish", job_id, clock(), reason=reason))
        return True
    log.info("job %s: sandbox re-provisioned (%s)", job_id, mode)
    return True
