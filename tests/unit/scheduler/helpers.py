"""Shared helpers for control-plane tests: settings, a running control plane, API clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from mags.agent.models import AgentClient
from mags.config import Settings
from mags.core.bootstrap import ensure_admin_token
from mags.server import ControlPlane, build_control_plane


async def fetch(db: Any, stmt: Any) -> list[Any]:
    """Run a SELECT through the database's read path."""
    return await db.read(lambda conn: list(conn.execute(stmt).all()))


async def execute(db: Any, stmt: Any) -> None:
    """Run a statement in a write transaction."""
    await db.write(lambda conn: conn.execute(stmt))


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", image_dir=tmp_path / "images", **overrides)


@asynccontextmanager
async def running_control_plane(
    settings: Settings, agents: Sequence[AgentClient], **kwargs: Any
) -> AsyncIterator[ControlPlane]:
    cp = await build_control_plane(settings, agents, **kwargs)
    try:
        yield cp
    finally:
        await cp.close()


def api_client(cp: ControlPlane, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cp.app), base_url="http://mags.test/api/v1", headers=headers
    )


async def admin_token(cp: ControlPlane) -> str:
    token = await ensure_admin_token(cp.tokens, cp.settings.data_dir)
    assert token is not None
    return token


async def user_token(cp: ControlPlane, name: str) -> str:
    user = await cp.tokens.ensure_user(name)
    _, secret = await cp.tokens.create_token(user._mapping["id"], "test")
    return secret
