"""The job state machine: allowed tables, illegal transitions raise, events are recorded."""

from __future__ import annotations

import pytest

from mags.core.states import (
    JOB_TRANSITIONS,
    VM_TRANSITIONS,
    IllegalTransition,
    JobState,
    JobStatus,
    VmStatus,
    check_job_transition,
    check_vm_transition,
)
from mags.errors import Conflict

J, V = JobStatus, VmStatus


def test_tables_cover_every_state() -> None:
    assert set(JOB_TRANSITIONS) == set(JobStatus)
    assert set(VM_TRANSITIONS) == set(VmStatus)
    assert VM_TRANSITIONS[V.STOPPED] == frozenset()


@pytest.mark.parametrize(
    ("old", "new"),
    [(J.PENDING, J.RUNNING), (J.PENDING, J.ERROR), (J.RUNNING, J.COMPLETED), (J.RUNNING, J.ERROR),
     (J.COMPLETED, J.SLEEPING), (J.SLEEPING, J.RUNNING), (J.ERROR, J.RUNNING), (J.SLEEPING, J.COMPLETED)],
)
def test_allowed_job_transitions(old: JobStatus, new: JobStatus) -> None:
    check_job_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [(J.PENDING, J.COMPLETED), (J.PENDING, J.SLEEPING), (J.COMPLETED, J.PENDING), (J.ERROR, J.PENDING),
     (J.COMPLETED, J.ERROR), (J.RUNNING, J.PENDING)],
)
def test_illegal_job_transitions(old: JobStatus, new: JobStatus) -> None:
    with pytest.raises(IllegalTransition, match=f"from {old} to {new}"):
        check_job_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [(V.STOPPED, V.RUNNING), (V.PENDING, V.RUNNING), (V.STOPPING, V.RUNNING), (V.RUNNING, V.PENDING)],
)
def test_illegal_vm_transitions(old: VmStatus, new: VmStatus) -> None:
    with pytest.raises(IllegalTransition):
        check_vm_transition(old, new)


def test_illegal_transition_is_a_conflict() -> None:
    assert issubclass(IllegalTransition, Conflict)
    assert IllegalTransition.status_code == 409


def test_tracker_records_every_transition() -> None:
    st = JobState(job_id="j", status=J.PENDING, vm_status=V.PENDING)
    assert st.transition(1.0, "assigned", vm_status=V.STARTING)
    assert st.transition(2.0, "started", status=J.RUNNING, vm_status=V.RUNNING)
    assert not st.transition(2.5, "no-op", status=J.RUNNING)
    assert st.transition(3.0, "exit 0", status=J.COMPLETED)
    assert [(e["from_status"], e["to_status"], e["from_vm_status"], e["vm_status"], e["reason"]) for e in st.events] == [
        ("pending", "pending", "pending", "starting", "assigned"),
        ("pending", "running", "starting", "running", "started"),
        ("running", "completed", "running", "running", "exit 0"),
    ]
    assert st.changes == {"status": "completed", "vm_status": "running"}


def test_tracker_refuses_illegal_and_keeps_state() -> None:
    st = JobState(job_id="j", status=J.COMPLETED, vm_status=V.STOPPED)
    with pytest.raises(IllegalTransition):
        st.transition(1.0, "zombie", vm_status=V.RUNNING)
    with pytest.raises(IllegalTransition):
        st.transition(1.0, "again", status=J.PENDING)
    assert st.status == J.COMPLETED and st.vm_status == V.STOPPED and not st.events
