"""Changes to a job's state, from an agent's event stream or from the control plane itself.

Everything that moves a running job forward is a :class:`Change` applied by the single
:class:`~mags.scheduler.applier.StateApplier`, so agent events and our own actions (launch
results, stops, shutdown) are applied in one order and batched into few transactions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from mags.agent.models import AgentEvent

ChangeKind = Literal[
    "started",  # agent: the script runs (also sent by the dispatcher once create_sandbox returns)
    "log",  # agent: one line of output
    "exit",  # agent: the script exited
    "state",  # agent: the sandbox changed state
    "synced",  # agent / sync API: a workspace snapshot to commit (data: SyncResult fields)
    "launch_failed",  # dispatcher: create_sandbox raised
    "cancel",  # API: stop a job nobody claimed yet; result True if it was cancelled
    "stop_requested",  # API / shutdown: remember why the sandbox is being stopped
    "finish",  # force the job to its end state (sandbox gone, restart, shutdown)
    "lost",  # restart / dead agent: the sandbox is gone; requeue the job if its script never ran
]

USER_STOP_REASON = "stopped by user"
CANCEL_REASON = "stopped before start"
SHUTDOWN_REASON = "server shutting down"
RESTART_REASON = "server restarted"
REQUEUE_REASON = "requeued: server restarted before it started"
# the agent's spawn record (agent/spawns.py) says the script ran, its `started` never arrived
SPAWNED_REASON = "sandbox started, script running (recorded by the agent; reported after a restart)"
SPAWNED_LOST_REASON = f"{RESTART_REASON}: the script had started, its result was lost"
REPLACED_PREFIX = "replaced by job "
# a workspace delete stops the idle VM on it (with --force, also a running script)
WORKSPACE_DELETED_REASON = "workspace deleted"


def replaced_reason(job_id: str) -> str:
    """Why a workspace's live sandbox is stopped for a new job on the same workspace."""
    return f"{REPLACED_PREFIX}{job_id}"


def requeue_reason(why: str | None) -> str:
    """The history entry of a job put back in the queue because its sandbox was lost."""
    if not why or why == RESTART_REASON:
        return REQUEUE_REASON
    return f"requeued before it started: {why}"


def planned_stop(reason: str | None) -> bool:
    """A stop that is the normal end of a persistent VM (user stop, replacement, workspace
    deletion), not a failure."""
    return bool(reason) and (
        reason in (USER_STOP_REASON, WORKSPACE_DELETED_REASON) or reason.startswith(REPLACED_PREFIX)
    )


@dataclass
class Change:
    """One change to apply to one job; ``done`` (if set) gets the handler's result."""

    kind: ChangeKind
    job_id: str
    ts: float
    source: str | None = None
    message: str | None = None
    exit_code: int | None = None
    duration_ms: int | None = None
    reason: str | None = None
    state: str | None = None
    data: dict[str, Any] | None = None
    from_agent: bool = False  # reported on the agent's event stream (ordered with its syncs)
    done: asyncio.Future[Any] | None = field(default=None, repr=False)

    @classmethod
    def from_event(cls, ev: AgentEvent) -> Change:
        """Translate an agent event."""
        return cls(
            kind=ev.type,
            job_id=ev.job_id,
            ts=ev.ts,
            source=ev.source,
            message=ev.message,
            exit_code=ev.exit_code,
            duration_ms=ev.duration_ms,
            reason=ev.reason,
            state=ev.state,
            data=ev.data,
            from_agent=True,
        )
