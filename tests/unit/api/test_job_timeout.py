"""``timeout_s`` on ``POST /mags-jobs`` (``mags run --timeout``): the script's wall-clock limit."""

from __future__ import annotations

import time
from typing import Any

import httpx
from scheduler.fake_agent import FakeAgentClient

from mags.server import ControlPlane


async def submit(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    return await client.post("/mags-jobs", json={"script": "true", "type": "inline", **fields})


async def finished(client: httpx.AsyncClient, job_id: str, until: str = "completed,error") -> dict[str, Any]:
    r = await client.get(f"/mags-jobs/{job_id}/status", params={"wait": 10, "until": until})
    return dict(r.json())


async def test_timeout_s_is_validated(alice: httpx.AsyncClient) -> None:
    for bad in (0, -1, 0.5, "10", True, 3601, float("inf")):
        r = await alice.post("/mags-jobs", content=f'{{"script": "true", "timeout_s": {_json(bad)}}}')
        assert r.status_code == 400, (bad, r.text)
        assert (
            r.json()["error"]
            == "timeout_s must be a number of seconds between 1 and 3600 (the server's limit)"
        )
    assert (await submit(alice, timeout_s=None)).status_code == 200  # null: not given
    assert (await submit(alice, timeout_s=3600)).status_code == 200


def _json(value: Any) -> str:
    import json

    return "1e999" if value == float("inf") else json.dumps(value)


async def test_the_agent_gets_the_limit_and_the_job_shows_it(
    alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    ids = {
        "own": (await submit(alice, timeout_s=2.5)).json()["request_id"],
        "default": (await submit(alice)).json()["request_id"],
        "persistent": (await submit(alice, script="sleep infinity", persistent=True)).json()["request_id"],
        "persistent-own": (await submit(alice, workspace_id="p2", persistent=True, timeout_s=60)).json()[
            "request_id"
        ],
    }
    for job_id in ids.values():
        await finished(alice, job_id, "running,completed,error")
    sent = {
        name: next(r for r in agent.created if r.job_id == job_id).timeout_s for name, job_id in ids.items()
    }
    # persistent scripts have no default limit (a web server); one that asks for one gets it
    assert sent == {"own": 2.5, "default": 3600.0, "persistent": None, "persistent-own": 60.0}
    shown = (await alice.get(f"/mags-jobs/{ids['own']}/status")).json()
    assert shown["timeout_s"] == 2.5
    assert (await alice.get(f"/mags-jobs/{ids['default']}/status")).json()["timeout_s"] is None


async def test_a_script_past_its_timeout_ends_error_timed_out(alice: httpx.AsyncClient) -> None:
    t = time.monotonic()
    job_id = (await submit(alice, script="sleep 30", timeout_s=1)).json()["request_id"]
    job = await finished(alice, job_id)
    assert time.monotonic() - t < 5
    assert job["status"] == "error" and job["exit_code"] == 137
    assert job["error_message"] == "timed out after 1 s"
    assert any(h["reason"] == "script exited with code 137: timed out after 1 s" for h in job["history"])


async def test_no_server_limit_still_bounds_timeout_s(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    cp.settings.max_job_seconds = 0  # no server limit
    assert (await submit(alice, timeout_s=7 * 86400)).status_code == 200
    r = await submit(alice, timeout_s=400 * 86400)
    assert r.status_code == 400 and "between 1 and 31622400" in r.json()["error"]
