"""Job rows: create, read (always scoped to a user), list, logs, history, settings, usage.

Queries are plain functions over a Core ``Connection`` (module-level ``_name``); the
:class:`JobStore` methods run them through the :class:`~mags.core.db.Database`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, bindparam, case, func, insert, select, update
from sqlalchemy.engine import Row

from mags.core.db import Database
from mags.core.render import JOB_COLUMNS
from mags.core.schema import job_events, job_logs, jobs
from mags.core.states import JobStatus, VmStatus
from mags.errors import NotFound

T = TypeVar("T")


@dataclass
class NewJob:
    """A validated job submission (see ``api/job_input.py``)."""

    request_id: str
    script: str
    type: str = "inline"
    name: str | None = None
    workspace_id: str | None = None
    base_workspace_id: str | None = None
    persistent: bool = False
    no_sleep: bool = False
    no_sync: bool = False
    ephemeral: bool = False
    startup_command: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    file_ids: list[str] = field(default_factory=list)
    disk_gb: int | None = None
    rootfs_type: str = "standard"
    timeout_s: float | None = None  # the script's wall-clock limit; None: the server's default


INLINE_LOG_ROWS = 500

# Hot statements are built once; SQLAlchemy then reuses their compiled form.
_GET = select(*JOB_COLUMNS).where(
    and_(jobs.c.request_id == bindparam("job_id"), jobs.c.user_id == bindparam("user_id"))
)
_HISTORY = select(job_events).where(job_events.c.job_id == bindparam("job_id")).order_by(job_events.c.id)
_LOGS = (
    select(job_logs.c.seq, job_logs.c.ts, job_logs.c.source, job_logs.c.message)
    .where(and_(job_logs.c.job_id == bindparam("job_id"), job_logs.c.seq > bindparam("after")))
    .order_by(job_logs.c.seq)
    .limit(bindparam("limit"))
)


def _get(conn: Connection, user_id: int, job_id: str) -> Row[Any]:
    row = conn.execute(_GET, {"job_id": job_id, "user_id": user_id}).first()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return row


def _history(conn: Connection, job_id: str) -> list[Row[Any]]:
    return list(conn.execute(_HISTORY, {"job_id": job_id}).all())


def _get_with_history(conn: Connection, user_id: int, job_id: str) -> tuple[Row[Any], list[Row[Any]]]:
    return _get(conn, user_id, job_id), _history(conn, job_id)


def _logs(conn: Connection, job_id: str, after: int, limit: int) -> list[Row[Any]]:
    return list(conn.execute(_LOGS, {"job_id": job_id, "after": after, "limit": limit}).all())


def _create(
    conn: Connection,
    values: dict[str, Any],
    event: dict[str, Any],
    then: Callable[[Connection, float], Any] | None = None,
) -> Any:
    conn.execute(insert(jobs), values)
    conn.execute(insert(job_events), event)
    return then(conn, values["created_at"]) if then is not None else None


def _list(conn: Connection, user_id: int, page: int, page_size: int) -> tuple[list[Row[Any]], int]:
    total = conn.execute(select(func.count()).select_from(jobs).where(jobs.c.user_id == user_id)).scalar_one()
    rows = conn.execute(
        select(*JOB_COLUMNS)
        .where(jobs.c.user_id == user_id)
        .order_by(jobs.c.created_at.desc(), jobs.c.request_id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    return list(rows), total


def _update_settings(conn: Connection, user_id: int, job_id: str, values: dict[str, Any]) -> Row[Any]:
    result = conn.execute(
        update(jobs).where(and_(jobs.c.request_id == job_id, jobs.c.user_id == user_id)).values(**values)
    )
    if result.rowcount == 0:
        raise NotFound(f"job {job_id} not found")
    return _get(conn, user_id, job_id)


def _internal(conn: Connection, job_id: str) -> Row[Any] | None:
    return conn.execute(select(jobs).where(jobs.c.request_id == job_id)).first()


def _usage(conn: Connection, user_id: int, since: float, now: float) -> dict[str, Any]:
    vm_seconds = case(
        (jobs.c.started_at.is_not(None), func.coalesce(jobs.c.stopped_at, now) - jobs.c.started_at),
        else_=0.0,
    )

    def count_status(*statuses: str) -> Any:
        return func.coalesce(func.sum(case((jobs.c.status.in_(statuses), 1), else_=0)), 0)

    stmt = select(
        func.count().label("total_jobs"),
        func.coalesce(func.sum(vm_seconds), 0.0).label("vm_seconds"),
        func.coalesce(func.sum(jobs.c.script_duration_ms), 0).label("script_ms"),
        count_status(JobStatus.COMPLETED.value).label("completed"),
        count_status(JobStatus.ERROR.value).label("errors"),
        count_status(JobStatus.RUNNING.value, JobStatus.SLEEPING.value).label("active"),
        count_status(JobStatus.PENDING.value).label("pending"),
    ).where(and_(jobs.c.user_id == user_id, jobs.c.created_at >= since))
    return dict(conn.execute(stmt).one()._mapping)


class JobStore:
    """Data access for jobs; every read a user can trigger takes that user's id."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    async def create(self, user_id: int, job: NewJob) -> float:
        """Insert a pending job and its first history row; returns ``created_at``."""
        values, event = self._new_rows(user_id, job)
        await self.db.write(_create, values, event)
        return float(values["created_at"])

    async def create_then(self, user_id: int, job: NewJob, then: Callable[[Connection, float], T]) -> T:
        """Insert a pending job, then run ``then(conn, created_at)`` in the same transaction.

        The submit fast path uses it to claim the new job for an agent without a second write.
        """
        values, event = self._new_rows(user_id, job)
        return await self.db.write(_create, values, event, then)  # type: ignore[no-any-return]

    def _new_rows(self, user_id: int, job: NewJob) -> tuple[dict[str, Any], dict[str, Any]]:
        now = self.clock()
        values: dict[str, Any] = {
            "request_id": job.request_id,
            "user_id": user_id,
            "name": job.name,
            "workspace_id": job.workspace_id,
            "base_workspace_id": job.base_workspace_id,
            "script": job.script,
            "type": job.type,
            "persistent": job.persistent,
            "no_sleep": job.no_sleep,
            "no_sync": job.no_sync,
            "ephemeral": job.ephemeral,
            "startup_command": job.startup_command,
            "environment": job.environment,
            "file_ids": job.file_ids,
            "disk_gb": job.disk_gb,
            "rootfs_type": job.rootfs_type,
            "timeout_s": job.timeout_s,
            "status": JobStatus.PENDING.value,
            "vm_status": VmStatus.PENDING.value,
            "log_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        event = {
            "job_id": job.request_id,
            "ts": now,
            "from_status": None,
            "to_status": JobStatus.PENDING.value,
            "from_vm_status": None,
            "vm_status": VmStatus.PENDING.value,
            "reason": "submitted",
        }
        return values, event

    async def get(self, user_id: int, job_id: str) -> Row[Any]:
        """The job's public columns; NotFound if it does not exist *for this user*."""
        return await self.db.read(_get, user_id, job_id)

    async def get_with_history(self, user_id: int, job_id: str) -> tuple[Row[Any], list[Row[Any]]]:
        return await self.db.read(_get_with_history, user_id, job_id)

    async def get_internal(self, job_id: str) -> Row[Any] | None:
        """Every column of a job, unscoped (scheduler use only)."""
        return await self.db.read(_internal, job_id)

    async def list(self, user_id: int, page: int, page_size: int) -> tuple[list[Row[Any]], int]:
        """One page of a user's jobs, newest first, and the total count."""
        return await self.db.read(_list, user_id, page, page_size)

    async def logs(self, job_id: str, after: int = 0, limit: int | None = None) -> list[Row[Any]]:
        """Log lines with ``seq > after`` in order (the caller has checked ownership)."""
        total = 2**31 - 1 if limit is None else limit
        # most jobs print little: read inline, and leave long tails to the reader threads
        rows = await self.db.read(_logs, job_id, after, min(total, INLINE_LOG_ROWS))
        if len(rows) < INLINE_LOG_ROWS or total <= INLINE_LOG_ROWS:
            return rows
        rest = await self.db.read_heavy(_logs, job_id, rows[-1]._mapping["seq"], total - len(rows))
        return rows + rest

    async def history(self, job_id: str) -> list[Row[Any]]:
        """Every recorded transition of a job, oldest first."""
        return await self.db.read(_history, job_id)

    async def update_settings(self, user_id: int, job_id: str, values: dict[str, Any]) -> Row[Any]:
        """Change user-editable settings (``startup_command``, ``no_sleep``)."""
        return await self.db.write(_update_settings, user_id, job_id, {**values, "updated_at": self.clock()})

    async def usage(self, user_id: int, window_days: int) -> dict[str, Any]:
        """Counts and VM time of the jobs a user created in the last ``window_days`` days."""
        now = self.clock()
        m = await self.db.read_heavy(_usage, user_id, now - window_days * 86400.0, now)
        return {
            "total_jobs": int(m["total_jobs"]),
            "vm_seconds": round(float(m["vm_seconds"]), 3),
            "script_seconds": round(int(m["script_ms"]) / 1000.0, 3),
            "completed": int(m["completed"]),
            "errors": int(m["errors"]),
            "active": int(m["active"]),
            "pending": int(m["pending"]),
            "window_days": window_days,
        }
