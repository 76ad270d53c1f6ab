"""Claiming cron ticks in the database, so each tick runs at most once across servers.

A tick is claimed by one transaction that (1) advances ``cron_jobs.next_run_at`` with a
conditional ``UPDATE ... WHERE next_run_at = <the due time we read>`` -- only one scheduler's
update can match, the others see 0 rows and back off -- and (2) inserts the tick's
``cron_runs`` row, whose UNIQUE (cron_id, scheduled_for) is a second guard.  The run row
carries the job's request id, chosen before the job exists; the job is then submitted like
any API job, and its request id being the jobs table's primary key makes a second submission
of the same run impossible.  A run left ``starting`` by a server that died between the claim
and the submission is taken over (:func:`reclaim`) and submitted -- or recorded as failed when
it is past the grace window.

On SQLite the transaction is ``BEGIN IMMEDIATE`` (one writer at a time); on PostgreSQL the
conditional UPDATE is the transaction's first write, so a loser blocks on the row lock,
re-checks the condition after the winner commits, and matches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from mags.core.cron import RUN_FAILED, RUN_SKIPPED, RUN_STARTED, RUN_STARTING
from mags.core.ids import iso
from mags.core.schedule import Schedule
from mags.core.schema import cron_jobs, cron_runs, jobs
from mags.core.states import SCRIPT_DONE

# history rows kept per cron job (the API shows at most 100)
KEEP_RUNS = 200
MISSED_COUNT_CAP = 1000
_DONE = [s.value for s in SCRIPT_DONE]


@dataclass(frozen=True)
class Claim:
    """A claimed run to submit: the job ``body`` goes through ``parse_new_job`` like an API call."""

    run_id: int
    cron_id: str
    user_id: int
    request_id: str
    scheduled_for: float
    body: dict[str, Any]


@dataclass(frozen=True)
class TickOutcome:
    """What a claim attempt did: ``claimed`` (submit ``claim``), ``skipped`` or ``lost``."""

    kind: str
    claim: Claim | None = None
    reason: str | None = None


LOST = TickOutcome("lost")


def job_body(m: Any) -> dict[str, Any]:
    """The ``POST /mags-jobs`` body a cron job's run submits."""
    return {
        "script": m["script"],
        "name": m["name"],
        "workspace_id": m["workspace_id"],
        "persistent": bool(m["persistent"]),
        "environment": dict(m["environment"] or {}),
    }


