"""Logs: pagination with ``after``, server-sent-event follow, the per-job line cap."""

from __future__ import annotations

import json
from typing import Any

import httpx

from api.test_jobs_api import submit, wait_done


def parse_sse(text: str) -> list[tuple[str, Any, str | None]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            fields[key] = value
        events.append((fields["event"], json.loads(fields["data"]), fields.get("id")))
    return events


async def test_follow_streams_until_script_ends(alice: httpx.AsyncClient) -> None:
    rid = await submit(alice, "echo one; sleep 0.2; echo two >&2; exit 2")
    r = await alice.get(f"/mags-jobs/{rid}/logs", params={"follow": "true"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert [e[0] for e in events] == ["log", "log", "end"]
    assert events[0][1]["message"] == "one" and events[0][1]["seq"] == 1 and events[0][2] == "1"
    assert events[1][1] == {**events[1][1], "source": "stderr", "message": "two", "seq": 2}
    end = events[2][1]
    assert end["request_id"] == rid and end["status"] == "error" and end["exit_code"] == 2


async def test_follow_after_and_last_event_id(alice: httpx.AsyncClient) -> None:
    rid = await submit(alice, "echo a; echo b; echo c")
    await wait_done(alice, rid)
    events = parse_sse((await alice.get(f"/mags-jobs/{rid}/logs", params={"follow": 1, "after": 1})).text)
    assert [e[1].get("message") for e in events if e[0] == "log"] == ["b", "c"]
    r = await alice.get(f"/mags-jobs/{rid}/logs", params={"follow": 1}, headers={"Last-Event-ID": "2"})
    assert [e[1]["message"] for e in parse_sse(r.text) if e[0] == "log"] == ["c"]


async def test_follow_persistent_ends_when_script_exits(alice: httpx.AsyncClient) -> None:
    rid = await submit(alice, "echo ready", persistent=True, workspace_id="web")
    r = await alice.get(f"/mags-jobs/{rid}/logs", params={"follow": "true"}, timeout=10)
    events = parse_sse(r.text)
    assert events[-1][0] == "end"
    assert events[-1][1]["status"] == "completed" and events[-1][1]["vm_status"] == "running"


async def test_logs_pagination(alice: httpx.AsyncClient) -> None:
    rid = await submit(alice, "spam 10")
    await wait_done(alice, rid)
    page = (await alice.get(f"/mags-jobs/{rid}/logs", params={"after": 0, "limit": 4})).json()
    assert [e["seq"] for e in page["logs"]] == [1, 2, 3, 4]
    assert page["has_more"] is True and page["next_after"] == 4
    page = (await alice.get(f"/mags-jobs/{rid}/logs", params={"after": 8, "limit": 4})).json()
    assert [e["message"] for e in page["logs"]] == ["line 9", "line 10"]
    assert page["has_more"] is False and page["next_after"] == 10


async def test_log_cap(alice: httpx.AsyncClient) -> None:
    # the fixture caps logs at 50 lines per job
    rid = await submit(alice, "spam 80; echo after")
    job = await wait_done(alice, rid)
    assert job["status"] == "completed"
    logs = (await alice.get(f"/mags-jobs/{rid}/logs")).json()["logs"]
    assert len(logs) == 51
    assert logs[49]["message"] == "line 50"
    assert logs[50]["source"] == "system" and logs[50]["message"].startswith("log truncated")


async def test_status_can_carry_the_logs_of_a_finished_job(alice: httpx.AsyncClient) -> None:
    rid = await submit(alice, "echo a; echo b")
    st = (await alice.get(f"/mags-jobs/{rid}/status", params={"wait": 10, "include": "logs"})).json()
    assert st["status"] == "completed"
    assert [e["message"] for e in st["logs"]] == ["a", "b"] and st["logs_has_more"] is False
    plain = (await alice.get(f"/mags-jobs/{rid}/status")).json()
    assert "logs" not in plain


async def test_submit_can_wait_for_the_result(alice: httpx.AsyncClient) -> None:
    """``POST /mags-jobs?wait=S&include=logs``: submit and long-poll in one request."""
    r = await alice.post("/mags-jobs", params={"wait": 10, "include": "logs"}, json={"script": "echo a; exit 4"})
    assert r.status_code == 200
    done = r.json()
    assert done["request_id"] and done["status"] == "error" and done["exit_code"] == 4
    assert [e["message"] for e in done["logs"]] == ["a"] and done["logs_has_more"] is False
    # a job still running when the wait ends: its current status, no logs
    r = await alice.post("/mags-jobs", params={"wait": 0.1, "include": "logs"}, json={"script": "sleep 5"})
    slow = r.json()
    assert slow["status"] in ("pending", "running") and "logs" not in slow
    assert (await alice.post(f"/mags-jobs/{slow['request_id']}/stop")).status_code == 200
    # bad waits are refused before anything is submitted
    before = (await alice.get("/mags-jobs")).json()["total"]
    r = await alice.post("/mags-jobs", params={"wait": "soon"}, json={"script": "echo x"})
    assert r.status_code == 400 and "wait" in r.json()["error"]
    assert (await alice.get("/mags-jobs")).json()["total"] == before
