"""``/mags-cron`` in-process: create, list, get by id or name, patch, delete, validation, tenancy."""

from __future__ import annotations

import httpx

from cron.conftest import START, create, ts
from mags.server import ControlPlane


async def test_create_list_get_delete(alice: httpx.AsyncClient) -> None:
    cron = await create(
        alice,
        name="nightly",
        cron_expression="0 3 * * *",
        script="echo backup",
        workspace_id="data",
        environment={"TOKEN": "s3cret"},
        persistent=True,
    )
    assert cron["name"] == "nightly" and cron["cron_expression"] == "0 3 * * *"
    assert cron["script"] == "echo backup" and cron["workspace_id"] == "data" and cron["persistent"] is True
    assert cron["enabled"] is True and cron["timezone"] == "UTC" and cron["overlap_policy"] == "skip"
    assert cron["environment_keys"] == ["TOKEN"] and "s3cret" not in str(cron)
    assert cron["next_run_at"] == "2030-01-01T03:00:00.000Z"
    assert cron["last_run_at"] is None and cron["last_job_id"] is None and cron["last_status"] is None

    listed = (await alice.get("/mags-cron")).json()
    assert [c["id"] for c in listed["cron_jobs"]] == [cron["id"]] and listed["total"] == 1

    for ref in (cron["id"], "nightly"):  # the name works wherever an id does
        got = (await alice.get(f"/mags-cron/{ref}")).json()
        assert got["id"] == cron["id"] and got["runs"] == []

    r = await alice.delete("/mags-cron/nightly")
    assert r.status_code == 200 and r.json()["success"] is True and r.json()["id"] == cron["id"]
    assert (await alice.get(f"/mags-cron/{cron['id']}")).status_code == 404
    assert (await alice.get("/mags-cron")).json()["cron_jobs"] == []


async def test_timezone_and_disabled_at_creation(alice: httpx.AsyncClient) -> None:
    tokyo = await create(alice, name="tokyo", cron_expression="0 9 * * *", timezone="Asia/Tokyo")
    assert tokyo["timezone"] == "Asia/Tokyo" and tokyo["next_run_at"] == "2030-01-02T00:00:00.000Z"
    off = await create(alice, name="off", enabled=False)
    assert off["enabled"] is False and off["next_run_at"] is None


async def test_validation_errors(alice: httpx.AsyncClient) -> None:
    base = {"name": "c", "cron_expression": "* * * * *", "script": "echo"}
    cases = [
        ({"cron_expression": "61 * * * *"}, 'cron_expression "61 * * * *": minute must be 0-59'),
        ({"cron_expression": "* * * * * *"}, "must have 5 fields"),
        ({"cron_expression": "@reboot"}, "@reboot is not supported"),
        ({"cron_expression": None}, "cron_expression is required"),
        ({"name": None}, "name is required"),
        ({"name": "bad name!"}, "name must be 1-63 characters"),
        ({"script": ""}, "script is required"),
        ({"script": "   "}, "script must not be empty"),
        ({"timezone": "Mars/Base"}, 'timezone "Mars/Base": unknown time zone'),
        ({"environment": {"1X": "y"}}, "environment variable name '1X' is invalid"),
        ({"environment": ["A"]}, "environment must be an object of string to string"),
        ({"workspace_id": "-x"}, "workspace_id must be 1-63 characters"),
        ({"persistent": "yes"}, "persistent must be true or false"),
        ({"enabled": 1}, "enabled must be true or false"),
        ({"overlap_policy": "queue"}, "overlap_policy must be one of: skip, allow"),
        ({"no_sleep": True}, "unknown field: no_sleep"),
    ]
    for change, message in cases:
        r = await alice.post("/mags-cron", json={**base, **change})
        assert r.status_code == 400, (change, r.text)
        assert message in r.json()["error"], (change, r.json())
    missing = {k: v for k, v in base.items() if k != "cron_expression"}
    r = await alice.post("/mags-cron", json=missing)
    assert r.status_code == 400 and "cron_expression is required" in r.json()["error"]
    assert (await alice.get("/mags-cron")).json()["cron_jobs"] == []


