"""Cron job rows: create, read (always scoped to a user), list, update, delete, run history.

Queries are plain functions over a Core ``Connection``; :class:`CronStore` runs them through
the :class:`~mags.core.db.Database`.  The scheduler's claim transactions live in
``scheduler/cron_claim.py``.  A cron is addressed by its id or, for CLI convenience, by its
name (the id wins if both match).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from mags.core.db import Database
from mags.core.ids import iso
from mags.core.schema import cron_jobs, cron_runs, jobs
from mags.errors import Conflict, NotFound

DEFAULT_RUNS = 20
MAX_RUNS = 100

# run statuses: `starting` only between a claim and the job's submission
RUN_STARTING = "starting"
RUN_STARTED = "started"
RUN_SKIPPED = "skipped"
RUN_FAILED = "failed_to_start"

OVERLAP_POLICIES = ("skip", "allow")


@dataclass
class NewCron:
    """A validated cron definition (see ``api/cron.py``)."""

    name: str
    cron_expression: str
    script: str
    timezone: str = "UTC"
    workspace_id: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    persistent: bool = False
    enabled: bool = True
    overlap_policy: str = "skip"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


# the cron row plus the live status of its last job
_SELECT = select(
    cron_jobs,
    jobs.c.status.label("last_job_status"),
    jobs.c.exit_code.label("last_exit_code"),
).select_from(cron_jobs.outerjoin(jobs, jobs.c.request_id == cron_jobs.c.last_job_id))

_RUNS = select(
    cron_runs,
    jobs.c.status.label("job_status"),
    jobs.c.exit_code.label("exit_code"),
).select_from(cron_runs.outerjoin(jobs, jobs.c.request_id == cron_runs.c.job_id))


def _find(conn: Connection, user_id: int, ref: str) -> Row[Any]:
    rows = conn.execute(
        _SELECT.where(
            and_(cron_jobs.c.user_id == user_id, or_(cron_jobs.c.id == ref, cron_jobs.c.name == ref))
        )
    ).all()
    if not rows:
        raise NotFound(f"cron job {ref} not found")
    by_id = [r for r in rows if r._mapping["id"] == ref]
    return (by_id or rows)[0]


def _get_by_id(conn: Connection, cron_id: str) -> Row[Any]:
    return conn.execute(_SELECT.where(cron_jobs.c.id == cron_id)).one()


def _runs(conn: Connection, cron_id: str, limit: int) -> list[Row[Any]]:
    stmt = (
        _RUNS.where(cron_runs.c.cron_id == cron_id)
        .order_by(cron_runs.c.scheduled_for.desc(), cron_runs.c.id.desc())
        .limit(limit)
    )
    return list(conn.execute(stmt).all())


def _find_with_runs(conn: Connection, user_id: int, ref: str, limit: int) -> tuple[Row[Any], list[Row[Any]]]:
    row = _find(conn, user_id, ref)
    return row, _runs(conn, row._mapping["id"], limit)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a cron job named {name!r} already exists")


def _create(conn: Connection, values: dict[str, Any]) -> Row[Any]:
    clash = conn.execute(
        select(cron_jobs.c.id).where(
            and_(cron_jobs.c.user_id == values["user_id"], cron_jobs.c.name == values["name"])
        )
    ).first()
    if clash is not None:
        raise _name_taken(values["name"])
    try:
        conn.execute(insert(cron_jobs), values)
    except IntegrityError as exc:  # PostgreSQL: a concurrent create with the same name
        raise _name_taken(values["name"]) from exc
    return _get_by_id(conn, values["id"])


def _list(conn: Connection, user_id: int) -> list[Row[Any]]:
    stmt = _SELECT.where(cron_jobs.c.user_id == user_id).order_by(cron_jobs.c.created_at, cron_jobs.c.id)
    return list(conn.execute(stmt).all())


def _update(conn: Connection, user_id: int, cron_id: str, values: dict[str, Any]) -> Row[Any]:
    if "name" in values:
        clash = conn.execute(
            select(cron_jobs.c.id).where(
                and_(
                    cron_jobs.c.user_id == user_id,
                    cron_jobs.c.name == values["name"],
                    cron_jobs.c.id != cron_id,
                )
            )
        ).first()
        if clash is not None:
            raise _name_taken(values["name"])
    try:
        result = conn.execute(
            update(cron_jobs)
            .where(and_(cron_jobs.c.id == cron_id, cron_jobs.c.user_id == user_id))
            .values(**values)
        )
    except IntegrityError as exc:
        raise _name_taken(values.get("name", "")) from exc
    if result.rowcount == 0:
        raise NotFound(f"cron job {cron_id} not found")
    return _get_by_id(conn, cron_id)


def _delete(conn: Connection, user_id: int, ref: str) -> Row[Any]:
    row = _find(conn, user_id, ref)
    cron_id = row._mapping["id"]
    # explicit, so runs go without relying on SQLite's foreign_keys pragma
    conn.execute(delete(cron_runs).where(cron_runs.c.cron_id == cron_id))
    conn.execute(delete(cron_jobs).where(cron_jobs.c.id == cron_id))
    return row


class CronStore:
    """Data access for cron jobs; every call a user can trigger takes that user's id."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    async def create(self, user_id: int, cron: NewCron, next_run_at: float | None) -> Row[Any]:
        """Insert a cron job; 409 if the user already has one with that name."""
        now = self.clock()
        values = {
            "id": cron.id,
            "user_id": user_id,
            "name": cron.name,
            "cron_expression": cron.cron_expression,
            "timezone": cron.timezone,
            "script": cron.script,
            "workspace_id": cron.workspace_id,
            "environment": cron.environment,
            "persistent": cron.persistent,
            "enabled": cron.enabled,
            "overlap_policy": cron.overlap_policy,
            "next_run_at": next_run_at if cron.enabled else None,
            "created_at": now,
            "updated_at": now,
        }
        return await self.db.write(_create, values)

    async def get(self, user_id: int, ref: str) -> Row[Any]:
        """A cron job by id or name; NotFound if the user has none."""
        return await self.db.read(_find, user_id, ref)

    async def get_with_runs(
        self, user_id: int, ref: str, limit: int = DEFAULT_RUNS
    ) -> tuple[Row[Any], list[Row[Any]]]:
        """A cron job and its most recent runs, newest first."""
        return await self.db.read(_find_with_runs, user_id, ref, limit)

    async def list(self, user_id: int) -> list[Row[Any]]:
        """Every cron job of a user, oldest first."""
        return await self.db.read(_list, user_id)

    async def update(self, user_id: int, cron_id: str, values: dict[str, Any]) -> Row[Any]:
        """Change columns of a cron job (validated by the caller)."""
        return await self.db.write(_update, user_id, cron_id, {**values, "updated_at": self.clock()})

    async def delete(self, user_id: int, ref: str) -> Row[Any]:
        """Delete a cron job and its history; returns it as it was."""
        return await self.db.write(_delete, user_id, ref)

    async def runs(self, cron_id: str, limit: int = DEFAULT_RUNS) -> list[Row[Any]]:
        """The most recent runs of a cron job (caller checked ownership), newest first."""
        return await self.db.read(_runs, cron_id, limit)


