"""``AsyncMags`` runs the same flows as ``Mags``."""

from __future__ import annotations

import httpx
import pytest

from mags import AsyncMags
from mags.errors import ClientError

JOB = "5b0e7a52-2a4e-4a53-9a43-6f1f3f1f0b11"


@pytest.fixture
async def amags(api):
    client = AsyncMags(api_token="tok", api_url="http://mags.test", transport=httpx.MockTransport(api))
    client.slept = []

    async def fake_sleep(seconds):
        client.slept.append(seconds)

    client._sleep = fake_sleep
    yield client
    await client.close()


async def test_run_and_wait(api, amags):
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on(
        "GET", f"/mags-jobs/{JOB}/status", {"status": "completed", "exit_code": 0, "script_duration_ms": 7}
    )
    api.on("GET", f"/mags-jobs/{JOB}/logs", {"logs": [{"source": "stdout", "message": "hi"}]})
    result = await amags.run_and_wait("echo hi")
    assert result["status"] == "completed" and result["duration_ms"] == 7
    assert api.requests[1].url.params["until"] == "completed,error"
    assert amags.slept == []


async def test_new_exec_and_errors(api, amags):
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "running", "vm_id": "v"})
    api.on(
        "GET",
        "/mags-jobs",
        {
            "jobs": [{"request_id": JOB, "name": "dev", "workspace_id": "dev", "status": "running"}],
            "total": 1,
        },
    )
    api.on("POST", f"/mags-jobs/{JOB}/exec", {"exit_code": 0, "stdout": "ok", "stderr": ""})
    assert (await amags.new("dev"))["status"] == "running"
    assert await amags.exec("dev", "true") == {"exit_code": 0, "output": "ok", "stderr": ""}
    with pytest.raises(ClientError, match="no job found"):
        await amags.stop("ghost")


async def test_follow_logs(api, amags, make_sse):
    api.on(
        "GET",
        f"/mags-jobs/{JOB}/logs",
        make_sse(("log", {"seq": 0, "source": "stdout", "message": "a"}), ("end", {"status": "completed"})),
    )
    assert [e["message"] async for e in amags.follow_logs(JOB)] == ["a"]
    kinds = [e.kind async for e in amags.follow_events(JOB)]
    assert kinds == ["log", "end"]


async def test_follow_fallback_polling(api, amags):
    api.on("GET", f"/mags-jobs/{JOB}/logs", {"logs": []}, {"logs": [{"source": "stdout", "message": "z"}]})
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "completed", "exit_code": 1})
    events = [e async for e in amags.follow_events(JOB)]
    assert [e.kind for e in events] == ["log", "end"]


async def test_upload(api, amags, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello")
    api.on("POST", "/mags-files", {"file_id": "f9"})
    assert await amags.upload_files([path]) == ["f9"]
    assert b"hello" in api.requests[0].content


async def test_unreachable():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    async with AsyncMags(api_token="t", api_url="http://h:1", transport=httpx.MockTransport(refuse)) as m:
        with pytest.raises(ClientError, match="cannot reach mags server at http://h:1"):
            await m.list_jobs()
