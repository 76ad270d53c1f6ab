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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy.engine import Row

from mags.agent.models import AgentClient
from mags.config import Settings
from mags.core.db import Database
from mags.core.jobs import JobStore
from mags.core.states import VmStatus, script_done
from mags.scheduler.admission import NEW_SCRIPT
from mags.scheduler.applier import StateApplier
from mags.scheduler.changes import RESTART_REASON, Change
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