def last_status(m: Any) -> str | None:
    """What ``last_status`` shows: the last job's live status, else how the last tick ended."""
    run_status = m["last_run_status"]
    if run_status in (RUN_STARTING, RUN_STARTED):
        return str(m["last_job_status"] or "pending")
    return str(run_status) if run_status else None


def cron_json(row: Any) -> dict[str, Any]:
    """One cron job as the API shows it (environment values are never echoed)."""
    m = row._mapping
    return {
        "id": m["id"],
        "name": m["name"],
        "cron_expression": m["cron_expression"],
        "timezone": m["timezone"],
        "script": m["script"],
        "workspace_id": m["workspace_id"],
        "environment_keys": sorted(m["environment"] or {}),
        "persistent": bool(m["persistent"]),
        "enabled": bool(m["enabled"]),
        "overlap_policy": m["overlap_policy"],
        "next_run_at": iso(m["next_run_at"]),
        "last_run_at": iso(m["last_run_at"]),
        "last_job_id": m["last_job_id"],
        "last_status": last_status(m),
        "last_exit_code": m["last_exit_code"],
        "last_reason": m["last_reason"],
        "created_at": iso(m["created_at"]),
        "updated_at": iso(m["updated_at"]),
    }


def run_json(row: Any) -> dict[str, Any]:
    """One history entry: the tick, its outcome, and the job's live status."""
    m = row._mapping
    return {
        "scheduled_for": iso(m["scheduled_for"]),
        "status": m["status"],
        "reason": m["reason"],
        "job_id": m["job_id"],
        "job_status": m["job_status"],
        "exit_code": m["exit_code"],
        "created_at": iso(m["created_at"]),
    }
