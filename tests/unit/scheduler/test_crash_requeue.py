"""A crash never loses an accepted job: each point a server can die at, replayed deterministically.

The database is left exactly as a SIGKILL at that point would leave it (the control plane
stopped without any shutdown bookkeeping), then a new control plane starts on it.  A job whose
script never ran must run after the restart, once; one whose script had started must not run
again and ends with "server restarted".
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update

from mags.agent.models import SandboxInfo, SandboxRequest
from mags.agent.spawns import LOST_REASON
from mags.core.ids import Clock, new_request_id
from mags.core.jobs import NewJob
from mags.core.schema import jobs
from mags.errors import Conflict
from mags.scheduler.changes import REQUEUE_REASON, SPAWNED_REASON, USER_STOP_REASON, Change
from mags.scheduler.claim import claim_jobs
from mags.scheduler.reconcile import end_orphans
from mags.server import ControlPlane, build_control_plane
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import api_client, execute, make_settings, running_control_plane, user_token


class RestartedAgent(FakeAgentClient):
    """A fake agent as it is after a restart: it lists the spawn records of its previous run."""

    def __init__(self, records: dict[str, tuple[str, float]] | None = None) -> None:
        super().__init__("local")
        self.records = dict(records or {})  # sandbox id -> (job id, spawned at)

    async def list_sandboxes(self) -> list[SandboxInfo]:
        lost = [
            SandboxInfo(sandbox_id=sid, job_id=jid, state="stopped", runtime=self.runtime, created_at=ts,
                        reason=LOST_REASON)
            for sid, (jid, ts) in self.records.items() if sid not in self.sandboxes
        ]  # fmt: skip
        return [*await super().list_sandboxes(), *lost]

    async def create_sandbox(self, req: SandboxRequest) -> SandboxInfo:
        if req.sandbox_id in self.records and req.resume is None:  # as AgentService.create
            raise Conflict(f"sandbox {req.sandbox_id} already ran its script before the agent restarted")
        return await super().create_sandbox(req)


async def crash(cp: ControlPlane) -> None:
    """Stop a control plane the way kill -9 would: no shutdown bookkeeping."""
    await cp.housekeeper.stop()
    if cp.cron is not None:
        await cp.cron.stop()
    if cp.janitor is not None:
        await cp.janitor.stop()
    await cp.dispatcher.stop()
    for ingest in cp.ingests:
        await ingest.stop()
    await cp.applier.stop()
    await cp.db.close()


async def started_plane(tmp_path: Path, agent: FakeAgentClient) -> tuple[ControlPlane, int]:
    cp = await build_control_plane(make_settings(tmp_path), [agent])
    uid = int((await cp.tokens.ensure_user("u"))._mapping["id"])
    return cp, uid


async def stopped_plane(tmp_path: Path, agent: FakeAgentClient) -> tuple[ControlPlane, int]:
    """A control plane whose dispatcher does not run: jobs stay where the test puts them."""
    cp, uid = await started_plane(tmp_path, agent)
    await cp.dispatcher.stop()
    return cp, uid


async def submit(cp: ControlPlane, uid: int, script: str, **kw: Any) -> str:
    rid = new_request_id()
    await cp.controller.submit(uid, NewJob(request_id=rid, script=script, **kw))
    return rid


async def add_job(cp: ControlPlane, uid: int, script: str, **kw: Any) -> str:
    rid = new_request_id()
    await cp.jobs.create(uid, NewJob(request_id=rid, script=script, **kw))
    return rid


async def wait_status(cp: ControlPlane, uid: int, rid: str, *statuses: str, timeout: float = 10) -> dict:
    async def poll() -> dict:
        while True:
            row = await cp.jobs.get(uid, rid)
            if row._mapping["status"] in statuses:
                return dict(row._mapping)
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)


async def history(cp: ControlPlane, rid: str) -> list[tuple[str, str, str]]:
    return [
        (e._mapping["to_status"], e._mapping["vm_status"], e._mapping["reason"])
        for e in await cp.jobs.history(rid)
    ]


def launches(agent: FakeAgentClient, rid: str) -> int:
    return sum(1 for r in agent.created if r.job_id == rid)


async def test_claimed_but_never_launched_is_requeued_and_runs_once(tmp_path: Path) -> None:
    agent = FakeAgentClient("local")
    cp, uid = await stopped_plane(tmp_path, agent)
    first = await add_job(cp, uid, "echo first")
    second = await add_job(cp, uid, "echo second")
    queued = await add_job(cp, uid, "echo queued")
    # the claim committed, the server died before the launch tasks ran
    claimed = await claim_jobs(cp.db, "local", 2, cp.clock)
    assert [r._mapping["request_id"] for r in claimed] == [first, second]
    await crash(cp)

    async with running_control_plane(make_settings(tmp_path), [agent]) as cp2:
        for rid in (first, second, queued):
            done = await wait_status(cp2, uid, rid, "completed", "error")
            assert done["status"] == "completed" and done["exit_code"] == 0, done
            assert launches(agent, rid) == 1
        h = await history(cp2, first)
        assert ("pending", "pending", REQUEUE_REASON) in h
        assert [s for s, _, _ in h].count("running") == 1
        assert (await history(cp2, queued))[1][2].startswith("assigned to agent")  # never requeued
        logs = [r._mapping["message"] for r in await cp2.jobs.logs(first)]
        assert logs == ["first"]


async def test_requeued_job_keeps_its_place_in_line(tmp_path: Path) -> None:
    agent = FakeAgentClient("local")
    cp, uid = await stopped_plane(tmp_path, agent)
    older = await add_job(cp, uid, "echo older")
    await claim_jobs(cp.db, "local", 1, cp.clock)
    newer = await add_job(cp, uid, "echo newer")
    await crash(cp)
    async with running_control_plane(make_settings(tmp_path), [agent]) as cp2:
        await wait_status(cp2, uid, newer, "completed")
        await wait_status(cp2, uid, older, "completed")
        assert [r.job_id for r in agent.created] == [older, newer]


async def test_spawned_but_start_never_reported_is_not_run_again(tmp_path: Path) -> None:
    """The agent spawned the script, the server died before the `started` event was committed."""
    agent = FakeAgentClient("local")
    cp, uid = await stopped_plane(tmp_path, agent)
    rid = await add_job(cp, uid, "echo once")
    [row] = await claim_jobs(cp.db, "local", 1, cp.clock)
    spawned_at = time.time()
    await crash(cp)

    restarted = RestartedAgent({row._mapping["vm_id"]: (rid, spawned_at)})
    async with running_control_plane(make_settings(tmp_path), [restarted]) as cp2:
        done = await wait_status(cp2, uid, rid, "error")
        assert "server restarted" in done["error_message"] and done["vm_status"] == "stopped"
        assert abs(done["started_at"] - spawned_at) < 1e-3  # the history says when it ran
        h = await history(cp2, rid)
        assert ("running", "running", SPAWNED_REASON) in h
        assert h[-1][0] == "error"
        await asyncio.sleep(0.3)  # a dispatcher sweep would have launched it again by now
        assert launches(restarted, rid) == 0


async def test_running_when_the_server_died_ends_with_server_restarted(tmp_path: Path) -> None:
    agent = FakeAgentClient("local")
    cp, uid = await started_plane(tmp_path, agent)
    rid = await submit(cp, uid, "sleep infinity")
    await wait_status(cp, uid, rid, "running")
    await crash(cp)
    # the sandbox (and its exit) died with the server
    agent.forget(next(r.sandbox_id for r in agent.created if r.job_id == rid))
    async with running_control_plane(make_settings(tmp_path), [agent]) as cp2:
        done = await wait_status(cp2, uid, rid, "error")
        assert done["error_message"] == "server restarted"
        assert launches(agent, rid) == 1


async def test_finished_script_keeps_its_result(tmp_path: Path) -> None:
    """The exit was committed, the sandbox's stop was not: the job stays completed."""
    agent = FakeAgentClient("local")
    cp, uid = await started_plane(tmp_path, agent)
    rid = await submit(cp, uid, "echo done")
    await wait_status(cp, uid, rid, "completed")
    await cp.applier.drain()
    await execute(cp.db, update(jobs).where(jobs.c.request_id == rid).values(vm_status="running"))
    await crash(cp)
    async with running_control_plane(make_settings(tmp_path), [RestartedAgent()]) as cp2:
        m = (await cp2.jobs.get(uid, rid))._mapping
        assert m["status"] == "completed" and m["exit_code"] == 0 and m["vm_status"] == "stopped"
        assert (await history(cp2, rid))[-1] == ("completed", "stopped", "server restarted")


