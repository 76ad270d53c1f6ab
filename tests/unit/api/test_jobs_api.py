"""Jobs API: submit, status (long-poll), list, logs, PATCH, stop, usage."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import execute
from sqlalchemy import update

from mags.core.schema import jobs
from mags.server import ControlPlane


async def submit(client: httpx.AsyncClient, script: str, **fields: Any) -> str:
    r = await client.post("/mags-jobs", json={"script": script, "type": "inline", **fields})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "accepted"
    return body["request_id"]


async def wait_done(client: httpx.AsyncClient, job_id: str, until: str = "completed,error") -> dict[str, Any]:
    r = await client.get(f"/mags-jobs/{job_id}/status", params={"wait": 5, "until": until})
    assert r.status_code == 200, r.text
    return r.json()


async def test_run_echo_and_wait(alice: httpx.AsyncClient) -> None:
    job_id = await submit(alice, "echo hello; echo oops >&2")
    job = await wait_done(alice, job_id)
    assert job["status"] == "completed"
    assert job["exit_code"] == 0
    assert job["vm_id"].startswith("vm-") and len(job["vm_id"]) == 15
    assert job["request_id"] == job_id
    assert job["created_at"].endswith("Z") and job["finished_at"].endswith("Z")
    for key in ("name", "workspace_id", "subdomain", "error_message", "persistent", "no_sleep", "started_at"):
        assert key in job
    history = [(h["status"], h["vm_status"]) for h in job["history"]]
    assert history[0] == ("pending", "pending")
    assert ("pending", "starting") in history and ("running", "running") in history
    assert ("completed", "running") in history or ("completed", "stopped") in history
    assert all(h["reason"] for h in job["history"])

    logs = (await alice.get(f"/mags-jobs/{job_id}/logs")).json()["logs"]
    assert [(entry["source"], entry["message"]) for entry in logs] == [("stdout", "hello"), ("stderr", "oops")]
    assert [entry["seq"] for entry in logs] == [1, 2]
    assert logs[0]["timestamp"].endswith("Z")


async def test_exit_code_makes_error(alice: httpx.AsyncClient) -> None:
    job = await wait_done(alice, await submit(alice, "echo x; exit 3"))
    assert job["status"] == "error"
    assert job["exit_code"] == 3


async def test_long_poll_returns_promptly(alice: httpx.AsyncClient) -> None:
    job_id = await submit(alice, "sleep 0.2; echo done")
    t0 = time.monotonic()
    job = await wait_done(alice, job_id)
    elapsed = time.monotonic() - t0
    assert job["status"] == "completed"
    assert 0.15 < elapsed < 1.0  # woken by the ingest, not by a 1 s recheck or the 5 s wait


async def test_long_poll_times_out_with_current_state(alice: httpx.AsyncClient) -> None:
    job_id = await submit(alice, "sleep infinity")
    t0 = time.monotonic()
    r = await alice.get(f"/mags-jobs/{job_id}/status", params={"wait": 0.3})
    assert 0.25 < time.monotonic() - t0 < 2
    assert r.json()["status"] == "running"


async def test_long_poll_until_running(alice: httpx.AsyncClient) -> None:
    job_id = await submit(alice, "sleep infinity", persistent=True, workspace_id="dev", no_sync=True)
    job = await wait_done(alice, job_id, until="running")
    assert job["status"] == "running" and job["vm_id"]
    assert job["workspace_id"] == "dev" and job["persistent"] is True


async def test_list_newest_first_and_paginated(alice: httpx.AsyncClient) -> None:
    ids = [await submit(alice, f"echo {i}", name=f"job{i}") for i in range(5)]
    r = await alice.get("/mags-jobs", params={"page": 1, "page_size": 2})
    body = r.json()
    assert body["total"] == 5 and body["page"] == 1 and body["page_size"] == 2
    assert [j["request_id"] for j in body["jobs"]] == [ids[4], ids[3]]
    body = (await alice.get("/mags-jobs", params={"page": 3, "page_size": 2})).json()
    assert [j["request_id"] for j in body["jobs"]] == [ids[0]]
    entry = body["jobs"][0]
    for key in ("request_id", "name", "workspace_id", "status", "vm_status"):
        assert key in entry
    assert "script" not in entry and "environment" not in entry
    default = (await alice.get("/mags-jobs")).json()
    assert default["page"] == 1 and default["page_size"] == 20 and len(default["jobs"]) == 5


async def test_patch_settings(alice: httpx.AsyncClient) -> None:
    job_id = await submit(alice, "sleep infinity", persistent=True, workspace_id="w1")
    r = await alice.patch(f"/mags-jobs/{job_id}", json={"no_sleep": True, "startup_command": "nginx"})
    assert r.status_code == 200, r.text
    assert r.json()["no_sleep"] is True and r.json()["startup_command"] == "nginx"
    r = await alice.patch(f"/mags-jobs/{job_id}", json={"startup_command": None})
    assert r.json()["startup_command"] is None and r.json()["no_sleep"] is True

    eph = await submit(alice, "true")
    r = await alice.patch(f"/mags-jobs/{eph}", json={"no_sleep": True})
    assert r.status_code == 400 and r.json() == {"error": "no_sleep requires a persistent job"}
    r = await alice.patch(f"/mags-jobs/{eph}", json={"script": "x"})
    assert r.status_code == 400 and "unknown field" in r.json()["error"]
    r = await alice.patch(f"/mags-jobs/{eph}", json={})
    assert r.status_code == 400
    r = await alice.patch(f"/mags-jobs/{eph}", json={"no_sleep": "yes"})
    assert r.status_code == 400 and r.json()["error"] == "no_sleep must be true or false"


async def test_stop_running_script_is_error(alice: httpx.AsyncClient, agent: FakeAgentClient) -> None:
    job_id = await submit(alice, "echo started; sleep infinity")
    await wait_done(alice, job_id, until="running")
    r = await alice.post(f"/mags-jobs/{job_id}/stop")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["status"] == "error" and body["vm_status"] == "stopped"
    assert body["error_message"] == "stopped by user"
    assert agent.stops and agent.stops[0][1].reason == "stopped by user"
    r = await alice.post(f"/mags-jobs/{job_id}/stop")
    assert r.status_code == 409 and "already stopped" in r.json()["error"]
    status = await wait_done(alice, job_id)
    assert any(h["reason"] == "stopped by user" for h in status["history"])


async def test_stop_persistent_completes(alice: httpx.AsyncClient) -> None:
    job_id = await submit(alice, "sleep infinity", persistent=True, workspace_id="box")
    await wait_done(alice, job_id, until="running")
    body = (await alice.post(f"/mags-jobs/{job_id}/stop")).json()
    assert body["status"] == "completed" and body["vm_status"] == "stopped"
    assert body["error_message"] is None


async def test_persistent_status_follows_vm_after_script(alice: httpx.AsyncClient, agent: FakeAgentClient) -> None:
    job_id = await submit(alice, "echo hi", persistent=True, workspace_id="box")
    job = await wait_done(alice, job_id)
    assert job["status"] == "completed" and job["vm_status"] == "running" and job["exit_code"] == 0
    agent.set_state(job["vm_id"], "sleeping", reason="idle for 600 s")
    job = await wait_done(alice, job_id, until="sleeping")
    assert job["status"] == "sleeping" and job["vm_status"] == "sleeping"
    agent.set_state(job["vm_id"], "running", reason="woken by request")
    job = await wait_done(alice, job_id, until="running")
    assert job["exit_code"] == 0
    body = (await alice.post(f"/mags-jobs/{job_id}/stop")).json()
    assert body["status"] == "completed" and body["vm_status"] == "stopped"


async def test_stop_pending_job_cancels(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    await cp.dispatcher.stop()  # nothing gets claimed
    job_id = await submit(alice, "echo never")
    body = (await alice.post(f"/mags-jobs/{job_id}/stop")).json()
    assert body["status"] == "error" and body["error_message"] == "stopped before start"
    assert body["vm_status"] == "stopped" and body["vm_id"] is None


async def test_launch_failure_is_error(alice: httpx.AsyncClient) -> None:
    job = await wait_done(alice, await submit(alice, "fail-start"))
    assert job["status"] == "error" and job["vm_status"] == "stopped"
    assert "cannot start sandbox" in job["error_message"]


async def test_usage(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    await wait_done(alice, await submit(alice, "true"))
    await wait_done(alice, await submit(alice, "exit 1"))
    await wait_done(bob, await submit(bob, "true"))
    r = await alice.get("/mags-jobs/usage", params={"window_days": 7})
    body = r.json()
    assert body["total_jobs"] == 2 and body["completed"] == 1 and body["errors"] == 1
    assert body["window_days"] == 7 and body["vm_seconds"] >= 0
    assert (await alice.get("/mags-jobs/usage", params={"window_days": 0})).status_code == 400


async def test_twenty_concurrent_jobs_run_concurrently(alice: httpx.AsyncClient) -> None:
    ids = await asyncio.gather(*(submit(alice, "sleep 0.3; echo ok") for _ in range(20)))
    t0 = time.monotonic()
    jobs = await asyncio.gather(*(wait_done(alice, i) for i in ids))
    assert all(j["status"] == "completed" for j in jobs)
    assert time.monotonic() - t0 < 1.5


async def test_stop_on_unmanaged_agent_is_502(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    job_id = await submit(alice, "sleep infinity")
    await wait_done(alice, job_id, until="running")
    await execute(cp.db, update(jobs).where(jobs.c.request_id == job_id).values(agent_id="elsewhere"))
    r = await alice.post(f"/mags-jobs/{job_id}/stop")
    assert r.status_code == 502
    assert r.json() == {"error": f"job {job_id} runs on agent elsewhere, which this server does not manage"}
