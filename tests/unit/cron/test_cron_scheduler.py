"""The cron loop on a fake clock: runs as jobs, history, grace catch-up, overlap, recovery."""

from __future__ import annotations

import asyncio

import httpx
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import api_client, fetch, user_token
from sqlalchemy import select

from cron.conftest import START, FakeClock, create, manual_control_plane, ts, uid, wait_job
from mags.config import Settings
from mags.core.ids import new_request_id
from mags.core.schema import cron_runs, jobs
from mags.scheduler.cron_claim import claim_tick
from mags.server import ControlPlane

MINUTE = 60.0
FIRST = START + 30  # the first minute boundary after START


async def get(client: httpx.AsyncClient, ref: str) -> dict:
    r = await client.get(f"/mags-cron/{ref}")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_due_tick_runs_as_a_normal_job(
    cp: ControlPlane, clock: FakeClock, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    cron = await create(
        alice, name="hello", script="echo hello from cron", workspace_id="ws", environment={"GREETING": "hi"}
    )
    assert ts(cron["next_run_at"]) == FIRST
    assert (await cp.cron.tick()).started == 0  # not due yet
    clock.advance(29.5)
    assert (await cp.cron.tick()).started == 0

    clock.now = FIRST + 0.4
    report = await cp.cron.tick()
    assert report.started == 1 and report.skipped == 0
    got = await get(alice, "hello")
    job_id = got["last_job_id"]
    assert ts(got["last_run_at"]) == FIRST + 0.4 and ts(got["next_run_at"]) == FIRST + MINUTE
    job = await wait_job(cp, await uid(cp), job_id)
    assert job["status"] == "completed" and job["exit_code"] == 0
    assert job["name"] == "hello" and job["workspace_id"] == "ws"
    req = agent.created[-1]
    assert (
        req.job_id == job_id
        and req.script == "echo hello from cron"
        and req.environment == {"GREETING": "hi"}
    )
    assert req.workspace is not None and req.workspace.mode == "local"
    logs = (await alice.get(f"/mags-jobs/{job_id}/logs")).json()["logs"]
    assert [line["message"] for line in logs] == ["hello from cron"]

    got = await get(alice, cron["id"])
    assert got["last_status"] == "completed" and got["last_exit_code"] == 0
    assert got["runs"] == [
        {
            "scheduled_for": "2030-01-01T00:01:00.000Z",
            "status": "started",
            "reason": None,
            "job_id": job_id,
            "job_status": "completed",
            "exit_code": 0,
            "created_at": "2030-01-01T00:01:00.400Z",
        }
    ]
    # the same tick never runs twice
    assert (await cp.cron.tick()).started == 0
    clock.advance(MINUTE)
    assert (await cp.cron.tick()).started == 1
    assert len((await get(alice, "hello"))["runs"]) == 2


async def test_missed_ticks_within_grace_run_once(
    settings: Settings, clock: FakeClock, agent: FakeAgentClient
) -> None:
    cp = await manual_control_plane(settings, [agent], clock)
    token = await user_token(cp, "alice")
    async with api_client(cp, token) as alice:
        await create(alice, name="every-minute")
    await cp.close()  # the server goes down for ~3.5 minutes (grace: 300 s)

    clock.now = FIRST + 3 * MINUTE + 20
    cp = await manual_control_plane(settings, [agent], clock)
    try:
        report = await cp.cron.tick()
        assert report.started == 1 and report.skipped == 0
        assert (await cp.cron.tick()).started == 0  # once, not once per missed tick
        async with api_client(cp, token) as alice:
            got = await get(alice, "every-minute")
        assert ts(got["next_run_at"]) == FIRST + 4 * MINUTE
        started, missed = got["runs"]
        assert started["status"] == "started" and ts(started["scheduled_for"]) == FIRST + 3 * MINUTE
        assert missed["status"] == "skipped" and ts(missed["scheduled_for"]) == FIRST
        assert missed["reason"].startswith("missed: server was down; 3 runs from 2030-01-01T00:01:00.000Z")
        assert len(await fetch(cp.db, select(jobs.c.request_id))) == 1
    finally:
        await cp.close()


async def test_missed_ticks_beyond_grace_do_not_run(
    cp: ControlPlane, clock: FakeClock, alice: httpx.AsyncClient, settings: Settings
) -> None:
    settings.cron_grace_s = 120
    await create(alice, name="hourly", cron_expression="0 * * * *")
    clock.now = START + 3 * 3600 + 200  # the 03:00 tick is 200 s late
    report = await cp.cron.tick()
    assert report.started == 0 and report.skipped == 1
    got = await get(alice, "hourly")
    assert got["last_status"] == "skipped" and got["last_job_id"] is None
    assert ts(got["next_run_at"]) == START - 30 + 4 * 3600
    [run] = got["runs"]
    assert run["status"] == "skipped" and run["job_id"] is None
    assert "3 runs from 2030-01-01T01:00:00.000Z to 2030-01-01T03:00:00.000Z not started" in run["reason"]
    assert "more than 120 s late" in run["reason"]
    assert await fetch(cp.db, select(jobs.c.request_id)) == []


async def test_overlap_skip_and_allow(cp: ControlPlane, clock: FakeClock, alice: httpx.AsyncClient) -> None:
    await create(alice, name="slow", script="sleep infinity")
    await create(alice, name="parallel", script="sleep infinity", overlap_policy="allow")
    clock.now = FIRST
    assert (await cp.cron.tick()).started == 2
    user = await uid(cp)
    first = (await get(alice, "slow"))["last_job_id"]
    await wait_job(cp, user, first, "running")

    clock.advance(MINUTE)
    report = await cp.cron.tick()
    assert report.started == 1 and report.skipped == 1
    slow = await get(alice, "slow")
    assert slow["last_status"] == "skipped" and slow["last_job_id"] == first
    assert slow["runs"][0]["status"] == "skipped"
    assert slow["runs"][0]["reason"] == f"skipped: previous run still running (job {first})"
    assert slow["runs"][1]["job_status"] == "running"
    assert [r["status"] for r in (await get(alice, "parallel"))["runs"]] == ["started", "started"]

    # once the previous run is over, the next tick runs again
    assert (await alice.post(f"/mags-jobs/{first}/stop")).status_code == 200
    clock.advance(MINUTE)
    report = await cp.cron.tick()
    assert report.started == 2
    assert (await get(alice, "slow"))["runs"][0]["status"] == "started"


async def test_disable_and_enable(cp: ControlPlane, clock: FakeClock, alice: httpx.AsyncClient) -> None:
    cron = await create(alice, name="toggle")
    url = f"/mags-cron/{cron['id']}"
    await alice.patch(url, json={"enabled": False})
    clock.now = FIRST + 10 * MINUTE
    assert (await cp.cron.tick()).started == 0
    assert (await get(alice, "toggle"))["runs"] == []

    clock.now = FIRST + 10 * MINUTE + 15
    r = await alice.patch(url, json={"enabled": True})
    assert ts(r.json()["next_run_at"]) == FIRST + 11 * MINUTE  # from now: no burst of the missed ticks
    assert (await cp.cron.tick()).started == 0
    clock.now = FIRST + 11 * MINUTE
    assert (await cp.cron.tick()).started == 1
    assert len((await get(alice, "toggle"))["runs"]) == 1


async def test_deleted_cron_stops_running(
    cp: ControlPlane, clock: FakeClock, alice: httpx.AsyncClient
) -> None:
    await create(alice, name="gone")
    clock.now = FIRST
    assert (await cp.cron.tick()).started == 1
    assert (await alice.delete("/mags-cron/gone")).status_code == 200
    clock.advance(MINUTE)
    assert (await cp.cron.tick()).started == 0
    assert await fetch(cp.db, select(cron_runs.c.id)) == []


async def test_a_run_that_cannot_start_is_recorded(
    cp: ControlPlane, clock: FakeClock, alice: httpx.AsyncClient, settings: Settings
) -> None:
    await create(alice, name="big", script="echo " + "x" * 2000)
    settings.max_script_bytes = 1000  # the limit shrank after the cron was created
    clock.now = FIRST
    report = await cp.cron.tick()
    assert report.failed == 1 and report.started == 0
    got = await get(alice, "big")
    assert got["last_status"] == "failed_to_start" and got["last_job_id"] is None
    assert got["last_reason"] == "failed to start: script is larger than 1000 bytes"
    assert got["runs"][0]["status"] == "failed_to_start" and got["runs"][0]["job_status"] is None
    assert await fetch(cp.db, select(jobs.c.request_id)) == []
    assert ts(got["next_run_at"]) == FIRST + MINUTE  # later ticks are still tried


async def test_a_claimed_run_whose_server_died_is_submitted_once(
    cp: ControlPlane, clock: FakeClock, alice: httpx.AsyncClient
) -> None:
    cron = await create(alice, name="orphan", overlap_policy="allow")
    await create(alice, name="late", overlap_policy="allow")
    # another server claimed both ticks and died before submitting the jobs
    clock.now = FIRST
    rid = new_request_id()
    outcome = await cp.db.write(claim_tick, cron["id"], FIRST, FIRST, 300.0, rid)
    assert outcome.kind == "claimed"
    late = (await get(alice, "late"))["id"]
    assert (await cp.db.write(claim_tick, late, FIRST, FIRST, 300.0, new_request_id())).kind == "claimed"
    # a claim lost to the other server is not taken again
    assert (await cp.db.write(claim_tick, cron["id"], FIRST, FIRST, 300.0, new_request_id())).kind == "lost"

    clock.advance(30)
    assert (await cp.cron.tick()).recovered == 0  # too fresh: its submitter may still be at it
    clock.advance(40)
    report = await cp.cron.tick()
    assert report.recovered == 2 and report.started == 2 + 2  # both recovered, then the 00:02 ticks
    got = await get(alice, "orphan")
    assert got["runs"][1]["job_id"] == rid and got["runs"][1]["status"] == "started"
    await wait_job(cp, await uid(cp), rid)
    assert (await cp.cron.tick()).recovered == 0


async def test_a_stale_claim_past_grace_is_recorded_as_failed(
    cp: ControlPlane, clock: FakeClock, alice: httpx.AsyncClient, settings: Settings
) -> None:
    cron = await create(alice, name="too-late", cron_expression="0 0 * * *")
    clock.now = START + 86400 - 30  # 2030-01-02T00:00:00Z
    rid = new_request_id()
    assert (await cp.db.write(claim_tick, cron["id"], clock.now, clock.now, 300.0, rid)).kind == "claimed"
    clock.advance(settings.cron_grace_s + 1)
    report = await cp.cron.tick()
    assert report.recovered == 0 and report.started == 0
    got = await get(alice, "too-late")
    assert got["last_status"] == "failed_to_start" and got["last_job_id"] is None
    assert got["runs"][0]["reason"].startswith("the server stopped before the job was submitted")
    assert await fetch(cp.db, select(jobs.c.request_id)) == []


async def test_the_background_loop_runs_due_ticks(
    settings: Settings, agent: FakeAgentClient, clock: FakeClock
) -> None:
    from mags.server import build_control_plane

    cp = await build_control_plane(settings, [agent], clock=clock)  # the loop runs
    try:
        assert cp.cron is not None
        cp.cron.interval = 0.02
        async with api_client(cp, await user_token(cp, "alice")) as alice:
            await create(alice, name="looped", script="echo from the loop")
            clock.now = FIRST
            cp.cron.wake()
            for _ in range(250):
                got = await get(alice, "looped")
                if got["last_status"] == "completed":
                    break
                await asyncio.sleep(0.02)
            assert got["last_status"] == "completed" and len(got["runs"]) == 1
    finally:
        await cp.close()  # stops the loop and waits for its submissions


async def test_persistent_runs_follow_the_workspace_rules(
    cp: ControlPlane, clock: FakeClock, alice: httpx.AsyncClient
) -> None:
    """Runs share their workspace like API jobs: the previous VM is replaced, a live `new` reused."""
    await create(alice, name="pers", script="echo tick", persistent=True, workspace_id="shared")
    await create(
        alice,
        name="box",
        script="sleep infinity",
        persistent=True,
        workspace_id="box",
        overlap_policy="allow",
    )
    user = await uid(cp)
    clock.now = FIRST
    assert (await cp.cron.tick()).started == 2
    first = (await get(alice, "pers"))["last_job_id"]
    await wait_job(cp, user, first, "completed")  # the script ended, the persistent VM stays up
    box = (await get(alice, "box"))["last_job_id"]
    await wait_job(cp, user, box, "running")

    clock.advance(MINUTE)
    report = await cp.cron.tick()
    assert report.started == 2 and report.failed == 0
    pers = await get(alice, "pers")
    second = pers["last_job_id"]
    assert second != first and [r["status"] for r in pers["runs"]] == ["started", "started"]
    await wait_job(cp, user, second, "completed")
    old = (await cp.jobs.get(user, first))._mapping
    assert old["vm_status"] == "stopped"  # replaced by the new run, not a 409 "workspace busy"
    again = await get(alice, "box")
    assert again["last_job_id"] == box  # the live sandbox answered the `sleep infinity` run
    assert again["runs"][0]["job_id"] == box and "live sandbox" in again["runs"][0]["reason"]
