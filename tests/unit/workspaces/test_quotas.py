"""Per-tenant quotas at submit: disk GB, workspaces, live sandboxes; the /quotas endpoints.

The control plane runs in-process with the fake agent; the server's defaults here are small
(disk 10 GB, 3 workspaces, 2 sandboxes) and tests set per-user overrides through the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import admin_token, api_client, make_settings, running_control_plane

from mags.server import ControlPlane

from .helpers import new, status, submit, vm_status

DEFAULTS = {"disk_gb": 10, "workspaces": 3, "sandboxes": 2}


@pytest.fixture
async def cp(tmp_path: Path, agent: FakeAgentClient) -> AsyncIterator[ControlPlane]:
    settings = make_settings(
        tmp_path, quota_disk_gb=10, quota_workspaces=3, quota_sandboxes=2, default_disk_gb=2
    )
    async with running_control_plane(settings, [agent], sweep_interval=0.2) as plane:
        yield plane


@pytest.fixture
async def admin(cp: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cp, await admin_token(cp)) as client:
        yield client


async def set_quota(admin: httpx.AsyncClient, user: str, **values: Any) -> dict[str, Any]:
    r = await admin.patch(f"/quotas/{user}", json=values)
    assert r.status_code == 200, r.text
    return r.json()


def refused(r: httpx.Response, message: str) -> None:
    assert r.status_code == 429, r.text
    assert r.json() == {"error": message, "code": "quota_exceeded"}


async def test_quota_endpoints(admin: httpx.AsyncClient, alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    r = await alice.get("/quotas")
    assert r.status_code == 200
    assert r.json() == {
        "user": "alice", "admin": False, "exempt": False, "limits": DEFAULTS,
        "overrides": {"disk_gb": None, "workspaces": None, "sandboxes": None},
        "usage": {"disk_gb": 0, "workspaces": 0, "sandboxes": 0},
    }  # fmt: skip
    assert (await alice.get("/quotas/alice")).json()["user"] == "alice"
    await bob.get("/quotas")  # bob exists
    r = await alice.get("/quotas/bob")
    assert r.status_code == 404 and r.json() == {"error": "user bob not found"}  # never another tenant's
    r = await alice.patch("/quotas/alice", json={"sandboxes": 100})
    assert r.status_code == 403

    state = await set_quota(admin, "alice", sandboxes=5, disk_gb=0)
    assert state["limits"] == {"disk_gb": None, "workspaces": 3, "sandboxes": 5}  # 0: no limit
    assert state["overrides"] == {"disk_gb": 0, "workspaces": None, "sandboxes": 5}
    state = await set_quota(admin, "alice", disk_gb=None)  # back to the server's setting
    assert state["limits"]["disk_gb"] == 10 and state["overrides"]["disk_gb"] is None
    assert (await admin.get("/quotas/alice")).json()["limits"]["sandboxes"] == 5

    for body in ({"sandboxes": -1}, {"sandboxes": "5"}, {"sandboxes": True}, {"memory": 1}, {}):
        r = await admin.patch("/quotas/alice", json=body)
        assert r.status_code == 400, body
    r = await admin.patch("/quotas/nobody", json={"sandboxes": 1})
    assert r.status_code == 404 and r.json() == {"error": "user nobody not found"}
    me = (await admin.get("/quotas")).json()
    assert me["admin"] is True and me["exempt"] is True


async def test_sandboxes_quota_counts_live_vms_and_spares_others(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    for name in ("a", "b"):
        r = await new(alice, name)
        assert r.status_code == 200
        await vm_status(alice, r.json()["request_id"], "running")
    r = await new(alice, "c")
    refused(r, "quota exceeded: sandboxes limit is 2, 2 in use, this job needs 1 more "
               "(live VMs, sleeping ones included: stop one with `mags stop`)")  # fmt: skip
    assert (await alice.get("/quotas")).json()["usage"]["sandboxes"] == 2
    # another tenant is not affected
    r = await new(bob, "c")
    assert r.status_code == 200
    # a job that replaces the live sandbox of its workspace takes its place
    job = await submit(alice, "true", workspace_id="a")
    assert (await status(alice, job, until="completed"))["status"] == "completed"
    # stopping one frees a place
    b = (await new(alice, "b")).json()["request_id"]
    assert (await alice.post(f"/mags-jobs/{b}/stop")).status_code == 200
    assert (await new(alice, "c")).status_code == 200


async def test_workspaces_quota(admin: httpx.AsyncClient, alice: httpx.AsyncClient) -> None:
    await set_quota(admin, "alice", workspaces=1)
    await status(alice, await submit(alice, "true", workspace_id="w1"), until="completed")
    r = await alice.post("/mags-jobs", json={"script": "true", "workspace_id": "w2"})
    refused(r, "quota exceeded: workspaces limit is 1, 1 in use, this job needs 1 more "
               "(delete one with `mags workspace delete`)")  # fmt: skip
    # the workspace it has is still usable
    await status(alice, await submit(alice, "true", workspace_id="w1"), until="completed")
    assert (await alice.delete("/mags-workspaces/w1")).status_code == 200
    await status(alice, await submit(alice, "true", workspace_id="w2"), until="completed")


async def test_disk_quota_counts_workspace_sizes_and_resizes(admin: httpx.AsyncClient, alice: httpx.AsyncClient) -> None:
    await set_quota(admin, "alice", disk_gb=5)
    await status(alice, await submit(alice, "true", workspace_id="w1", disk_gb=3), until="completed")
    r = await alice.post("/mags-jobs", json={"script": "true", "workspace_id": "w2", "disk_gb": 3})
    refused(r, "quota exceeded: disk limit is 5 GB, 3 GB in use, this job needs 3 GB more "
               "(workspace disks + ephemeral sandboxes' scratch disks)")  # fmt: skip
    # resize (a job with another --disk on the workspace) counts the difference
    await status(alice, await submit(alice, "true", workspace_id="w1", disk_gb=5), until="completed")
    assert (await alice.get("/quotas")).json()["usage"]["disk_gb"] == 5
    r = await alice.post("/mags-jobs", json={"script": "true", "workspace_id": "w1", "disk_gb": 6})
    refused(r, "quota exceeded: disk limit is 5 GB, 5 GB in use, this job needs 1 GB more "
               "(workspace disks + ephemeral sandboxes' scratch disks)")  # fmt: skip
    # a new workspace without --disk gets default_disk_gb (2): too much now ...
    r = await alice.post("/mags-jobs", json={"script": "true", "workspace_id": "w2"})
    assert r.status_code == 429
    # ... until w1 shrinks (a shrink always passes, even over the quota)
    await status(alice, await submit(alice, "true", workspace_id="w1", disk_gb=3), until="completed")
    await status(alice, await submit(alice, "true", workspace_id="w2"), until="completed")
    assert (await alice.get("/quotas")).json()["usage"] == {"disk_gb": 5, "workspaces": 2, "sandboxes": 0}


async def test_ephemeral_sandbox_on_a_base_counts_its_scratch_disk(
    admin: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    await set_quota(admin, "alice", disk_gb=4)
    job = await submit(alice, "true", workspace_id="gold", persistent=True, disk_gb=2)
    await status(alice, job, until="completed")
    assert (await alice.post(f"/mags-jobs/{job}/stop")).status_code == 200
    r = await alice.post("/mags-jobs", json={"script": "sleep 5", "base_workspace_id": "gold", "disk_gb": 3})
    refused(r, "quota exceeded: disk limit is 4 GB, 2 GB in use, this job needs 3 GB more "
               "(workspace disks + ephemeral sandboxes' scratch disks)")  # fmt: skip
    live = await submit(alice, "sleep 5", base_workspace_id="gold")  # default_disk_gb: 2
    assert (await alice.get("/quotas")).json()["usage"]["disk_gb"] == 4
    r = await alice.post("/mags-jobs", json={"script": "true", "base_workspace_id": "gold", "disk_gb": 1})
    assert r.status_code == 429
    assert (await alice.post(f"/mags-jobs/{live}/stop")).status_code == 200
    await status(alice, await submit(alice, "true", base_workspace_id="gold", disk_gb=1), until="completed")


async def test_plain_ephemeral_jobs_count_as_sandboxes(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    first = [await submit(alice, "sleep 10") for _ in range(2)]
    r = await alice.post("/mags-jobs", json={"script": "sleep 10"})
    assert r.status_code == 429 and r.json()["code"] == "quota_exceeded"
    assert "sandboxes limit is 2, 2 in use" in r.json()["error"]
    assert (await alice.post("/mags-jobs", json={"script": "true", "disk_gb": 9})).status_code == 429
    await submit(bob, "true")
    for job in first:
        assert (await alice.post(f"/mags-jobs/{job}/stop")).status_code == 200
    await status(alice, await submit(alice, "true"), until="completed")


async def test_admins_are_exempt(admin: httpx.AsyncClient) -> None:
    jobs = []
    for name in ("a", "b", "c", "d"):  # past 3 workspaces and 2 sandboxes
        r = await new(admin, name, disk_gb=4)  # and past 10 GB
        assert r.status_code == 200, r.text
        jobs.append(r.json()["request_id"])
    usage = (await admin.get("/quotas")).json()["usage"]
    assert usage == {"disk_gb": 16, "workspaces": 4, "sandboxes": 4}
