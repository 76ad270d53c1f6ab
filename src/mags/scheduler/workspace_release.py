"""Freeing a workspace before it is deleted: what holds it is stopped, waited for, or a 409.

What holds a workspace -- its live jobs, and ephemeral sandboxes using it as a base -- is one
of three kinds (:func:`hold_of`):

* **idle**: a persistent VM whose script has finished, any sleeping VM (its processes are
  gone), or a ``mags new`` sandbox.  Stopped *without* a final sync: the data is about to be deleted.
* **ending**: a sandbox being torn down -- ``stopping``, or a non-persistent job whose script
  just ended and whose agent is about to report it stopped.  Waited for (on the job notifier,
  at most ``RELEASE_WAIT_S``), then stopped like an idle one.  So ``mags run -w X ...`` followed
  at once by ``mags workspace delete X`` works.
* **busy**: a script still running, or a sandbox still pending / being created: 409 naming
  the job (code ``workspace_in_use``), unless ``force``: then it is stopped first.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.engine import Row

from mags.core.notify import wait_until
from mags.core.states import SCRIPT_DONE, VM_STARTING, VmStatus
from mags.core.workspace_upkeep import WorkspaceUpkeep
from mags.errors import Conflict
from mags.scheduler.changes import WORKSPACE_DELETED_REASON

if TYPE_CHECKING:
    from mags.scheduler.control import JobController

RELEASE_WAIT_S = 10.0  # a sandbox being torn down is waited for this long, then stopped
IN_USE = "workspace_in_use"
_UP = (VmStatus.RUNNING.value, VmStatus.SLEEPING.value)

Hold = Literal["idle", "ending", "busy"]


def hold_of(row: Row[Any]) -> Hold:
    """How a live job holds its workspace (see the module docstring)."""
    m = row._mapping
    if m["vm_status"] == VmStatus.STOPPING:
        return "ending"
    if m["vm_status"] == VmStatus.SLEEPING:
        return "idle"  # nothing runs in a sleeping VM (a frozen server script included): it is gone
    done = m["finished_at"] is not None or m["status"] in SCRIPT_DONE or bool(m["is_new"])
    if m["vm_status"] in _UP and done:
        # a non-persistent sandbox ends with its script: its agent is tearing it down already
        return "idle" if m["persistent"] else "ending"
    return "busy"


def busy_message(name: str, row: Row[Any]) -> str:
    m = row._mapping
    doing = "is still starting" if m["vm_status"] in VM_STARTING else "is still running its script"
    return (
        f'workspace "{name}" is in use: job {m["request_id"]} {doing} '
        f"(wait for it, stop it, or delete with force: mags workspace delete --force {name})"
    )


class WorkspaceRelease:
    """Stops or waits for whatever holds a workspace, so that it can be deleted."""

    def __init__(
        self, workspaces: WorkspaceUpkeep, controller: JobController, wait_s: float = RELEASE_WAIT_S
    ) -> None:
        self.workspaces = workspaces
        self.controller = controller
        self.wait_s = wait_s

    async def free(self, user_id: int, name: str, *, force: bool = False) -> list[str]:
        """Leave no live job on workspace ``name``; returns the jobs it stopped.

        Raises :class:`Conflict` (``workspace_in_use``) for a running script without ``force``,
        and when a sandbox is still not gone after the wait and a stop.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        stopped: list[str] = []
        while True:
            holders = await self.workspaces.holders(user_id, name)
            if not holders:
                return stopped
            late = loop.time() >= deadline
            busy = [r for r in holders if hold_of(r) == "busy" and r._mapping["request_id"] not in stopped]
            if busy and not force:
                raise Conflict(busy_message(name, busy[0]), code=IN_USE)
            if late and stopped and all(r._mapping["request_id"] in stopped for r in holders):
                job_id = holders[0]._mapping["request_id"]
                raise Conflict(
                    f'workspace "{name}" is in use: job {job_id} is still stopping; try again', code=IN_USE
                )
            # a job stopped once is only waited for afterwards: the agent's report is on its way
            to_stop = [
                r for r in holders
                if r._mapping["request_id"] not in stopped and (late or hold_of(r) != "ending")
            ]  # fmt: skip
            if to_stop:
                for row in to_stop:
                    await self._stop(user_id, row._mapping["request_id"])
                    stopped.append(row._mapping["request_id"])
                continue
            await self._ended(user_id, holders[0]._mapping["request_id"], deadline - loop.time())

    async def _stop(self, user_id: int, job_id: str) -> None:
        try:
            await self.controller.stop(user_id, job_id, WORKSPACE_DELETED_REASON, sync=False)
        except Conflict:
            pass  # it stopped on its own meanwhile

    async def _ended(self, user_id: int, job_id: str, timeout: float) -> None:
        """Wait until the job's sandbox is stopped (or ``timeout``)."""
        jobs = self.controller.jobs
        await wait_until(
            self.controller.applier.notifier,
            job_id,
            lambda: jobs.get(user_id, job_id),
            lambda row: row._mapping["vm_status"] == VmStatus.STOPPED,
            max(0.0, timeout),
        )
