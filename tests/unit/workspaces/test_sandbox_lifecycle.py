"""Sandboxes you come back to: sleeping status, exec, live PATCH (issue 5)."""

from __future__ import annotations

import httpx
import pytest
from scheduler.fake_agent import FakeAgentClient

from mags.server import ControlPlane

from .helpers import new, status, submit, vm_status

NOT_RUNNING = {"error": "sandbox is not running: start it with mags new"}


async def test_status_follows_the_vm_after_the_script_with_the_agents_reasons(
    alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job = await submit(alice, "echo done; exit 3", workspace_id="ws", persistent=True)
    first = await status(alice, job, until="completed,error")
    assert (first["status"], first["vm_status"], first["exit_code"]) == ("error", "running", 3)
    agent.sleep_sandbox(first["vm_id"], "idle for 600 s")
    slept = await vm_status(alice, job, "sleeping")
    assert slept["status"] == "sleeping" and slept["exit_code"] == 3
    r = await alice.post(f"/mags-jobs/{job}/exec", json={"command": "echo hi", "timeout": 5})
    assert r.status_code == 200 and r.json()["stdout"] == "hi\n"
    woke = await vm_status(alice, job, "running")
    assert woke["status"] == "running" and woke["exit_code"] == 3
    reasons = [(h["status"], h["vm_status"], h["reason"]) for h in woke["history"]]
    assert ("sleeping", "sleeping", "idle for 600 s") in reasons
    assert ("running", "running", "woken by exec") in reasons
    stopped = (await alice.post(f"/mags-jobs/{job}/stop")).json()
    assert (stopped["status"], stopped["vm_status"], stopped["exit_code"]) == ("completed", "stopped", 3)


async def test_local_and_ephemeral_runs_end_with_their_script(alice: httpx.AsyncClient) -> None:
    for fields in ({"workspace_id": "loc"}, {}):
        job = await submit(alice, "echo x", **fields)
        await status(alice, job, until="completed")
        assert (await vm_status(alice, job, "stopped"))["status"] == "completed"


async def test_exec_runs_in_the_sandbox_with_the_jobs_environment(
    alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    box = (await new(alice, "box", environment={"TOKEN": "t"})).json()["request_id"]
    await vm_status(alice, box, "running")
    r = await alice.post(f"/mags-jobs/{box}/exec", json={"command": "echo a; echo b; exit 4", "timeout": 10})
    assert r.status_code == 200
    assert r.json() == {"exit_code": 4, "stdout": "a\nb\n", "stderr": "", "timed_out": False}
    vm, req = agent.execs[-1]
    assert vm == (await status(alice, box))["vm_id"] and req.timeout == 10.0 and req.cwd == "/root"
    assert req.environment == {"TOKEN": "t"}
    r = await alice.post(f"/mags-jobs/{box}/exec", json={"command": "echo x"})
    assert r.status_code == 200 and agent.execs[-1][1].timeout == 30.0  # the default


async def test_exec_timeout_is_reported(alice: httpx.AsyncClient) -> None:
    box = (await new(alice, "box")).json()["request_id"]
    await vm_status(alice, box, "running")
    r = await alice.post(f"/mags-jobs/{box}/exec", json={"command": "sleep 30", "timeout": 1})
    assert r.status_code == 200
    body = r.json()
    assert body["timed_out"] is True and body["exit_code"] == 124 and "timed out" in body["stderr"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "command is required"),
        ({"command": "  "}, "command must not be empty"),
        ({"command": "a\x00b"}, "command must not contain NUL characters"),
        ({"command": 5}, "command must be a string"),
        ({"command": "ls", "timeout": 0}, "timeout must be a number of seconds, at least 1"),
        ({"command": "ls", "timeout": "5"}, "timeout must be a number of seconds, at least 1"),
        ({"command": "ls", "timeout": True}, "timeout must be a number of seconds, at least 1"),
        ({"command": "ls", "cwd": "/"}, "unknown field: cwd"),
    ],
)
async def test_exec_input_is_checked(alice: httpx.AsyncClient, body: dict[str, object], message: str) -> None:
    box = (await new(alice, "box")).json()["request_id"]
    r = await alice.post(f"/mags-jobs/{box}/exec", json=body)
    assert r.status_code == 400 and r.json() == {"error": message}


