"""Restart reconciliation, shutdown, and event-stream reconnection."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import update

from mags.core.ids import new_request_id
from mags.core.jobs import NewJob
from mags.core.schema import jobs
from mags.server import ControlPlane, build_control_plane
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import execute, make_settings, running_control_plane


async def wait_status(cp: ControlPlane, uid: int, rid: str, *statuses: str, timeout: float = 5) -> dict:
    async def poll() -> dict:
        while True:
            row = await cp.jobs.get(uid, rid)
            if row._mapping["status"] in statuses:
                return dict(row._mapping)
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)


async def submit(cp: ControlPlane, uid: int, script: str, **kw: object) -> str:
    rid = new_request_id()
    await cp.controller.submit(uid, NewJob(request_id=rid, script=script, **kw))  # type: ignore[arg-type]
    return rid


async def crash(cp: ControlPlane) -> None:
    """Stop a control plane the way kill -9 would: no shutdown bookkeeping."""
    await cp.housekeeper.stop()
    await cp.dispatcher.stop()
    for ingest in cp.ingests:
        await ingest.stop()
    await cp.applier.stop()
    await cp.db.close()


async def test_restart_reconciliation(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    agent = FakeAgentClient("local")
    cp = await build_control_plane(settings, [agent])
    uid = (await cp.tokens.ensure_user("u"))._mapping["id"]
    gone = await submit(cp, uid, "sleep infinity")
    kept = await submit(cp, uid, "sleep infinity", persistent=True, workspace_id="w")
    await wait_status(cp, uid, gone, "running")
    await wait_status(cp, uid, kept, "running")
    queued_rid = new_request_id()
    await cp.jobs.create(uid, NewJob(request_id=queued_rid, script="echo later"))
    ghost = await submit(cp, uid, "sleep infinity")
    await wait_status(cp, uid, ghost, "running")
    await crash(cp)

    # the agent lost one sandbox; another job claims to run on an agent nobody knows
    gone_vm = next(r.sandbox_id for r in agent.created if r.job_id == gone)
    agent.forget(gone_vm)
    ghost_vm = next(r.sandbox_id for r in agent.created if r.job_id == ghost)
    agent.forget(ghost_vm)
    db_settings = settings
    async with running_control_plane(db_settings, [agent]) as cp2:
        await execute(cp2.db, update(jobs).where(jobs.c.request_id == ghost).values(agent_id="ghost-agent"))
        # the ghost row is picked up by the periodic orphan sweep; run it now
        from mags.scheduler.reconcile import end_orphans

        await end_orphans(cp2.db, cp2.registry, cp2.applier, cp2.clock, "server restarted")

        lost = await wait_status(cp2, uid, gone, "error")
        assert lost["error_message"] == "server restarted" and lost["vm_status"] == "stopped"
        history = [e._mapping["reason"] for e in await cp2.jobs.history(gone)]
        assert history[-1] == "server restarted"
        assert (await cp2.jobs.get(uid, kept))._mapping["status"] == "running"  # its sandbox survived
        assert (await cp2.jobs.get(uid, ghost))._mapping["error_message"] == "server restarted"
        # a job queued but never claimed simply runs after the restart
        assert (await wait_status(cp2, uid, queued_rid, "completed"))["exit_code"] == 0


async def test_orphaned_sandbox_is_stopped_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    agent = FakeAgentClient("local")
    async with running_control_plane(settings, [agent]) as cp:
        uid = (await cp.tokens.ensure_user("u"))._mapping["id"]
        rid = await submit(cp, uid, "sleep infinity")
        await wait_status(cp, uid, rid, "running")
        vm = agent.created[0].sandbox_id
        # the database believes it is over
        await execute(cp.db, update(jobs).where(jobs.c.request_id == rid).values(status="error", vm_status="stopped"))
    # close() asked nothing of the agent for that job: the sandbox is still there
    agent.sandboxes[vm].state = "running"
    async with running_control_plane(settings, [agent]):
        assert agent.sandboxes[vm].state == "stopped"
        assert agent.stops[-1][1].reason == "orphaned sandbox"


async def test_shutdown_ends_running_jobs_with_reason(tmp_path: Path) -> None:
    agent = FakeAgentClient("local")
    cp = await build_control_plane(make_settings(tmp_path), [agent])
    uid = (await cp.tokens.ensure_user("u"))._mapping["id"]
    script = await submit(cp, uid, "sleep infinity")
    pers = await submit(cp, uid, "echo up", persistent=True, workspace_id="p")
    await wait_status(cp, uid, script, "running")
    await wait_status(cp, uid, pers, "completed")
    await cp.dispatcher.stop()
    queued = await submit(cp, uid, "echo queued")

    await cp.begin_shutdown()
    await agent.stop_all("agent stopping")  # what the real agent's stop() does
    await asyncio.sleep(0.05)
    await cp.close()

    from mags.core.db import create_database

    cp2 = await build_control_plane(make_settings(tmp_path), [], start=False)
    try:
        s = (await cp2.jobs.get(uid, script))._mapping
        assert s["status"] == "error" and s["error_message"] == "server shutting down" and s["vm_status"] == "stopped"
        assert s["exit_code"] == 137  # the agent still reported the script's end
        p = (await cp2.jobs.get(uid, pers))._mapping
        assert p["status"] == "completed" and p["vm_status"] == "stopped" and p["exit_code"] == 0
        assert [e._mapping["reason"] for e in await cp2.jobs.history(pers)][-1] == "agent stopping"
        assert (await cp2.jobs.get(uid, queued))._mapping["status"] == "pending"
    finally:
        await cp2.db.close()
    assert create_database  # imported for symmetry with other tests


async def test_shutdown_without_agent_events(tmp_path: Path) -> None:
    agent = FakeAgentClient("local")
    cp = await build_control_plane(make_settings(tmp_path), [agent])
    uid = (await cp.tokens.ensure_user("u"))._mapping["id"]
    rid = await submit(cp, uid, "sleep infinity")
    await wait_status(cp, uid, rid, "running")
    await cp.close()  # the agent never reports anything: the final sweep ends the job
    cp2 = await build_control_plane(make_settings(tmp_path), [], start=False)
    try:
        m = (await cp2.jobs.get(uid, rid))._mapping
        assert m["status"] == "error" and m["error_message"] == "server shutting down"
        history = [(e._mapping["to_status"], e._mapping["reason"]) for e in await cp2.jobs.history(rid)]
        assert history[-1] == ("error", "server shutting down")
    finally:
        await cp2.db.close()


async def test_ingest_reconnects_and_resumes(tmp_path: Path) -> None:
    agent = FakeAgentClient("local")
    async with running_control_plane(make_settings(tmp_path), [agent]) as cp:
        uid = (await cp.tokens.ensure_user("u"))._mapping["id"]
        rid = await submit(cp, uid, "echo a; sleep 0.3; echo b")
        await wait_status(cp, uid, rid, "running")
        await asyncio.sleep(0.05)
        agent.break_stream()
        done = await wait_status(cp, uid, rid, "completed")
        assert done["exit_code"] == 0
        assert [r._mapping["message"] for r in await cp.jobs.logs(rid)] == ["a", "b"]
        ingest = cp.ingests[0]
        assert ingest.connects >= 2
        assert agent.stream_calls[0] == 0 and agent.stream_calls[1] > 0  # resumed, not replayed


async def test_ingest_stops_once_its_agent_client_is_closed(tmp_path: Path) -> None:
    """Shutting down closes the agent client first: the ingest ends instead of retrying."""
    agent = FakeAgentClient("local")
    async with running_control_plane(make_settings(tmp_path), [agent]) as cp:
        ingest = cp.ingests[0]
        await asyncio.sleep(0.05)
        assert ingest._task is not None and not ingest._task.done()
        await agent.close()
        agent.break_stream()
        await asyncio.wait_for(asyncio.shield(ingest._task), 5)
        calls = len(agent.stream_calls)
        await asyncio.sleep(0.3)
        assert len(agent.stream_calls) == calls == 1  # no reconnect attempts


async def test_restart_with_new_agent_id_on_same_url(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    old = FakeAgentClient("agent-old")
    cp = await build_control_plane(settings, [old], agent_urls={"agent-old": "unix:///run/agent.sock"})
    uid = (await cp.tokens.ensure_user("u"))._mapping["id"]
    rid = await submit(cp, uid, "sleep infinity")
    await wait_status(cp, uid, rid, "running")
    await crash(cp)
    new = FakeAgentClient("agent-new")
    async with running_control_plane(settings, [new], agent_urls={"agent-new": "unix:///run/agent.sock"}) as cp2:
        m = (await cp2.jobs.get(uid, rid))._mapping
        assert m["status"] == "error" and m["error_message"] == "server restarted"
        assert m["vm_status"] == "stopped"
