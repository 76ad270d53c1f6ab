"""Dispatching: two control planes on one SQLite file never claim a job twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from mags.core.ids import new_request_id
from mags.core.jobs import NewJob
from mags.core.schema import jobs
from mags.server import build_control_plane
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import fetch, make_settings


async def test_two_dispatchers_never_double_claim(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    a1, a2 = FakeAgentClient("agent-1"), FakeAgentClient("agent-2")
    cp1 = await build_control_plane(settings, [a1], sweep_interval=60)
    cp2 = await build_control_plane(settings, [a2], migrate=False, sweep_interval=60)
    try:
        uid = (await cp1.tokens.ensure_user("u"))._mapping["id"]
        ids = [new_request_id() for _ in range(200)]
        for i, rid in enumerate(ids):  # queued without waking anyone
            await (cp1 if i % 2 else cp2).jobs.create(uid, NewJob(request_id=rid, script=f"echo {i}"))
        # one job per claim: up to 400 racing transactions from two database handles (two
        # writer threads contending for SQLite's file lock, as two processes would).  SQLite's
        # busy handler is not fair, so one side may win most claims; what matters is that
        # every job is launched exactly once.
        cp1.dispatcher.claim_batch = cp2.dispatcher.claim_batch = 1
        cp1.dispatcher.wake()
        cp2.dispatcher.wake()

        async def all_done() -> None:
            stmt = select(func.count()).select_from(jobs).where(jobs.c.status != "completed")
            while (await fetch(cp1.db, stmt))[0][0]:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_done(), 30)
        launched = [r.job_id for r in a1.created] + [r.job_id for r in a2.created]
        assert sorted(launched) == sorted(ids)  # each exactly once
        assert cp1.dispatcher.claimed + cp2.dispatcher.claimed == 200
        rows = await fetch(cp1.db, select(jobs.c.agent_id, jobs.c.vm_id, jobs.c.log_count))
        assert all(r.log_count == 1 for r in rows)
        assert len({r.vm_id for r in rows}) == 200
        by_vm = {r.vm_id: r.agent_id for r in rows}
        assert all(by_vm[r.sandbox_id] == "agent-1" for r in a1.created)
        assert all(by_vm[r.sandbox_id] == "agent-2" for r in a2.created)
    finally:
        await cp1.close()
        await cp2.close()
