"""Fixtures for cron tests: a control plane on a fake clock whose cron loop tests drive by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import api_client, make_settings, user_token

from mags.config import Settings
from mags.core.ids import Clock
from mags.server import ControlPlane, build_control_plane

# 2030-01-01T00:00:30Z: half a minute before a minute boundary
START = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp()


class FakeClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, now: float = START) -> None:
        super().__init__()
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def ts(text: str) -> float:
    """Epoch seconds of an ISO-8601 UTC time (``...Z``)."""
    return datetime.fromisoformat(text).timestamp()


async def manual_control_plane(settings: Settings, agents: list[Any], clock: FakeClock) -> ControlPlane:
    """A started control plane whose cron loop is stopped: tests call ``cp.cron.tick()``."""
    cp = await build_control_plane(settings, agents, clock=clock)
    assert cp.cron is not None
    await cp.cron.stop()
    return cp


async def wait_job(
    cp: ControlPlane, user_id: int, job_id: str, *statuses: str, timeout: float = 5
) -> dict[str, Any]:
    """Poll until the job's status is one of ``statuses`` (default: finished)."""
    wanted = statuses or ("completed", "error")

    async def poll() -> dict[str, Any]:
        while True:
            m = (await cp.jobs.get(user_id, job_id))._mapping
            if m["status"] in wanted:
                return dict(m)
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def agent() -> FakeAgentClient:
    return FakeAgentClient()


@pytest.fixture
async def cp(settings: Settings, agent: FakeAgentClient, clock: FakeClock) -> AsyncIterator[ControlPlane]:
    plane = await manual_control_plane(settings, [agent], clock)
    try:
        yield plane
    finally:
        await plane.close()


@pytest.fixture
async def alice(cp: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cp, await user_token(cp, "alice")) as client:
        yield client


@pytest.fixture
async def bob(cp: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cp, await user_token(cp, "bob")) as client:
        yield client


async def uid(cp: ControlPlane, name: str = "alice") -> int:
    row = await cp.tokens.get_user(name)
    assert row is not None
    return int(row._mapping["id"])


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """POST /mags-cron with defaults for the required fields; asserts 200."""
    payload = {"name": "backup", "cron_expression": "* * * * *", "script": "echo hi", **body}
    r = await client.post("/mags-cron", json=payload)
    assert r.status_code == 200, r.text
    return dict(r.json())
