"""Dispatching: two control planes on one SQLite file never claim a job twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from mags.core.ids import new_request_id
from mags.core.jobs import NewJob
from mags.core.schema import jobs
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import fetch, make_settings, running_control_plane


async def test_two_dispatchers_never_double_claim(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    a1, a2 = FakeAgentClient("agent-1"), FakeAgentClient("agent-2")
    async with running_control_plane(settings, [a1]) as cp1, running_control_plane(settings, [a2]) as cp2:
        user = await cp1.tokens.ensure_user("u")
        uid = user._mapping["id"]

        async def submit(i: int) -> str:
            rid = new_request_id()
            # half through each control plane; both dispatchers race for every job
            cp = cp1 if i % 2 else cp2
            await cp.controller.submit(uid, NewJob(request_id=rid, script=f"echo {i}"))
            cp2.dispatcher.wake()
            cp1.dispatcher.wake()
            return rid

        ids = await asyncio.gather(*(submit(i) for i in range(200)))

        async def all_done() -> None:
            while True:
                stmt = select(func.count()).select_from(jobs).where(jobs.c.status.not_in(["completed"]))
                left = (await fetch(cp1.db, stmt))[0][0]
                if left == 0:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_done(), 20)
        launched = [r.job_id for r in a1.created] + [r.job_id for r in a2.created]
        assert sorted(launched) == sorted(ids)  # each exactly once
        assert a1.created and a2.created  # both really competed
        assert cp1.dispatcher.claimed + cp2.dispatcher.claimed == 200
        rows = await fetch(cp1.db, select(jobs.c.agent_id, jobs.c.vm_id, jobs.c.log_count))
        assert all(r.log_count == 1 for r in rows)
        assert len({r.vm_id for r in rows}) == 200
        by_agent = {r.vm_id: r.agent_id for r in rows}
        assert all(by_agent[r.sandbox_id] == "agent-1" for r in a1.created)
