"""Deleting a workspace right after using it: an idle VM is stopped (no final sync), a sandbox
being torn down is waited for, a running script is a 409 unless ``force``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import api_client, make_settings, running_control_plane, user_token

from mags.server import ControlPlane

from .helpers import key_of, new, persistent_run, status, submit, vm_status, workspace


def history(job: dict[str, Any]) -> list[str]:
    return [h["reason"] for h in job["history"]]


async def test_the_fork_example_then_delete_at_once(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await persistent_run(alice, agent, "golden")
    fork = await submit(
        alice, "echo gold", workspace_id="fork-1", base_workspace_id="golden", persistent=True
    )
    done = await status(alice, fork, until="completed")
    assert done["vm_status"] == "running"  # the script finished; the VM idles
    key = await key_of(cp, "alice", "fork-1")
    r = await alice.delete("/mags-workspaces/fork-1")
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "deleted": True, "workspace_id": "fork-1", "mode": "persistent"}
    job = await status(alice, fork)
    assert (job["status"], job["vm_status"], job["exit_code"]) == ("completed", "stopped", 0)
    assert history(job)[-1] == "workspace deleted"
    sandbox = next(sid for sid, sb in agent.sandboxes.items() if sb.req.job_id == fork)
    assert [req.sync for sid, req in agent.stops if sid == sandbox] == [False]  # no final sync
    assert await workspace(cp, "alice", "fork-1") is None and key in agent.deleted_workspaces
    assert await workspace(cp, "alice", "golden") is not None


async def test_sleeping_vms_and_a_new_sandbox_are_stopped_too(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job = await submit(alice, "true", workspace_id="sleepy", persistent=True)
    await vm_status(alice, job, "running")
    await status(alice, job, until="completed")
    agent.sleep_sandbox(f"vm-{job.replace('-', '')[:12]}")
    await vm_status(alice, job, "sleeping")
    server = await submit(alice, "sleep 300", workspace_id="frozen", persistent=True)  # a web server, say
    await vm_status(alice, server, "running")
    agent.sleep_sandbox(f"vm-{server.replace('-', '')[:12]}")  # idle: asleep with its script
    await vm_status(alice, server, "sleeping")
    box = (await new(alice, "dev", persistent=True)).json()["request_id"]
    await vm_status(alice, box, "running")
    for name, job_id in (("sleepy", job), ("frozen", server), ("dev", box)):
        r = await alice.delete(f"/mags-workspaces/{name}")
        assert r.status_code == 200, r.text
        assert (await status(alice, job_id))["vm_status"] == "stopped"
        assert await workspace(cp, "alice", name) is None


async def test_a_running_script_is_a_409_unless_force(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job = await submit(alice, "sleep 30", workspace_id="busy")
    await vm_status(alice, job, "running")
    r = await alice.delete("/mags-workspaces/busy")
    assert r.status_code == 409 and r.json()["code"] == "workspace_in_use"
    assert f"job {job} is still running its script" in r.json()["error"]
    assert "--force" in r.json()["error"]
    assert (await status(alice, job))["vm_status"] == "running"
    r = await alice.delete("/mags-workspaces/busy", params={"force": "true"})
    assert r.status_code == 200, r.text
    stopped = await status(alice, job)
    assert (stopped["status"], stopped["vm_status"], stopped["error_message"]) == (
        "error",
        "stopped",
        "workspace deleted",
    )
    assert await workspace(cp, "alice", "busy") is None
    assert (await alice.delete("/mags-workspaces/x", params={"force": "maybe"})).status_code == 400


async def test_nothing_is_stopped_when_the_delete_is_refused_anyway(
    cp: ControlPlane, alice: httpx.AsyncClient, bob: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    golden = await submit(alice, "true", workspace_id="golden", persistent=True)
    await status(alice, golden, until="completed")
    await alice.post(f"/mags-jobs/{golden}/sync")
    fork = await submit(alice, "true", workspace_id="fork", base_workspace_id="golden")
    await status(alice, fork, until="completed")
    r = await alice.delete("/mags-workspaces/golden")
    assert r.status_code == 409 and "base of fork" in r.json()["error"]
    assert (await bob.delete("/mags-workspaces/golden")).status_code == 404
    assert (await status(alice, golden))["vm_status"] == "running"  # its idle VM was left alone


@pytest.fixture
async def slow_teardown(tmp_path: Path) -> Any:
    """A plane whose agent reports a finished sandbox stopped only 0.5 s after its script."""
    agent = FakeAgentClient(teardown_delay=0.5)
    async with running_control_plane(make_settings(tmp_path), [agent]) as plane:
        client = api_client(plane, await user_token(plane, "alice"))
        async with client:
            yield plane, agent, client


async def test_a_sandbox_being_torn_down_is_waited_for(slow_teardown: Any) -> None:
    _, agent, alice = slow_teardown
    job = await submit(alice, "echo done", workspace_id="w")
    assert (await status(alice, job, until="completed"))["vm_status"] == "running"
    t = time.monotonic()
    r = await alice.delete("/mags-workspaces/w")
    assert r.status_code == 200, r.text
    assert 0.2 < time.monotonic() - t < 3
    assert agent.stops == []  # it ended by itself: the delete only waited
    assert "workspace deleted" not in history(await status(alice, job))


async def test_a_teardown_that_never_comes_is_bounded(slow_teardown: Any) -> None:
    cp, agent, alice = slow_teardown
    agent.teardown_delay = 1e6
    cp.app.state.workspace_admin.release.wait_s = 0.3
    job = await submit(alice, "true", workspace_id="w")
    await status(alice, job, until="completed")
    t = time.monotonic()
    r = await alice.delete("/mags-workspaces/w")
    assert r.status_code == 200, r.text
    assert time.monotonic() - t < 3
    assert len(agent.stops) == 1 and agent.stops[0][1].sync is False  # stopped after the wait