def _insert_run(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert a run row; None if this tick already has one (it was handled elsewhere)."""
    ins = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    stmt = (
        ins(cron_runs)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["cron_id", "scheduled_for"])
        .returning(cron_runs.c.id)
    )
    return conn.execute(stmt).scalar_one_or_none()


def _previous_going(conn: Connection, cron_id: str) -> str | None:
    """The job id of the cron's last run if its script has not finished yet."""
    prev = conn.execute(
        select(cron_runs.c.job_id, cron_runs.c.status, jobs.c.status.label("job_status"), jobs.c.finished_at)
        .select_from(cron_runs.outerjoin(jobs, jobs.c.request_id == cron_runs.c.job_id))
        .where(and_(cron_runs.c.cron_id == cron_id, cron_runs.c.status.in_([RUN_STARTING, RUN_STARTED])))
        .order_by(cron_runs.c.scheduled_for.desc())
        .limit(1)
    ).first()
    if prev is None:
        return None
    p = prev._mapping
    if p["status"] == RUN_STARTING:  # being submitted right now (or its submitter died)
        return str(p["job_id"])
    if p["job_status"] is not None and p["finished_at"] is None and p["job_status"] not in _DONE:
        return str(p["job_id"])
    return None


def _prune(conn: Connection, cron_id: str) -> None:
    cutoff = conn.execute(
        select(cron_runs.c.scheduled_for)
        .where(cron_runs.c.cron_id == cron_id)
        .order_by(cron_runs.c.scheduled_for.desc())
        .offset(KEEP_RUNS)
        .limit(1)
    ).scalar()
    if cutoff is not None:
        conn.execute(
            delete(cron_runs).where(
                and_(
                    cron_runs.c.cron_id == cron_id,
                    cron_runs.c.scheduled_for <= cutoff,
                    cron_runs.c.status != RUN_STARTING,
                )
            )
        )


def _skip(conn: Connection, cron_id: str, at: float, reason: str, now: float) -> None:
    _insert_run(
        conn,
        {
            "cron_id": cron_id,
            "scheduled_for": at,
            "job_id": None,
            "status": RUN_SKIPPED,
            "reason": reason,
            "created_at": now,
            "claimed_at": now,
        },
    )


def _missed_text(count: int) -> str:
    return (
        f"{MISSED_COUNT_CAP} or more runs"
        if count >= MISSED_COUNT_CAP
        else f"{count} run{'s' * (count != 1)}"
    )


def claim_tick(
    conn: Connection, cron_id: str, expected: float, now: float, grace_s: float, request_id: str
) -> TickOutcome:
    """Handle the due tick ``expected`` of one cron job (one transaction); see the module doc.

    Ticks missed beyond the latest one are recorded as one ``skipped`` row ("missed: server
    was down"); the latest runs once if it is at most ``grace_s`` late, else it is skipped too.
    """
    row = conn.execute(select(cron_jobs).where(cron_jobs.c.id == cron_id)).first()
    if row is None:
        return LOST
    m = row._mapping
    due = m["next_run_at"]
    if not m["enabled"] or due is None or due != expected or due > now:
        return LOST
    schedule = Schedule(m["cron_expression"], m["timezone"])
    count, latest = schedule.fires_between(due, now, MISSED_COUNT_CAP)
    if latest is None or latest < due:  # the schedule changed under a stale next_run_at
        count, latest = 1, due
    claimed = conn.execute(
        update(cron_jobs)
        .where(and_(cron_jobs.c.id == cron_id, cron_jobs.c.next_run_at == due))
        .values(next_run_at=schedule.next_after(now))
    )
    if claimed.rowcount != 1:
        return LOST

    def record_skip(at: float, reason: str) -> TickOutcome:
        _skip(conn, cron_id, at, reason, now)
        conn.execute(
            update(cron_jobs)
            .where(cron_jobs.c.id == cron_id)
            .values(last_run_status=RUN_SKIPPED, last_reason=reason)
        )
        _prune(conn, cron_id)
        return TickOutcome("skipped", reason=reason)

    if now - latest > grace_s:
        return record_skip(
            due,
            f"missed: server was down; {_missed_text(count)} from {iso(due)} to {iso(latest)} "
            f"not started (more than {grace_s:g} s late)",
        )
    if count > 1:
        _skip(
            conn,
            cron_id,
            due,
            f"missed: server was down; {_missed_text(count - 1)} from {iso(due)} not started, "
            f"the latest ({iso(latest)}) ran once instead",
            now,
        )
    if m["overlap_policy"] == "skip":
        going = _previous_going(conn, cron_id)
        if going is not None:
            return record_skip(latest, f"skipped: previous run still running (job {going})")

    run_id = _insert_run(
        conn,
        {
            "cron_id": cron_id,
            "scheduled_for": latest,
            "job_id": request_id,
            "status": RUN_STARTING,
            "reason": None,
            "created_at": now,
            "claimed_at": now,
        },
    )
    if run_id is None:
        return LOST
    conn.execute(
        update(cron_jobs)
        .where(cron_jobs.c.id == cron_id)
        .values(last_run_at=now, last_job_id=request_id, last_run_status=RUN_STARTING, last_reason=None)
    )
    _prune(conn, cron_id)
    return TickOutcome("claimed", Claim(run_id, cron_id, int(m["user_id"]), request_id, latest, job_body(m)))


def mark_started(
    conn: Connection, run_id: int, request_id: str, job_id: str | None = None, reason: str | None = None
) -> None:
    """The run's job exists now (``job_id``: another job the submission was answered with)."""
    job_id = job_id or request_id
    conn.execute(
        update(cron_runs)
        .where(and_(cron_runs.c.id == run_id, cron_runs.c.status == RUN_STARTING))
        .values(status=RUN_STARTED, job_id=job_id, reason=reason)
    )
    conn.execute(
        update(cron_jobs)
        .where(cron_jobs.c.last_job_id == request_id)
        .values(last_run_status=RUN_STARTED, last_job_id=job_id, last_reason=reason)
    )


def mark_failed(conn: Connection, run_id: int, request_id: str, reason: str) -> None:
    """The run's job could not be submitted; ``last_job_id`` goes back to the last real job."""
    row = conn.execute(select(cron_runs.c.cron_id).where(cron_runs.c.id == run_id)).first()
    conn.execute(
        update(cron_runs)
        .where(and_(cron_runs.c.id == run_id, cron_runs.c.status == RUN_STARTING))
        .values(status=RUN_FAILED, reason=reason)
    )
    if row is None:
        return
    previous = conn.execute(
        select(cron_runs.c.job_id)
        .where(and_(cron_runs.c.cron_id == row._mapping["cron_id"], cron_runs.c.status == RUN_STARTED))
        .order_by(cron_runs.c.scheduled_for.desc())
        .limit(1)
    ).scalar()
    conn.execute(
        update(cron_jobs)
        .where(cron_jobs.c.last_job_id == request_id)
        .values(last_run_status=RUN_FAILED, last_reason=reason, last_job_id=previous)
    )


def stale_runs(conn: Connection, cutoff: float, limit: int = 100) -> list[tuple[int, float]]:
    """Runs still ``starting`` since before ``cutoff``: their submitter probably died."""
    rows = conn.execute(
        select(cron_runs.c.id, cron_runs.c.claimed_at)
        .where(and_(cron_runs.c.status == RUN_STARTING, cron_runs.c.claimed_at < cutoff))
        .order_by(cron_runs.c.claimed_at)
        .limit(limit)
    ).all()
    return [(int(r[0]), float(r[1])) for r in rows]


def reclaim(conn: Connection, run_id: int, claimed_at: float, now: float, grace_s: float) -> Claim | None:
    """Take over a stale ``starting`` run: its Claim to submit again, or None if settled here."""
    taken = conn.execute(
        update(cron_runs)
        .where(
            and_(
                cron_runs.c.id == run_id,
                cron_runs.c.status == RUN_STARTING,
                cron_runs.c.claimed_at == claimed_at,
            )
        )
        .values(claimed_at=now)
    )
    if taken.rowcount != 1:  # another scheduler took it over first
        return None
    row = conn.execute(
        select(
            cron_runs.c.cron_id,
            cron_runs.c.job_id,
            cron_runs.c.scheduled_for,
            cron_jobs.c.user_id,
            cron_jobs.c.script,
            cron_jobs.c.name,
            cron_jobs.c.workspace_id,
            cron_jobs.c.persistent,
            cron_jobs.c.environment,
        )
        .join(cron_jobs, cron_jobs.c.id == cron_runs.c.cron_id)
        .where(cron_runs.c.id == run_id)
    ).one()
    m = row._mapping
    request_id = str(m["job_id"])
    if conn.execute(select(jobs.c.request_id).where(jobs.c.request_id == request_id)).first() is not None:
        mark_started(conn, run_id, request_id)  # submitted; only the bookkeeping was lost
        return None
    if now - m["scheduled_for"] > grace_s:
        mark_failed(
            conn,
            run_id,
            request_id,
            f"the server stopped before the job was submitted (more than {grace_s:g} s ago)",
        )
        return None
    return Claim(run_id, m["cron_id"], int(m["user_id"]), request_id, m["scheduled_for"], job_body(m))


def due_crons(conn: Connection, now: float, limit: int) -> list[tuple[str, float]]:
    """Enabled cron jobs whose next tick is at or before ``now``, most overdue first."""
    rows = conn.execute(
        select(cron_jobs.c.id, cron_jobs.c.next_run_at)
        .where(and_(cron_jobs.c.enabled.is_(True), cron_jobs.c.next_run_at <= now))
        .order_by(cron_jobs.c.next_run_at)
        .limit(limit)
    ).all()
    return [(str(r[0]), float(r[1])) for r in rows]
