"""A job's uploads must land on distinct /uploads/<name> paths: a clash is a 400, never an overwrite."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from scheduler.fake_agent import FakeAgentClient
from workspaces.helpers import status, submit

from mags.core.files import check_distinct_names
from mags.errors import ValidationError
from mags.server import ControlPlane


async def upload(client: httpx.AsyncClient, name: str, data: bytes) -> dict[str, Any]:
    r = await client.post("/mags-files", files={"file": (name, data)})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_same_basename_from_two_dirs_is_refused_naming_the_clash(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    # what `mags run -f a/data.csv -f b/data.csv` sends: two uploads both named data.csv
    a = await upload(alice, "a/data.csv", b"first\n")
    b = await upload(alice, "b/data.csv", b"second\n")
    assert a["name"] == b["name"] == "data.csv"
    r = await alice.post(
        "/mags-jobs", json={"script": "cat /uploads/data.csv", "file_ids": [a["file_id"], b["file_id"]]}
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert a["file_id"] in error and b["file_id"] in error and "/uploads/data.csv" in error
    assert agent.created == []  # nothing was started


async def test_names_that_only_sanitize_alike_clash_too(alice: httpx.AsyncClient) -> None:
    a = await upload(alice, "report.txt", b"1")
    b = await upload(alice, "report..txt ", b"2")  # the ".." run and the space go
    assert b["name"] == "report.txt"
    r = await alice.post("/mags-jobs", json={"script": "true", "file_ids": [a["file_id"], b["file_id"]]})
    assert r.status_code == 400 and "report.txt" in r.json()["error"]


async def test_distinct_names_and_a_repeated_id_still_work(
    alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    a = await upload(alice, "a/data.csv", b"1")
    b = await upload(alice, "data.CSV", b"2")  # case differs: distinct files in /uploads
    job = await submit(alice, "true", file_ids=[a["file_id"], b["file_id"], a["file_id"]])
    await status(alice, job, until="completed")
    req = next(r for r in agent.created if r.job_id == job)
    assert [f.name for f in req.files] == ["data.csv", "data.CSV"]


def row(file_id: str, name: str) -> Any:
    return SimpleNamespace(_mapping={"id": file_id, "name": name})


def test_check_distinct_names() -> None:
    check_distinct_names([row("file-1", "a"), row("file-2", "b"), row("file-1", "a")])
    check_distinct_names([])
    with pytest.raises(ValidationError, match=r"file-1 and file-3 would both be placed at /uploads/a"):
        check_distinct_names([row("file-1", "a"), row("file-2", "b"), row("file-3", "a")])
