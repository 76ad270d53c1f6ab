"""Fixtures shared by test folders (imported by their conftest.py): a control plane on SQLite with
the fake agent, and two tenants' clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import api_client, make_settings, running_control_plane, user_token

from mags.server import ControlPlane


@pytest.fixture
def agent() -> FakeAgentClient:
    return FakeAgentClient()


@pytest.fixture
async def cp(tmp_path: Path, agent: FakeAgentClient) -> AsyncIterator[ControlPlane]:
    settings = make_settings(tmp_path, max_log_lines=50)
    async with running_control_plane(settings, [agent], sweep_interval=0.2) as plane:
        yield plane


@pytest.fixture
async def alice(cp: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cp, await user_token(cp, "alice")) as client:
        yield client


@pytest.fixture
async def bob(cp: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cp, await user_token(cp, "bob")) as client:
        yield client
