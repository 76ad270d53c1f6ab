"""Public URLs on the API: ``POST .../access`` for ports but 22, and ``/mags-url-aliases``."""

from __future__ import annotations

from typing import Any

import httpx

from mags.core.urls import Miss, Target, UrlStore
from mags.server import ControlPlane


async def running_job(client: httpx.AsyncClient, workspace: str = "web", persistent: bool = True) -> str:
    body: dict[str, Any] = {"script": "sleep infinity", "workspace_id": workspace, "persistent": persistent}
    r = await client.post("/mags-jobs", json=body)
    assert r.status_code == 200, r.text
    job_id = r.json()["request_id"]
    r = await client.get(f"/mags-jobs/{job_id}/status", params={"wait": 5, "until": "running"})
    assert r.json()["status"] == "running", r.text
    return str(job_id)


async def test_access_gives_a_stable_unguessable_subdomain(alice: httpx.AsyncClient, cp: ControlPlane) -> None:
    job_id = await running_job(alice)
    r = await alice.post(f"/mags-jobs/{job_id}/access", json={"port": 8080})
    assert r.status_code == 200, r.text
    first = r.json()
    sub = first["subdomain"]
    assert first["success"] is True
    assert len(sub) == 16 and sub.isalnum() and sub == sub.lower()
    assert first["url"] == f"http://{sub}.localhost:8091"
    again = (await alice.post(f"/mags-jobs/{job_id}/access", json={"port": 8080})).json()
    assert again["subdomain"] == sub and again["url"] == first["url"]
    other = (await alice.post(f"/mags-jobs/{job_id}/access", json={"port": 3000})).json()
    assert other["subdomain"] == sub and other["port_url"] == f"http://{sub}-3000.localhost:8091"
    assert other["ports"] == [3000, 8080]
    assert (await alice.get(f"/mags-jobs/{job_id}/status")).json()["subdomain"] == sub
    store = UrlStore(cp.db, cp.clock)
    route = await store.route(sub)
    assert isinstance(route, Target) and route.port == 3000  # the bare name serves the port enabled last
    assert isinstance(await store.route(f"{sub}-8080"), Target)
    assert await store.route(f"{sub}-9999") == Miss("port", "port 9999 of this sandbox has no public URL")
    assert (await store.route("nosuchname")).reason == "unknown"  # type: ignore[union-attr]


async def test_access_needs_a_persistent_live_job_of_the_caller(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    job_id = await running_job(alice, "eph", persistent=False)
    r = await alice.post(f"/mags-jobs/{job_id}/access", json={"port": 8080})
    assert r.status_code == 400 and "-p" in r.json()["error"]
    mine = await running_job(alice, "mine")
    assert (await bob.post(f"/mags-jobs/{mine}/access", json={"port": 8080})).status_code == 404
    await alice.post(f"/mags-jobs/{mine}/stop")
    r = await alice.post(f"/mags-jobs/{mine}/access", json={"port": 8080})
    assert r.status_code == 409


async def test_aliases_create_list_delete_and_tenancy(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, cp: ControlPlane
) -> None:
    job_id = await running_job(alice, "site")
    await alice.post(f"/mags-jobs/{job_id}/access", json={"port": 3000})
    r = await alice.post("/mags-url-aliases", json={"subdomain": "My-App", "workspace_id": "site"})
    assert r.status_code == 200, r.text
    alias = r.json()
    assert alias["subdomain"] == "my-app" and alias["url"] == "http://my-app.localhost:8091"
    assert alias["id"] and alias["workspace_id"] == "site" and alias["port"] == 3000
    listed = (await alice.get("/mags-url-aliases")).json()
    assert listed["total"] == 1 and listed["aliases"][0]["subdomain"] == "my-app"
    assert (await bob.get("/mags-url-aliases")).json() == {"aliases": [], "total": 0}

    route = await UrlStore(cp.db, cp.clock).route("my-app")
    assert isinstance(route, Target) and route.job_id == job_id and route.port == 3000

    # taken across tenants while it exists; another tenant cannot delete it
    await running_job(bob, "site")
    r = await bob.post("/mags-url-aliases", json={"subdomain": "my-app", "workspace_id": "site"})
    assert r.status_code == 409 and "taken" in r.json()["error"]
    assert (await bob.delete("/mags-url-aliases/my-app")).status_code == 404
    # the owner may re-point it (idempotent create)
    assert (await alice.post("/mags-url-aliases", json={"subdomain": "my-app", "workspace_id": "site"})).status_code == 200
    r = await alice.delete("/mags-url-aliases/my-app")
    assert r.status_code == 200 and r.json()["subdomain"] == "my-app"
    assert (await alice.delete("/mags-url-aliases/my-app")).status_code == 404
    # freed: now bob may take it
    assert (await bob.post("/mags-url-aliases", json={"subdomain": "my-app", "workspace_id": "site"})).status_code == 200


async def test_alias_names_are_validated(alice: httpx.AsyncClient) -> None:
    await running_job(alice, "w1")
    for bad, why in [
        ("-x", "DNS label"), ("x-", "DNS label"), ("a_b", "DNS label"), ("a.b", "DNS label"), ("a" * 64, "DNS label"),
        ("", "required"), ("api", "reserved"), ("www", "reserved"), ("xn--abc", "reserved"),
        ("abcdefghijklmnop", "generated"), ("abcdefghijklmnop-80", "generated"),
    ]:
        r = await alice.post("/mags-url-aliases", json={"subdomain": bad, "workspace_id": "w1"})
        assert r.status_code == 400, (bad, r.text)
        assert why in r.json()["error"], (bad, r.json())
    r = await alice.post("/mags-url-aliases", json={"subdomain": "ok", "workspace_id": "nope"})
    assert r.status_code == 404
    r = await alice.post("/mags-url-aliases", json={"subdomain": "ok", "workspace_id": "w1", "domain": "evil.com"})
    assert r.status_code == 400
    r = await alice.post("/mags-url-aliases", json={"subdomain": "ok", "workspace_id": "w1", "domain": "localhost"})
    assert r.status_code == 200
    r = await alice.post("/mags-url-aliases", json={"subdomain": "ok2", "workspace_id": "w1", "port": 1})
    assert r.status_code == 400 and "unknown field" in r.json()["error"]


async def test_alias_follows_the_workspace_to_its_newest_live_job(alice: httpx.AsyncClient, cp: ControlPlane) -> None:
    first = await running_job(alice, "follow")
    await alice.post("/mags-url-aliases", json={"subdomain": "follow-me", "workspace_id": "follow"})
    store = UrlStore(cp.db, cp.clock)
    assert (await store.route("follow-me")).job_id == first  # type: ignore[union-attr]
    await alice.post(f"/mags-jobs/{first}/stop")
    stopped = await store.route("follow-me")
    assert isinstance(stopped, Target) and stopped.job_id == first and stopped.vm_status == "stopped"
    second = await running_job(alice, "follow")
    route = await store.route("follow-me")
    assert isinstance(route, Target) and route.job_id == second and route.port == 8080
