"""Helpers for workspace, sandbox and file tests against the in-process control plane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from scheduler.fake_agent import FakeAgentClient

from mags.core.workspaces import workspace_key
from mags.server import ControlPlane


async def submit(client: httpx.AsyncClient, script: str = "true", **fields: Any) -> str:
    r = await client.post("/mags-jobs", json={"script": script, "type": "inline", **fields})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted"
    return r.json()["request_id"]


async def new(
    client: httpx.AsyncClient, name: str, persistent: bool = False, **fields: Any
) -> httpx.Response:
    """What SDK ``new()`` submits."""
    body = {
        "script": "sleep infinity", "type": "inline", "name": name, "workspace_id": name,
        "persistent": True, "no_sync": not persistent, **fields,
    }  # fmt: skip
    return await client.post("/mags-jobs", json=body)


async def status(client: httpx.AsyncClient, job_id: str, until: str | None = None) -> dict[str, Any]:
    params = {"wait": 5, "until": until} if until else None
    r = await client.get(f"/mags-jobs/{job_id}/status", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll an (async or plain) check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def vm_status(client: httpx.AsyncClient, job_id: str, wanted: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = await status(client, job_id)
        return job if job["vm_status"] == wanted else None

    return await eventually(check)


async def user_id(cp: ControlPlane, name: str) -> int:
    return (await cp.tokens.ensure_user(name))._mapping["id"]


async def key_of(cp: ControlPlane, user: str, name: str) -> str:
    return workspace_key(await user_id(cp, user), name)


async def workspace(cp: ControlPlane, user: str, name: str) -> dict[str, Any] | None:
    row = await cp.controller.workspaces.get(await user_id(cp, user), name)
    return dict(row._mapping) if row is not None else None


def created_for(agent: FakeAgentClient, job_id: str) -> Any:
    """The SandboxRequest the agent got for a job."""
    return next(r for r in agent.created if r.job_id == job_id)


async def persistent_run(
    client: httpx.AsyncClient, agent: FakeAgentClient, name: str, script: str = "true", **fields: Any
) -> str:
    """Run a -p job to the end of its script, then stop its VM (the stop syncs)."""
    job_id = await submit(client, script, workspace_id=name, persistent=True, **fields)
    await status(client, job_id, until="completed,error")
    r = await client.post(f"/mags-jobs/{job_id}/stop")
    assert r.status_code == 200, r.text
    return job_id
