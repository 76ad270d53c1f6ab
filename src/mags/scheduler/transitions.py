"""What each :class:`Change` does to a job: pure functions over :class:`JobState`.

The rules (CONTRACT.md, "Job status values"):

* ``status`` follows the script: ``running`` once it runs, ``completed`` on exit 0, ``error``
  otherwise; ``error`` with the reason when the sandbox dies or is stopped under the script.
* A persistent job's VM outlives the script; ``status`` follows the VM (``sleeping`` when it
  sleeps, ``running`` when woken, and ``completed`` once it stops after the script exited),
  while ``exit_code`` keeps the script's result.
* A user's stop ends a running script as ``error: stopped by user``, except for persistent jobs,
  which end ``completed`` (stopping is how a persistent VM is meant to end; so does a VM
  replaced by a new job on its workspace, "replaced by job X").
* A job whose sandbox was lost (server restarted, agent gone) before its script ran goes back
  to ``pending`` and runs again; one whose script had started ends ``error`` (``lost``).
"""

from __future__ import annotations

from typing import Any

from mags.core.states import JobState, JobStatus, VmStatus
from mags.scheduler.changes import SPAWNED_REASON, USER_STOP_REASON, Change, planned_stop, requeue_reason

J, V = JobStatus, VmStatus

# vm_status an agent's sandbox state maps to
_VM_FROM_AGENT = {s.value: s for s in (V.STARTING, V.RUNNING, V.SLEEPING, V.STOPPING, V.STOPPED)}


def apply_change(state: JobState, change: Change, now: float) -> Any:
    """Apply one non-log change; may raise IllegalTransition."""
    handler = _HANDLERS[change.kind]
    return handler(state, change, now)


def _started(state: JobState, change: Change, now: float) -> None:
    if state.status != J.PENDING:
        return
    vm = V.RUNNING if state.vm_status in (V.STARTING, V.PENDING) else None
    if state.vm_status == V.PENDING:
        state.transition(change.ts, "sandbox starting", vm_status=V.STARTING)
    state.transition(change.ts, "sandbox started, script running", status=J.RUNNING, vm_status=vm)
    state.set(started_at=change.ts)


def _exit(state: JobState, change: Change, now: float) -> None:
    if state.script_done:
        # already ended by our side (stop, shutdown): keep the script's own result if we lack it
        if state.exit_code is None and change.exit_code is not None:
            state.set(exit_code=change.exit_code, script_duration_ms=change.duration_ms)
        return
    _started(state, change, now)
    code = change.exit_code
    fields: dict[str, Any] = {
        "exit_code": code,
        "script_duration_ms": change.duration_ms,
        "finished_at": change.ts,
    }
    if state.stop_reason:
        status, reason = _stopped_outcome(state)
        if status == J.ERROR:
            fields["error_message"] = state.stop_reason
    elif code == 0:
        status, reason = J.COMPLETED, "script exited with code 0"
    else:
        status = J.ERROR
        reason = "script exited" if code is None else f"script exited with code {code}"
        if change.reason:
            reason = f"{reason}: {change.reason}"
        fields["error_message"] = change.reason
    state.transition(change.ts, reason, status=status)
    state.set(**fields)


def _stopped_outcome(state: JobState) -> tuple[JobStatus, str]:
    """How a script that was stopped on purpose ends."""
    reason = state.stop_reason or "sandbox stopped"
    if state.persistent and planned_stop(state.stop_reason):
        return J.COMPLETED, reason
    return J.ERROR, reason


def _state(state: JobState, change: Change, now: float) -> None:
    target = _VM_FROM_AGENT.get(change.state or "")
    if target is None or target == state.vm_status:
        return
    reason = change.reason or f"sandbox {target.value}"
    if target == V.STOPPED:
        _vm_stopped(state, change.ts, reason)
        return
    if state.status == J.PENDING:
        if target == V.RUNNING:
            _started(state, change, now)
        else:
            state.transition(change.ts, reason, vm_status=target)
        return
    status = None
    if state.persistent:
        # a persistent job's status shows whether its VM is up or asleep (also while a
        # `sleep infinity` script is frozen inside it); completed/error stay until it changes
        status = {V.RUNNING: J.RUNNING, V.SLEEPING: J.SLEEPING}.get(target)
    state.transition(change.ts, reason, status=status, vm_status=target)