async def test_names_are_unique_per_user(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    await create(alice, name="same")
    r = await alice.post("/mags-cron", json={"name": "same", "cron_expression": "0 * * * *", "script": "x"})
    assert r.status_code == 409 and "already exists" in r.json()["error"]
    await create(bob, name="same")  # another user may use the name
    other = await create(alice, name="other")
    r = await alice.patch(f"/mags-cron/{other['id']}", json={"name": "same"})
    assert r.status_code == 409


async def test_another_users_cron_is_404(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    cron = await create(alice, name="mine")
    for ref in (cron["id"], "mine"):
        assert (await bob.get(f"/mags-cron/{ref}")).status_code == 404
        assert (await bob.patch(f"/mags-cron/{ref}", json={"enabled": False})).status_code == 404
        r = await bob.delete(f"/mags-cron/{ref}")
        assert r.status_code == 404 and r.json() == {"error": f"cron job {ref} not found"}
    assert (await bob.get("/mags-cron")).json()["cron_jobs"] == []
    assert (await alice.get(f"/mags-cron/{cron['id']}")).json()["enabled"] is True


async def test_patch_recomputes_next_run_at(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    cron = await create(alice, name="p", cron_expression="0 * * * *")
    assert cron["next_run_at"] == "2030-01-01T01:00:00.000Z"
    url = f"/mags-cron/{cron['id']}"

    r = await alice.patch(url, json={"cron_expression": "*/10 * * * *"})
    assert r.status_code == 200 and r.json()["next_run_at"] == "2030-01-01T00:10:00.000Z"
    r = await alice.patch(url, json={"timezone": "Asia/Kolkata"})  # UTC+05:30: */10 is still */10
    assert r.json()["timezone"] == "Asia/Kolkata" and r.json()["next_run_at"] == "2030-01-01T00:10:00.000Z"
    r = await alice.patch(url, json={"cron_expression": "0 6 * * *"})  # 06:00 IST = 00:30 UTC
    assert r.json()["next_run_at"] == "2030-01-01T00:30:00.000Z"

    # other fields keep the next run
    r = await alice.patch(url, json={"script": "echo changed", "environment": {"A": "1"}, "timezone": None})
    body = r.json()
    assert (
        body["script"] == "echo changed" and body["environment_keys"] == ["A"] and body["timezone"] == "UTC"
    )
    assert body["next_run_at"] == "2030-01-01T06:00:00.000Z"
    assert ts(body["updated_at"]) == START

    r = await alice.patch(url, json={"enabled": False})
    assert r.json()["enabled"] is False and r.json()["next_run_at"] is None
    cp.clock.advance(3 * 86400)  # type: ignore[attr-defined]
    r = await alice.patch(url, json={"enabled": True})  # from now: no catch-up of the days it was off
    assert r.json()["next_run_at"] == "2030-01-04T06:00:00.000Z"


async def test_patch_validation(alice: httpx.AsyncClient) -> None:
    cron = await create(alice, name="v")
    url = f"/mags-cron/{cron['id']}"
    for change, message in [
        ({}, "nothing to update"),
        ({"cron_expression": "* 99 * * *"}, "hour must be 0-23"),
        ({"script": None}, "script is required"),
        ({"name": ""}, "name is required"),
        ({"color": "red"}, "unknown field: color"),
        ({"workspace_id": "ok", "environment": {"A": 1}}, "value of A is not a string"),
    ]:
        r = await alice.patch(url, json=change)
        assert r.status_code == 400 and message in r.json()["error"], (change, r.text)
    got = (await alice.get(url)).json()
    assert got["workspace_id"] is None and got["cron_expression"] == "* * * * *"


async def test_unauthenticated(cp: ControlPlane) -> None:
    from scheduler.helpers import api_client

    async with api_client(cp) as anon:
        assert (await anon.get("/mags-cron")).status_code == 401
        assert (await anon.post("/mags-cron", json={})).status_code == 401
