"""Authentication, tokens, whoami, tenancy."""

from __future__ import annotations

import httpx
from scheduler.helpers import api_client, fetch, user_token

from mags.core.ids import hash_token
from mags.server import ControlPlane


async def test_health_needs_no_token(anon: httpx.AsyncClient) -> None:
    r = await anon.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["version"]


async def test_401_shapes(cp: ControlPlane, anon: httpx.AsyncClient) -> None:
    r = await anon.get("/mags-jobs")
    assert r.status_code == 401
    assert r.json() == {"error": "missing API token: send 'Authorization: Bearer <token>'"}
    assert r.headers["www-authenticate"] == "Bearer"
    r = await anon.get("/mags-jobs", headers={"Authorization": "Bearer mags_nope"})
    assert r.status_code == 401 and r.json() == {"error": "invalid API token"}
    r = await anon.get("/mags-jobs", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and r.json()["error"].startswith("malformed Authorization header")
    r = await anon.post("/mags-jobs", json={"script": "true"})
    assert r.status_code == 401


async def test_whoami(alice: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    assert (await alice.get("/whoami")).json() == {"user": "alice", "admin": False, "token_name": "test"}
    assert (await admin.get("/whoami")).json() == {"user": "admin", "admin": True, "token_name": "admin"}


async def test_token_lifecycle_and_immediate_revocation(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    r = await alice.post("/tokens", json={"name": "laptop"})
    assert r.status_code == 200, r.text
    created = r.json()
    assert set(created) >= {"id", "name", "user", "token", "created_at"}
    assert created["user"] == "alice" and created["name"] == "laptop"
    assert created["token"].startswith("mags_")

    async with api_client(cp, created["token"]) as laptop:
        assert (await laptop.get("/whoami")).json()["token_name"] == "laptop"
        listed = (await alice.get("/tokens")).json()["tokens"]
        assert {t["name"] for t in listed} == {"test", "laptop"}
        assert all(set(t) == {"id", "name", "user", "created_at", "last_used_at", "revoked"} for t in listed)
        assert all("token" not in t for t in listed)

        r = await alice.delete(f"/tokens/{created['id']}")
        assert r.status_code == 200 and r.json()["revoked"] is True
        r = await laptop.get("/whoami")
        assert r.status_code == 401 and r.json() == {"error": "API token has been revoked"}

    # only the hash is stored
    rows = await cp.tokens.list_tokens(None)
    assert rows
    from sqlalchemy import select

    from mags.core.schema import tokens

    hashes = {r[0] for r in await fetch(cp.db, select(tokens.c.token_hash))}
    assert hash_token(created["token"]) in hashes and created["token"] not in hashes


async def test_non_admin_limits(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    r = await alice.post("/tokens", json={"user": "bob"})
    assert r.status_code == 403 and "only an admin" in r.json()["error"]
    r = await alice.post("/tokens", json={"admin": True})
    assert r.status_code == 403
    bob_token = (await bob.get("/tokens")).json()["tokens"][0]
    r = await alice.delete(f"/tokens/{bob_token['id']}")
    assert r.status_code == 404
    assert (await alice.delete("/tokens/abc")).status_code == 404
    assert {t["user"] for t in (await alice.get("/tokens")).json()["tokens"]} == {"alice"}


async def test_admin_creates_users(
    cp: ControlPlane, admin: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    r = await admin.post("/tokens", json={"user": "carol", "name": "ci"})
    assert r.status_code == 200 and r.json()["user"] == "carol"
    async with api_client(cp, r.json()["token"]) as carol:
        assert (await carol.get("/whoami")).json() == {"user": "carol", "admin": False, "token_name": "ci"}
    r = await admin.post("/tokens", json={"user": "root2", "admin": True})
    async with api_client(cp, r.json()["token"]) as root2:
        assert (await root2.get("/whoami")).json()["admin"] is True
    users = {t["user"] for t in (await admin.get("/tokens")).json()["tokens"]}
    assert {"admin", "alice", "carol", "root2"} <= users
    r = await admin.post("/tokens", json={"user": "bad name"})
    assert r.status_code == 400
    r = await admin.post("/tokens", json={"nope": 1})
    assert r.status_code == 400 and r.json() == {"error": "unknown field: nope"}


async def test_tenancy(cp: ControlPlane, alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    rid = (await alice.post("/mags-jobs", json={"script": "sleep infinity"})).json()["request_id"]
    await alice.get(f"/mags-jobs/{rid}/status", params={"wait": 2, "until": "running"})
    for method, path in [
        ("GET", f"/mags-jobs/{rid}/status"),
        ("GET", f"/mags-jobs/{rid}/logs"),
        ("GET", f"/mags-jobs/{rid}/logs?follow=true"),
        ("POST", f"/mags-jobs/{rid}/stop"),
    ]:
        r = await bob.request(method, path)
        assert r.status_code == 404, (method, path)
        assert r.json() == {"error": f"job {rid} not found"}
    r = await bob.patch(f"/mags-jobs/{rid}", json={"startup_command": "x"})
    assert r.status_code == 404
    assert (await bob.get("/mags-jobs")).json()["total"] == 0
    assert (await alice.get("/mags-jobs")).json()["total"] == 1
    assert (await alice.get(f"/mags-jobs/{rid}/status")).json()["status"] == "running"
    # admins are tenants too: jobs are per user
    token = await user_token(cp, "mallory")
    async with api_client(cp, token) as mallory:
        assert (await mallory.get(f"/mags-jobs/{rid}/status")).status_code == 404


async def test_unknown_job_404(alice: httpx.AsyncClient) -> None:
    r = await alice.get("/mags-jobs/00000000-0000-0000-0000-000000000000/status")
    assert r.status_code == 404 and r.json() == {
        "error": "job 00000000-0000-0000-0000-000000000000 not found"
    }
