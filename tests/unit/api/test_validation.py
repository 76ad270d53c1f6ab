"""Every submission rule answers 400 (413 for sizes) with {"error": <sentence>}."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post("/mags-jobs", json=body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "script is required"),
        ({"script": ""}, "script must not be empty"),
        ({"script": "   \n"}, "script must not be empty"),
        ({"script": 42}, "script must be a string"),
        ({"script": "a\x00b"}, "script must not contain NUL characters"),
        ({"script": "x", "type": "file"}, 'type must be "inline"'),
        (
            {"script": "x", "ephemeral": True, "workspace_id": "w"},
            "ephemeral cannot be combined with workspace_id",
        ),
        (
            {"script": "x", "ephemeral": True, "persistent": True},
            "ephemeral cannot be combined with persistent",
        ),
        (
            {"script": "x", "ephemeral": True, "base_workspace_id": "g"},
            "ephemeral cannot be combined with base_workspace_id",
        ),
        ({"script": "x", "no_sleep": True}, "no_sleep requires persistent"),
        ({"script": "x", "persistent": "yes"}, "persistent must be true or false"),
        ({"script": "x", "environment": ["A=1"]}, "environment must be an object of string to string"),
        (
            {"script": "x", "environment": {"A": 1}},
            "environment must be an object of string to string (value of A is not a string)",
        ),
        (
            {"script": "x", "environment": {"A": "a\x00"}},
            "environment variable A must not contain NUL characters",
        ),
        ({"script": "x", "disk_gb": 0}, "disk_gb must be an integer between 1 and 100"),
        ({"script": "x", "disk_gb": 101}, "disk_gb must be an integer between 1 and 100"),
        ({"script": "x", "disk_gb": True}, "disk_gb must be an integer between 1 and 100"),
        ({"script": "x", "disk_gb": "2"}, "disk_gb must be an integer between 1 and 100"),
        ({"script": "x", "rootfs_type": "alpine"}, "rootfs_type must be one of: standard"),
        ({"script": "x", "file_ids": "abc"}, "file_ids must be a list of strings"),
        ({"script": "x", "file_ids": [""]}, "file_ids must be a list of strings"),
        ({"script": "x", "workspace_id": "g", "base_workspace_id": "g"}, "a workspace cannot be its own base"),
        ({"script": "x", "frobnicate": 1}, "unknown field: frobnicate"),
        ({"script": "x", "a": 1, "b": 2}, "unknown fields: a, b"),
        ({"script": "x", "startup_command": 5}, "startup_command must be a string"),
    ],
)
async def test_rejected(alice: httpx.AsyncClient, body: dict[str, Any], message: str) -> None:
    r = await post(alice, body)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": message}


@pytest.mark.parametrize("name", ["", "-x", "a" * 64, "a b", "a/b", "ü", ".hidden"])
@pytest.mark.parametrize("field", ["name", "workspace_id"])
async def test_bad_names(alice: httpx.AsyncClient, field: str, name: str) -> None:
    r = await post(alice, {"script": "x", field: name})
    if name == "":
        assert r.status_code == 200  # empty means "not given", like the SDKs' falsy checks
        return
    assert r.status_code == 400
    assert r.json()["error"].startswith(f"{field} must be 1-63 characters")


async def test_bad_env_name(alice: httpx.AsyncClient) -> None:
    r = await post(alice, {"script": "x", "environment": {"1BAD": "v"}})
    assert r.status_code == 400 and "environment variable name '1BAD' is invalid" in r.json()["error"]
    r = await post(alice, {"script": "x", "environment": {"A=B": "v"}})
    assert r.status_code == 400


async def test_script_too_large_is_413(alice: httpx.AsyncClient) -> None:
    r = await post(alice, {"script": "x" * (1024 * 1024 + 1)})
    assert r.status_code == 413
    assert r.json() == {"error": "script is larger than 1048576 bytes"}
    r = await post(alice, {"script": "x" * (1024 * 1024)})
    assert r.status_code == 200


async def test_huge_body_is_413(alice: httpx.AsyncClient) -> None:
    r = await alice.post("/mags-jobs", content=b"{" + b" " * (3 * 1024 * 1024) + b"}")
    assert r.status_code == 413 and "too large" in r.json()["error"]


async def test_bad_json(alice: httpx.AsyncClient) -> None:
    r = await alice.post("/mags-jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("request body is not valid JSON")
    r = await alice.post("/mags-jobs", json=["script"])
    assert r.status_code == 400 and r.json() == {"error": "request body must be a JSON object"}
    r = await alice.post("/mags-jobs")
    assert r.status_code == 400 and r.json() == {"error": "request body must be a JSON object"}


async def test_accepted_shapes(alice: httpx.AsyncClient) -> None:
    # what the published CLI / SDKs send, including explicit nulls and falses
    bodies = [
        {"script": "echo hi", "type": "inline", "persistent": False, "name": None, "environment": None},
        {"script": "echo hi", "ephemeral": True, "persistent": False},
        {
            "script": "sleep infinity",
            "type": "inline",
            "persistent": True,
            "name": "dev",
            "workspace_id": "dev",
            "startup_command": "sleep infinity",
            "no_sync": True,
            "disk_gb": 4,
        },
        {"script": "x", "environment": {"A_1": "v=1", "_B": ""}, "file_ids": [], "rootfs_type": "standard"},
        {"script": "x", "workspace_id": "w", "persistent": True, "no_sleep": True},
    ]
    for body in bodies:
        r = await post(alice, body)
        assert r.status_code == 200, (body, r.text)


async def test_persistent_without_workspace_gets_one(alice: httpx.AsyncClient) -> None:
    r = await post(alice, {"script": "sleep infinity", "persistent": True, "name": "web"})
    job = (await alice.get(f"/mags-jobs/{r.json()['request_id']}/status")).json()
    assert job["workspace_id"] == "web"
    r = await post(alice, {"script": "sleep infinity", "persistent": True})
    rid = r.json()["request_id"]
    job = (await alice.get(f"/mags-jobs/{rid}/status")).json()
    assert job["workspace_id"] == f"job-{rid[:8]}"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"page": 0}, "page must be an integer between 1 and 1000000"),
        ({"page": "x"}, "page must be an integer between 1 and 1000000"),
        ({"page_size": 501}, "page_size must be an integer between 1 and 500"),
    ],
)
async def test_list_params(alice: httpx.AsyncClient, params: dict[str, Any], message: str) -> None:
    r = await alice.get("/mags-jobs", params=params)
    assert r.status_code == 400 and r.json() == {"error": message}


async def test_status_params(alice: httpx.AsyncClient) -> None:
    rid = (await post(alice, {"script": "true"})).json()["request_id"]
    r = await alice.get(f"/mags-jobs/{rid}/status", params={"wait": 61})
    assert r.status_code == 400 and r.json() == {"error": "wait must be a number between 0 and 60"}
    r = await alice.get(f"/mags-jobs/{rid}/status", params={"wait": "nan"})
    assert r.status_code == 400
    r = await alice.get(f"/mags-jobs/{rid}/status", params={"wait": 1, "until": "done"})
    assert r.status_code == 400 and r.json()["error"].startswith("until must be a comma-separated list of")
    r = await alice.get(f"/mags-jobs/{rid}/logs", params={"follow": "maybe"})
    assert r.status_code == 400 and r.json() == {"error": "follow must be true or false"}
