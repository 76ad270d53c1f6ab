"""Access, exec, sync and URLs sent right after ``run``: they wait for the sandbox, bounded.

The published docs' SSH example is ``job = run('sleep 3600', workspace_id='dev',
persistent=True)`` then at once ``enable_access(job.request_id, 22)``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import api_client, make_settings, running_control_plane, user_token

START_DELAY_S = 0.4


@asynccontextmanager
async def plane(
    tmp_path: Path, start_delay: float = START_DELAY_S, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A control plane whose agent takes ``start_delay`` to create each sandbox; alice's client."""
    agent = FakeAgentClient(start_delay=start_delay)
    async with running_control_plane(make_settings(tmp_path, **settings), [agent]) as cp:
        client = api_client(cp, await user_token(cp, "alice"))
        async with client:
            yield client


async def run(client: httpx.AsyncClient, script: str = "sleep 3600", **fields: Any) -> str:
    body = {"script": script, "type": "inline", "workspace_id": "dev", "persistent": True, **fields}
    r = await client.post("/mags-jobs", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


async def test_ssh_access_right_after_run_waits_for_the_sandbox(tmp_path: Path) -> None:
    async with plane(tmp_path) as alice:
        job = await run(alice)
        assert (await alice.get(f"/mags-jobs/{job}/status")).json()["vm_status"] in ("pending", "starting")
        t = time.monotonic()
        r = await alice.post(f"/mags-jobs/{job}/access", json={"port": 22})
        assert r.status_code == 200, r.text
        assert time.monotonic() - t < START_DELAY_S + 2  # answered once it started, not after a poll period
        assert r.json()["ssh_private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert (await alice.get(f"/mags-jobs/{job}/status")).json()["vm_status"] == "running"


async def test_exec_sync_and_url_right_after_run_wait_too(tmp_path: Path) -> None:
    async with plane(tmp_path) as alice:
        job = await run(alice)
        r = await alice.post(f"/mags-jobs/{job}/exec", json={"command": "echo hi"})
        assert r.status_code == 200 and r.json()["stdout"] == "hi\n", r.text

        job2 = await run(alice, workspace_id="web")
        r = await alice.post(f"/mags-jobs/{job2}/access", json={"port": 8080})
        assert r.status_code == 200 and r.json()["url"].startswith("http://"), r.text
        assert (await alice.get(f"/mags-jobs/{job2}/status")).json()["vm_status"] == "running"

        job3 = await run(alice, workspace_id="synced")
        r = await alice.post(f"/mags-jobs/{job3}/sync")
        assert r.status_code == 200 and r.json()["success"] is True, r.text


async def test_a_sandbox_still_starting_after_the_wait_is_a_clear_409(tmp_path: Path) -> None:
    async with plane(tmp_path, start_delay=3.0, start_wait_s=0.3) as alice:
        job = await run(alice)
        t = time.monotonic()
        for path, body in (
            (f"/mags-jobs/{job}/access", {"port": 22}),
            (f"/mags-jobs/{job}/exec", {"command": "true"}),
        ):
            r = await alice.post(path, json=body)
            assert r.status_code == 409, r.text
            assert r.json() == {
                "error": f"the sandbox of job {job} is still starting (waited 0.3 s): try again in a moment",
                "code": "sandbox_starting",
            }
        assert time.monotonic() - t < 2.5
        # a URL is only a name: it is given anyway, and the proxy waits for the sandbox itself
        r = await alice.post(f"/mags-jobs/{job}/access", json={"port": 8080})
        assert r.status_code == 200, r.text


async def test_a_sandbox_that_fails_to_start_answers_at_once(tmp_path: Path) -> None:
    async with plane(tmp_path, start_delay=0.2) as alice:
        job = await run(alice, "fail-start")
        t = time.monotonic()
        r = await alice.post(f"/mags-jobs/{job}/access", json={"port": 22})
        assert r.status_code == 409 and "no running or sleeping sandbox" in r.json()["error"], r.text
        assert time.monotonic() - t < 2
        r = await alice.post(f"/mags-jobs/{job}/exec", json={"command": "true"})
        assert r.status_code == 409 and "not running" in r.json()["error"]