async def test_user_stop_in_flight_is_not_undone(tmp_path: Path) -> None:
    """A job the user stopped while it was being claimed is not brought back."""
    agent = FakeAgentClient("local")
    cp, uid = await stopped_plane(tmp_path, agent)
    rid = await add_job(cp, uid, "echo no")
    await claim_jobs(cp.db, "local", 1, cp.clock)
    await cp.applier.apply(Change("stop_requested", rid, cp.clock(), reason=USER_STOP_REASON))
    await crash(cp)
    async with running_control_plane(make_settings(tmp_path), [agent]) as cp2:
        m = await wait_status(cp2, uid, rid, "error")
        assert m["error_message"] == USER_STOP_REASON
        assert launches(agent, rid) == 0


async def test_graceful_shutdown_keeps_pending_and_claimed_jobs(tmp_path: Path) -> None:
    """SIGTERM: nothing that had not started ends; all of it runs after the next start."""

    class SlowAgent(FakeAgentClient):
        async def create_sandbox(self, req: SandboxRequest) -> SandboxInfo:
            if "slow" in req.script:
                await asyncio.Event().wait()  # the launch never returns before the shutdown
            return await super().create_sandbox(req)

    slow = SlowAgent("local")
    cp, uid = await started_plane(tmp_path, slow)
    in_flight = await submit(cp, uid, "echo slow")
    running = await submit(cp, uid, "sleep infinity")
    await wait_status(cp, uid, running, "running")
    await cp.dispatcher.stop(timeout=0.05)  # the in-flight launch is cut short
    queued = await add_job(cp, uid, "echo queued")
    await cp.begin_shutdown()
    await slow.stop_all("server shutting down")  # what the real agent's close does
    await asyncio.sleep(0.05)
    await cp.close()

    check = await build_control_plane(make_settings(tmp_path), [], start=False)
    try:
        for rid in (in_flight, queued):
            m = (await check.jobs.get(uid, rid))._mapping
            assert m["status"] == "pending" and not m["error_message"], dict(m)
        stamped = (await check.jobs.get_internal(in_flight))._mapping["stop_reason"]
        assert not stamped  # not marked as stopped by the shutdown
        r = (await check.jobs.get(uid, running))._mapping
        assert r["status"] == "error" and r["error_message"] == "server shutting down"
    finally:
        await check.db.close()

    agent = FakeAgentClient("local")
    async with running_control_plane(make_settings(tmp_path), [agent]) as cp2:
        for rid in (in_flight, queued):
            assert (await wait_status(cp2, uid, rid, "completed", "error"))["status"] == "completed"
        assert ("pending", "pending", REQUEUE_REASON) in await history(cp2, in_flight)


