"""Routing errors and unexpected failures are JSON too."""

from __future__ import annotations

import httpx
import pytest

from mags.server import ControlPlane


async def test_unknown_route(alice: httpx.AsyncClient) -> None:
    r = await alice.get("/nope")
    assert r.status_code == 404 and r.json() == {"error": "no such endpoint: GET /api/v1/nope"}


async def test_wrong_method(alice: httpx.AsyncClient) -> None:
    r = await alice.delete("/mags-jobs")
    assert r.status_code == 405
    assert r.json() == {"error": "method DELETE is not allowed on /api/v1/mags-jobs"}


async def test_500_is_json(
    cp: ControlPlane, alice: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database exploded")

    monkeypatch.setattr(cp.jobs, "list", broken)
    transport = httpx.ASGITransport(app=cp.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1", headers=alice.headers) as c:
        r = await c.get("/mags-jobs")
    assert r.status_code == 500 and r.json() == {"error": "internal server error"}
