"""The job state machine: statuses, allowed transitions, and a tracker that records them.

A job has two state fields:

* ``status`` -- what clients wait on.  It follows the *script* until the script exits
  (``pending -> running -> completed | error``, or ``pending -> error`` when it never starts).
  For a persistent job the VM outlives the script; from then on ``status`` follows the VM:
  ``completed|error <-> sleeping|running`` and ``-> completed`` when the VM stops.
* ``vm_status`` -- the sandbox: ``pending -> starting -> running <-> sleeping``,
  ``-> stopping -> stopped``; ``starting -> pending`` when a job whose script never ran lost
  its sandbox (server restarted) and is put back in the queue.

Every change goes through :meth:`JobState.transition`, which checks both tables, raises
:class:`IllegalTransition` for anything else, and records one ``job_events`` row with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mags.errors import Conflict


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SLEEPING = "sleeping"
    COMPLETED = "completed"
    ERROR = "error"


class VmStatus(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    SLEEPING = "sleeping"
    STOPPING = "stopping"
    STOPPED = "stopped"


J, V = JobStatus, VmStatus

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.PENDING: frozenset({J.RUNNING, J.ERROR}),
    # running -> sleeping only for a persistent job whose script has exited (checked by callers)
    J.RUNNING: frozenset({J.COMPLETED, J.ERROR, J.SLEEPING}),
    J.SLEEPING: frozenset({J.RUNNING, J.COMPLETED, J.ERROR}),
    # a finished persistent job follows its VM again
    J.COMPLETED: frozenset({J.RUNNING, J.SLEEPING}),
    J.ERROR: frozenset({J.RUNNING, J.SLEEPING, J.COMPLETED}),
}

VM_TRANSITIONS: dict[VmStatus, frozenset[VmStatus]] = {
    V.PENDING: frozenset({V.STARTING, V.STOPPED}),
    # starting -> pending: requeued, its script never ran (scheduler/transitions.py, ``lost``)
    V.STARTING: frozenset({V.PENDING, V.RUNNING, V.STOPPING, V.STOPPED}),
    # running -> starting: re-provisioning a VM whose sandbox was lost (scheduler/resume.py)
    V.RUNNING: frozenset({V.SLEEPING, V.STARTING, V.STOPPING, V.STOPPED}),
    V.SLEEPING: frozenset({V.STARTING, V.RUNNING, V.STOPPING, V.STOPPED}),
    V.STOPPING: frozenset({V.STOPPED}),
    V.STOPPED: frozenset(),
}

SCRIPT_DONE = frozenset({J.COMPLETED, J.ERROR})
VM_STARTING = frozenset({V.PENDING, V.STARTING})  # the sandbox is not created yet
VM_ACTIVE = frozenset({V.STARTING, V.RUNNING, V.SLEEPING, V.STOPPING})


def script_done(row: Any) -> bool:
    """Whether a job row's script has exited (or will never run), as :attr:`JobState.script_done`."""
    m = row._mapping
    return m["finished_at"] is not None or m["status"] in SCRIPT_DONE


def still_starting(job_id: str, waited: float) -> Conflict:
    """The 409 for a sandbox that was not created while a request (access, exec...) waited for it."""
    return Conflict(
        f"the sandbox of job {job_id} is still starting (waited {waited:g} s): try again in a moment",
        code="sandbox_starting",
    )


class IllegalTransition(Conflict):
    """A state change the state machine does not allow."""


def check_job_transition(old: JobStatus | str, new: JobStatus | str) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is an allowed status change."""
    old, new = JobStatus(old), JobStatus(new)
    if new not in JOB_TRANSITIONS[old]:
        raise IllegalTransition(f"job status cannot change from {old} to {new}")


def check_vm_transition(old: VmStatus | str, new: VmStatus | str) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is an allowed vm_status change."""
    old, new = VmStatus(old), VmStatus(new)
    if new not in VM_TRANSITIONS[old]:
        raise IllegalTransition(f"vm status cannot change from {old} to {new}")


@dataclass
class JobState:
    """A job's mutable state inside one transaction: applies transitions, collects writes.

    ``changes`` holds the columns to UPDATE, ``events`` the ``job_events`` rows to INSERT.
    """

    job_id: str
    status: JobStatus
    vm_status: VmStatus
    persistent: bool = False
    finished_at: float | None = None
    started_at: float | None = None
    exit_code: int | None = None
    stop_reason: str | None = None
    log_count: int = 0
    changes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: Any) -> JobState:
        m = row._mapping
        return cls(
            job_id=m["request_id"],
            status=JobStatus(m["status"]),
            vm_status=VmStatus(m["vm_status"]),
            persistent=bool(m["persistent"]),
            finished_at=m["finished_at"],
            started_at=m["started_at"],
            exit_code=m["exit_code"],
            stop_reason=m["stop_reason"],
            log_count=m["log_count"] or 0,
        )

    @property
    def script_done(self) -> bool:
        """The script has exited (or will never run)."""
        return self.finished_at is not None or self.status in SCRIPT_DONE

    def set(self, **columns: Any) -> None:
        """Record plain column updates (no state change)."""
        self.changes.update(columns)
        for name in ("finished_at", "started_at", "exit_code", "stop_reason", "log_count"):
            if name in columns:
                setattr(self, name, columns[name])

    def transition(
        self,
        ts: float,
        reason: str,
        status: JobStatus | None = None,
        vm_status: VmStatus | None = None,
    ) -> bool:
        """Move to ``status`` and/or ``vm_status``; validate, record one event; False if no-op."""
        new_status = self.status if status is None else JobStatus(status)
        new_vm = self.vm_status if vm_status is None else VmStatus(vm_status)
        if new_status == self.status and new_vm == self.vm_status:
            return False
        if new_status != self.status:
            check_job_transition(self.status, new_status)
        if new_vm != self.vm_status:
            check_vm_transition(self.vm_status, new_vm)
        self.events.append(
            {
                "job_id": self.job_id,
                "ts": ts,
                "from_status": self.status.value,
                "to_status": new_status.value,
                "from_vm_status": self.vm_status.value,
                "vm_status": new_vm.value,
                "reason": reason,
            }
        )
        self.status, self.vm_status = new_status, new_vm
        self.changes["status"] = new_status.value
        self.changes["vm_status"] = new_vm.value
        return True

    @property
    def dirty(self) -> bool:
        return bool(self.changes or self.events)