async def test_job_of_a_dead_agent_that_never_started_is_requeued(tmp_path: Path) -> None:
    agent = FakeAgentClient("local")
    cp, uid = await stopped_plane(tmp_path, agent)
    rid = await add_job(cp, uid, "echo moved")
    await claim_jobs(cp.db, "gone-agent", 1, cp.clock)  # claimed for an agent that then died
    ended = await end_orphans(cp.db, cp.registry, cp.applier, cp.clock, "agent lost: no heartbeat for 30 s")
    assert ended == 0
    m = (await cp.jobs.get_internal(rid))._mapping
    assert (
        m["status"] == "pending"
        and m["vm_status"] == "pending"
        and m["agent_id"] is None
        and m["vm_id"] is None
    )
    assert (await history(cp, rid))[-1][2] == "requeued before it started: agent lost: no heartbeat for 30 s"
    cp.dispatcher.start()
    assert (await wait_status(cp, uid, rid, "completed"))["exit_code"] == 0
    await cp.close()


async def test_vm_being_replaced_is_not_brought_back(tmp_path: Path) -> None:
    """The server died between storing a job on a workspace and stopping the VM it replaces."""
    agent = FakeAgentClient("local")
    cp, uid = await started_plane(tmp_path, agent)
    old = await submit(cp, uid, "echo up", persistent=True, workspace_id="w")
    await wait_status(cp, uid, old, "completed")
    await cp.dispatcher.stop()
    new = await add_job(cp, uid, "echo next", workspace_id="w")  # admission's insert, then the crash
    await crash(cp)
    vm = next(r.sandbox_id for r in agent.created if r.job_id == old)
    agent._release(agent.sandboxes[vm])  # a restarted agent holds no workspace
    agent.forget(vm)
    async with running_control_plane(make_settings(tmp_path), [agent]) as cp2:
        assert (await wait_status(cp2, uid, new, "completed", "error"))["status"] == "completed"
        m = (await cp2.jobs.get(uid, old))._mapping
        assert m["status"] == "completed" and m["vm_status"] == "stopped"
        assert (await history(cp2, old))[-1][2] == f"replaced by job {new}"
        assert not any(r.resume for r in agent.created if r.job_id == old)  # not re-provisioned