async def test_exec_needs_a_live_sandbox_of_yours(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    box = (await new(alice, "box")).json()["request_id"]
    await vm_status(alice, box, "running")
    assert (await bob.post(f"/mags-jobs/{box}/exec", json={"command": "id"})).status_code == 404
    assert (await alice.post("/mags-jobs/nope/exec", json={"command": "id"})).status_code == 404
    await alice.post(f"/mags-jobs/{box}/stop")
    r = await alice.post(f"/mags-jobs/{box}/exec", json={"command": "id"})
    assert r.status_code == 409 and r.json() == NOT_RUNNING
    done = await submit(alice, "echo x")
    await vm_status(alice, done, "stopped")
    assert (await alice.post(f"/mags-jobs/{done}/exec", json={"command": "id"})).json() == NOT_RUNNING
    # the agent lost the sandbox: also "not running", never a raw agent error
    other = (await new(alice, "other")).json()["request_id"]
    vm = (await vm_status(alice, other, "running"))["vm_id"]
    agent.forget(vm)
    r = await alice.post(f"/mags-jobs/{other}/exec", json={"command": "id"})
    assert r.status_code == 409 and r.json() == NOT_RUNNING


async def test_patch_reaches_the_live_sandbox(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job = await submit(alice, "echo x", workspace_id="api", persistent=True, startup_command="serve")
    await status(alice, job, until="completed")
    vm = (await status(alice, job))["vm_id"]
    r = await alice.patch(f"/mags-jobs/{job}", json={"no_sleep": True})
    assert r.status_code == 200 and r.json()["no_sleep"] is True
    assert agent.sandboxes[vm].no_sleep is True
    assert (
        agent.settings_calls[-1][1].no_sleep is True and agent.settings_calls[-1][1].startup_command is None
    )
    r = await alice.patch(f"/mags-jobs/{job}", json={"startup_command": None})
    assert r.status_code == 200 and r.json()["startup_command"] is None
    assert (
        agent.settings_calls[-1][1].clear_startup_command is True
        and agent.sandboxes[vm].startup_command is None
    )
    await alice.patch(
        f"/mags-jobs/{job}", json={"startup_command": "python3 -m http.server", "no_sleep": False}
    )
    assert (
        agent.sandboxes[vm].startup_command == "python3 -m http.server"
        and agent.sandboxes[vm].no_sleep is False
    )
    # a sleeping sandbox takes settings too (they apply when it wakes / at the next idle check)
    agent.sleep_sandbox(vm)
    await vm_status(alice, job, "sleeping")
    await alice.patch(f"/mags-jobs/{job}", json={"no_sleep": True})
    assert agent.sandboxes[vm].no_sleep is True
    # a stopped one: stored only
    await alice.post(f"/mags-jobs/{job}/stop")
    calls = len(agent.settings_calls)
    r = await alice.patch(f"/mags-jobs/{job}", json={"no_sleep": False})
    assert r.status_code == 200 and r.json()["no_sleep"] is False and len(agent.settings_calls) == calls
    # no_sleep without persistent is still a 400
    eph = await submit(alice, "sleep 5")
    r = await alice.patch(f"/mags-jobs/{eph}", json={"no_sleep": True})
    assert r.status_code == 400


async def test_no_sleep_and_startup_command_reach_the_agent_at_launch(
    alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job = await submit(
        alice, "echo x", workspace_id="api", persistent=True, no_sleep=True, startup_command="s"
    )
    await status(alice, job, until="completed")
    req = next(r for r in agent.created if r.job_id == job)
    assert req.no_sleep is True and req.startup_command == "s" and req.persistent and req.timeout_s is None
    assert req.idle_timeout_s is None  # the agent's own setting
