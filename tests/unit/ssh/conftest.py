"""Fixtures: a control plane with a streaming fake agent, an SSH gateway on a free port, and jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from scheduler.helpers import api_client, make_settings, running_control_plane, user_token

from mags.server import ControlPlane
from mags.ssh.gateway import SshGateway
from mags.ssh.ratelimit import AuthRateLimiter

from .fake_streams import StreamingFakeAgent


@pytest.fixture
def agent() -> StreamingFakeAgent:
    return StreamingFakeAgent()


@pytest.fixture
async def cp(tmp_path: Path, agent: StreamingFakeAgent) -> AsyncIterator[ControlPlane]:
    settings = make_settings(tmp_path, ssh_port=2299, ssh_host="ssh.mags.test")
    async with running_control_plane(settings, [agent]) as plane:
        yield plane


@pytest.fixture
def limiter() -> AuthRateLimiter:
    return AuthRateLimiter(burst=5, refill_per_s=0.01, ban_s=60)


@pytest.fixture
async def gateway(cp: ControlPlane, limiter: AuthRateLimiter) -> AsyncIterator[SshGateway]:
    gw = SshGateway(cp.settings, cp.db, cp.registry, limiter=limiter, sweep_interval=3600)
    await gw.start("127.0.0.1", 0)
    cp.app.state.access_providers["ssh"].port = gw.port
    try:
        yield gw
    finally:
        await gw.close()


@pytest.fixture
async def alice(cp: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cp, await user_token(cp, "alice")) as client:
        yield client


@pytest.fixture
async def bob(cp: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cp, await user_token(cp, "bob")) as client:
        yield client


async def start_sandbox(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    """A persistent ``sleep infinity`` job (like ``mags new``), once its VM runs."""
    r = await client.post("/mags-jobs", json={"script": "sleep infinity", "persistent": True, "name": name})
    assert r.status_code == 200, r.text
    job_id = r.json()["request_id"]
    r = await client.get(f"/mags-jobs/{job_id}/status", params={"wait": 5, "until": "running"})
    job = r.json()
    assert job["vm_status"] == "running", job
    return dict(job)


async def ssh_access(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    r = await client.post(f"/mags-jobs/{job_id}/access", json={"port": 22})
    assert r.status_code == 200, r.text
    return dict(r.json())


StartSandbox = Callable[[httpx.AsyncClient, str], Awaitable[dict[str, Any]]]
