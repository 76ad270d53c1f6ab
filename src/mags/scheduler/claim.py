"""Atomically claim pending jobs for an agent: one ``UPDATE ... RETURNING`` per batch.

PostgreSQL: the inner SELECT takes ``FOR UPDATE SKIP LOCKED``, so concurrent dispatchers
claim disjoint rows without waiting.  SQLite ignores that clause, but the statement runs
inside ``BEGIN IMMEDIATE`` (one writer at a time), which makes it just as atomic.

One sandbox per workspace: a job on a workspace is only claimed when no other job on that
workspace has a sandbox (starting, running, sleeping, stopping) and no older job on it waits.
A job submitted to replace a workspace's live sandbox therefore stays ``pending`` until the
old sandbox is stopped -- and, since the agent reports a stop's final sync before the stop
itself, until that sync is the workspace's head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, and_, func, insert, literal, or_, select, update
from sqlalchemy.engine import Row

from mags.core.db import Database
from mags.core.schema import job_events, jobs
from mags.core.states import VM_ACTIVE, JobStatus, VmStatus

# The sandbox id: "vm-" + 12 hex digits.  Derived in SQL from the (random) request id so one
# statement can claim many rows, each with its own id.
VM_ID_SQL = literal("vm-") + func.substr(func.replace(jobs.c.request_id, "-", ""), 1, 12)

CLAIM_COLUMNS = (
    jobs.c.request_id,
    jobs.c.user_id,
    jobs.c.name,
    jobs.c.script,
    jobs.c.environment,
    jobs.c.persistent,
    jobs.c.no_sync,
    jobs.c.no_sleep,
    jobs.c.workspace_id,
    jobs.c.base_workspace_id,
    jobs.c.startup_command,
    jobs.c.file_ids,
    jobs.c.disk_gb,
    jobs.c.rootfs_type,
    jobs.c.timeout_s,
    jobs.c.vm_id,
    jobs.c.created_at,
)


async def claim_jobs(db: Database, agent_id: str, limit: int, clock: Callable[[], float]) -> list[Row[Any]]:
    """Mark up to ``limit`` oldest pending jobs as starting on ``agent_id``; return them."""
    return await db.write(claim_in, agent_id, limit, clock())


def claim_in(conn: Connection, agent_id: str, limit: int, now: float) -> list[Row[Any]]:
    """:func:`claim_jobs` inside the caller's transaction (the submit fast path), oldest first."""
    rows = _claim(conn, agent_id, limit, now)
    rows.sort(key=lambda r: r._mapping["created_at"])
    return rows


_OTHER = jobs.alias("other")
# another job holds (or is ahead in line for) this job's workspace
_WORKSPACE_TAKEN = (
    select(_OTHER.c.request_id)
    .where(
        and_(
            _OTHER.c.user_id == jobs.c.user_id,
            _OTHER.c.workspace_id == jobs.c.workspace_id,
            _OTHER.c.request_id != jobs.c.request_id,
            or_(
                _OTHER.c.vm_status.in_([s.value for s in VM_ACTIVE]),
                and_(_OTHER.c.vm_status == VmStatus.PENDING.value, _OTHER.c.created_at < jobs.c.created_at),
            ),
        )
    )
    .exists()
)


def _claim(conn: Connection, agent_id: str, limit: int, now: float) -> list[Row[Any]]:
    pending = and_(jobs.c.status == JobStatus.PENDING.value, jobs.c.vm_status == VmStatus.PENDING.value)
    oldest = (
        select(jobs.c.request_id)
        .where(and_(pending, or_(jobs.c.workspace_id.is_(None), ~_WORKSPACE_TAKEN)))
        .order_by(jobs.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(jobs)
        .where(and_(jobs.c.request_id.in_(oldest), pending))
        .values(vm_status=VmStatus.STARTING.value, vm_id=VM_ID_SQL, agent_id=agent_id, updated_at=now)
        .returning(*CLAIM_COLUMNS)
    )
    rows = list(conn.execute(stmt).all())
    if rows:
        conn.execute(
            insert(job_events),
            [
                {
                    "job_id": r._mapping["request_id"],
                    "ts": now,
                    "from_status": JobStatus.PENDING.value,
                    "to_status": JobStatus.PENDING.value,
                    "from_vm_status": VmStatus.PENDING.value,
                    "vm_status": VmStatus.STARTING.value,
                    "reason": f"assigned to agent {agent_id}",
                }
                for r in rows
            ],
        )
    return rows