class StillClock(Clock):
    """A clock that moves only when told to (cron ticks are due at minute boundaries)."""

    def __init__(self, now: float) -> None:
        super().__init__()
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_cron_run_claimed_at_the_crash_runs_after_the_restart(tmp_path: Path) -> None:
    """A cron tick's job counts as accepted too: its run row says started, the job runs once."""
    first = datetime(2030, 1, 1, 0, 1, tzinfo=UTC).timestamp()  # a minute boundary
    clock = StillClock(first - 30)
    agent = FakeAgentClient("local")
    settings = make_settings(tmp_path)
    cp = await build_control_plane(settings, [agent], clock=clock)
    assert cp.cron is not None
    await cp.cron.stop()  # ticked by hand
    await cp.dispatcher.stop()
    async with api_client(cp, await user_token(cp, "alice")) as alice:
        body = {"name": "nightly", "cron_expression": "* * * * *", "script": "echo from cron"}
        assert (await alice.post("/mags-cron", json=body)).status_code == 200
        clock.now = first + 0.4
        assert (await cp.cron.tick()).started == 1
        job_id = (await alice.get("/mags-cron/nightly")).json()["last_job_id"]
    uid = int((await cp.tokens.get_user("alice"))._mapping["id"])  # type: ignore[union-attr]
    assert [r._mapping["request_id"] for r in await claim_jobs(cp.db, "local", 5, clock)] == [job_id]
    await crash(cp)

    async with running_control_plane(settings, [agent], clock=clock) as cp2:
        done = await wait_status(cp2, uid, job_id, "completed", "error")
        assert done["status"] == "completed" and launches(agent, job_id) == 1
        assert ("pending", "pending", REQUEUE_REASON) in await history(cp2, job_id)
        async with api_client(cp2, await user_token(cp2, "alice")) as alice:
            cron = (await alice.get("/mags-cron/nightly")).json()
        assert cron["last_job_id"] == job_id and cron["last_status"] == "completed"
        [run] = cron["runs"]
        assert (run["status"], run["job_id"], run["job_status"]) == ("started", job_id, "completed")
