"""Alembic migrations: SQLite and PostgreSQL reach head, and head matches ``schema.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from scheduler.helpers import fetch
from sqlalchemy import select

from core.pg import postgres_server, skip_reason
from mags.core.db import Database, create_database
from mags.core.ids import Clock, new_request_id
from mags.core.jobs import JobStore, NewJob
from mags.core.migrate import current_revision, head_revision, run_migrations
from mags.core.notify import JobNotifier
from mags.core.schema import job_events, jobs, metadata
from mags.core.tokens import TokenStore
from mags.scheduler.applier import StateApplier
from mags.scheduler.changes import Change
from mags.scheduler.claim import claim_jobs


async def schema_diff(db: Database) -> list[Any]:
    def _diff(sync_conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)

    return await db.read(_diff)


async def test_sqlite_migrations(tmp_path: Path) -> None:
    db = create_database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        assert await current_revision(db) is None
        await run_migrations(db)
        await run_migrations(db)  # idempotent
        assert await current_revision(db) == head_revision()
        assert await schema_diff(db) == []
        def pragmas(conn: Any) -> list[Any]:
            names = ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            return [conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names]

        for values in (await db.read(pragmas), await db.write(pragmas), await db.read_heavy(pragmas)):
            assert values[:3] == ["wal", 1, 1]  # synchronous=1 is NORMAL
            assert values[3] >= 1000
    finally:
        await db.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


async def test_postgres_migrations_and_job_flow(pg_url: str) -> None:
    db = create_database(pg_url)
    try:
        await run_migrations(db)
        assert await current_revision(db) == head_revision()
        assert await schema_diff(db) == []

        clock = Clock()
        user = await TokenStore(db, clock).ensure_user("pg-user")
        store = JobStore(db, clock)
        ids = [new_request_id() for _ in range(40)]
        for rid in ids:
            await store.create(user._mapping["id"], NewJob(request_id=rid, script="echo", environment={"A": "1"}))

        # two claimers at once never get the same job (FOR UPDATE SKIP LOCKED)
        other = create_database(pg_url)
        try:
            got = await asyncio.gather(*(claim_jobs(d, "a", 7, clock) for d in [db, other] * 6))
        finally:
            await other.close()
        claimed = [r._mapping["request_id"] for rows in got for r in rows]
        assert len(claimed) == len(set(claimed)) == 40
        assert all(r._mapping["vm_id"].startswith("vm-") for rows in got for r in rows)

        applier = StateApplier(db, JobNotifier(), clock, max_log_lines=100)
        applier.start()
        rid = ids[0]
        await applier.apply(Change("started", rid, clock()))
        applier.submit(Change("log", rid, clock(), source="stdout", message="nul\x00byte"))
        await applier.apply(Change("exit", rid, clock(), exit_code=0, duration_ms=5))
        await applier.stop()
        row = await store.get(user._mapping["id"], rid)
        assert row._mapping["status"] == "completed" and row._mapping["exit_code"] == 0
        assert [r._mapping["message"] for r in await store.logs(rid)] == ["nul\ufffdbyte"]
        reasons = await fetch(db, select(job_events.c.reason).where(job_events.c.job_id == rid))
        assert len(reasons) == 4
        env = await fetch(db, select(jobs.c.environment).where(jobs.c.request_id == rid))
        assert env[0][0] == {"A": "1"}
        usage = await store.usage(user._mapping["id"], 30)
        assert usage["total_jobs"] == 40 and usage["completed"] == 1
    finally:
        await db.close()