def _vm_stopped(state: JobState, ts: float, reason: str) -> None:
    """The sandbox is gone: end the script if it was still running; persistent jobs complete."""
    fields: dict[str, Any] = {"stopped_at": ts}
    if not state.script_done:
        if state.stop_reason:
            status, reason = _stopped_outcome(state)
            if status == J.ERROR:
                fields["error_message"] = state.stop_reason
        else:
            status = J.ERROR
            fields["error_message"] = reason
        fields["finished_at"] = ts
    elif state.persistent:
        status = J.COMPLETED
    else:
        status = state.status
    state.transition(ts, reason, status=status, vm_status=V.STOPPED)
    state.set(**fields)


def _launch_failed(state: JobState, change: Change, now: float) -> None:
    if state.vm_status == V.STOPPED:
        return
    message = change.reason or "sandbox failed to start"
    if state.script_done:
        state.transition(change.ts, f"sandbox failed: {message}", vm_status=V.STOPPED)
        state.set(stopped_at=change.ts)
        return
    state.transition(change.ts, f"sandbox failed to start: {message}", status=J.ERROR, vm_status=V.STOPPED)
    state.set(error_message=message, finished_at=change.ts, stopped_at=change.ts)


def _cancel(state: JobState, change: Change, now: float) -> bool:
    """Cancel a job no dispatcher has claimed; False if one already has."""
    if state.status != J.PENDING or state.vm_status != V.PENDING:
        return False
    reason = change.reason or "cancelled"
    state.transition(change.ts, reason, status=J.ERROR, vm_status=V.STOPPED)
    state.set(error_message=reason, finished_at=change.ts, stopped_at=change.ts)
    return True


def _stop_requested(state: JobState, change: Change, now: float) -> None:
    if state.vm_status != V.STOPPED:
        state.set(stop_reason=change.reason or USER_STOP_REASON)


def _finish(state: JobState, change: Change, now: float) -> None:
    """Force the end state, e.g. when the sandbox is known to be gone."""
    if state.vm_status == V.STOPPED and state.script_done:
        return
    reason = change.reason or "sandbox stopped"
    if not state.stop_reason:
        state.set(stop_reason=reason)
    if state.vm_status == V.STOPPED:  # stopped but the script never got an outcome
        state.transition(change.ts, reason, status=J.ERROR)
        state.set(error_message=reason, finished_at=change.ts)
        return
    _vm_stopped(state, change.ts, reason)


def _lost(state: JobState, change: Change, now: float) -> str | None:
    """The sandbox is gone with its server or agent: requeue the job, or end it.

    Requeued -- back to ``pending``, in its old place in line (the claim takes the oldest
    first) -- only if the script never ran: the job is still ``pending``, no spawn record
    says otherwise (``data["spawned_at"]``, see agent/spawns.py) and nobody asked to stop it
    (a user's stop, a replacement or a workspace deletion set ``stop_reason`` before they
    reach the agent).  Everything else ends as :func:`_finish` does.  The decision is taken
    on the row as this transaction reads it, so a late ``started`` cannot slip in between.
    Returns ``"requeued"``, ``"ended"`` or None (already over).
    """
    if state.vm_status == V.STOPPED and state.script_done:
        return None
    spawned_at = (change.data or {}).get("spawned_at")
    never_ran = state.status == J.PENDING and state.vm_status == V.STARTING
    if never_ran and spawned_at is None and not state.stop_reason:
        state.transition(change.ts, requeue_reason(change.reason), vm_status=V.PENDING)
        state.set(vm_id=None, agent_id=None)  # no sandbox any more; the next claim assigns one
        return "requeued"
    if never_ran and spawned_at is not None:
        # the history must show that it ran: a script that started is never run again
        state.transition(float(spawned_at), SPAWNED_REASON, status=J.RUNNING, vm_status=V.RUNNING)
        state.set(started_at=float(spawned_at))
    _finish(state, change, now)
    return "ended"


_HANDLERS = {
    "started": _started,
    "exit": _exit,
    "state": _state,
    "launch_failed": _launch_failed,
    "cancel": _cancel,
    "stop_requested": _stop_requested,
    "finish": _finish,
    "lost": _lost,
}
