"""Two schedulers on one SQLite database (as two servers would run): one job per tick, always."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest
from core.pg import postgres_server, skip_reason
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import api_client, fetch, user_token
from sqlalchemy import select

from cron.conftest import START, FakeClock, create, manual_control_plane
from mags.config import Settings
from mags.core.cron import CronStore, NewCron
from mags.core.db import create_database
from mags.core.ids import new_request_id
from mags.core.migrate import run_migrations
from mags.core.schema import cron_runs, jobs
from mags.core.tokens import TokenStore
from mags.scheduler.cron_claim import claim_tick

TICKS = 50
CRONS = 3
FIRST = START + 30


async def test_two_schedulers_race_for_every_tick(settings: Settings, clock: FakeClock) -> None:
    # two control planes, each with its own Database (own connections and writer thread)
    a = await manual_control_plane(settings, [FakeAgentClient("agent-a")], clock)
    b = await manual_control_plane(settings, [FakeAgentClient("agent-b")], clock)
    planes = [a, b]
    try:
        assert a.db is not b.db and a.cron is not None and b.cron is not None
        async with api_client(a, await user_token(a, "alice")) as alice:
            for i in range(CRONS):
                # `allow`: a run still going must not turn the next tick into a skip here
                await create(alice, name=f"c{i}", overlap_policy="allow", script=f"echo {i}")
        started = Counter[str]()
        for tick in range(TICKS):
            clock.now = FIRST + 60 * tick + 0.25
            reports = await asyncio.gather(a.cron.tick(), b.cron.tick(), a.cron.tick(), b.cron.tick())
            for name, report in zip("abab", reports, strict=True):
                started[name] += report.started
                assert report.failed == 0 and report.skipped == 0 and report.recovered == 0
        assert started["a"] + started["b"] == TICKS * CRONS

        runs = await fetch(
            a.db,
            select(cron_runs.c.cron_id, cron_runs.c.scheduled_for, cron_runs.c.status, cron_runs.c.job_id),
        )
        assert len(runs) == TICKS * CRONS
        assert {r.status for r in runs} == {"started"}
        per_cron = Counter(r.cron_id for r in runs)
        assert sorted(per_cron.values()) == [TICKS] * CRONS
        for cron_id in per_cron:
            times = sorted(r.scheduled_for for r in runs if r.cron_id == cron_id)
            assert times == [FIRST + 60 * k for k in range(TICKS)]  # every tick once, none skipped
        job_ids = {r.job_id for r in runs}
        stored = {r.request_id for r in await fetch(a.db, select(jobs.c.request_id))}
        assert stored == job_ids and len(job_ids) == TICKS * CRONS

        # a restarted server does not run the last tick again
        await b.close()
        planes.remove(b)
        c = await manual_control_plane(settings, [FakeAgentClient("agent-c")], clock)
        planes.append(c)
        assert c.cron is not None
        assert (await c.cron.tick()).started == 0
        clock.now += 60
        assert (await c.cron.tick()).started == CRONS
    finally:
        for plane in planes:
            await plane.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


async def test_claims_race_on_postgres(pg_url: str) -> None:
    """The same claim on PostgreSQL (row locks instead of one writer): one winner per tick."""
    dbs = [create_database(pg_url), create_database(pg_url)]
    try:
        await run_migrations(dbs[0])
        clock = FakeClock()
        user = await TokenStore(dbs[0], clock).ensure_user("pg-cron")
        cron = NewCron(name="race", cron_expression="* * * * *", script="echo", overlap_policy="allow")
        await CronStore(dbs[0], clock).create(user._mapping["id"], cron, FIRST)
        for tick in range(20):
            due = FIRST + 60 * tick
            outcomes = await asyncio.gather(
                *(db.write(claim_tick, cron.id, due, due + 1, 300.0, new_request_id()) for db in dbs * 4)
            )
            assert sorted(o.kind for o in outcomes) == ["claimed"] + ["lost"] * 7
        runs = await fetch(dbs[0], select(cron_runs.c.scheduled_for))
        assert sorted(r.scheduled_for for r in runs) == [FIRST + 60 * k for k in range(20)]
    finally:
        for db in dbs:
            await db.close()
