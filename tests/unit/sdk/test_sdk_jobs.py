"""The exact requests the sync client sends for job operations, and the shapes it returns."""

from __future__ import annotations

import time

import pytest

from mags.errors import ClientError, ValidationError

JOB = "5b0e7a52-2a4e-4a53-9a43-6f1f3f1f0b11"
JOB2 = "0d6f3c1c-8a4f-4b9e-8d52-6c0c6f0f2a22"


def test_run_sends_the_published_payload(api, mags_client):
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    out = mags_client.run(
        "echo hi",
        name="w",
        workspace_id="w",
        persistent=True,
        no_sleep=True,
        environment={"A": "1"},
        file_ids=["f1"],
        disk_gb=5,
        startup_command="python3 app.py",
    )
    assert out == {"request_id": JOB, "status": "accepted"}
    assert api.body(api.requests[0]) == {
        "script": "echo hi",
        "type": "inline",
        "persistent": True,
        "no_sleep": True,
        "name": "w",
        "workspace_id": "w",
        "environment": {"A": "1"},
        "file_ids": ["f1"],
        "disk_gb": 5,
        "startup_command": "python3 app.py",
    }


def test_run_minimal_and_ephemeral_drops_workspace(api, mags_client):
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    mags_client.run("true")
    mags_client.run("true", ephemeral=True, workspace_id="ignored")
    assert api.body(api.requests[0]) == {"script": "true", "type": "inline", "persistent": False}
    assert api.body(api.requests[1]) == {
        "script": "true",
        "type": "inline",
        "persistent": False,
        "ephemeral": True,
    }


@pytest.mark.parametrize(
    "kwargs",
    [{"environment": {"A": 1}}, {"disk_gb": -1}, {"disk_gb": "5"}, {"file_ids": "abc"}],
)
def test_run_validates_payload_before_sending(api, mags_client, kwargs):
    with pytest.raises(ValidationError):
        mags_client.run("x", **kwargs)
    with pytest.raises(ValidationError):
        mags_client.run("")
    assert api.requests == []


def test_run_and_wait_long_polls_and_returns_result(api, mags_client):
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on(
        "GET",
        f"/mags-jobs/{JOB}/status",
        {"request_id": JOB, "status": "completed", "exit_code": 0, "script_duration_ms": 12},
    )
    logs = [{"timestamp": "t", "source": "stdout", "message": "Hello World"}]
    api.on("GET", f"/mags-jobs/{JOB}/logs", {"logs": logs})
    result = mags_client.run_and_wait("echo Hello World")
    assert result == {
        "request_id": JOB,
        "status": "completed",
        "exit_code": 0,
        "duration_ms": 12,
        "logs": logs,
    }
    status_call = api.calls("GET", f"/mags-jobs/{JOB}/status")[0]
    assert status_call.url.params["until"] == "completed,error"
    assert 1 <= int(status_call.url.params["wait"]) <= 60
    assert mags_client.slept == []  # no fixed-interval polling


def test_run_and_wait_returns_errors_as_results(api, mags_client):
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "error", "exit_code": 3, "script_duration_ms": 5})
    api.on("GET", f"/mags-jobs/{JOB}/logs", {"logs": []})
    assert mags_client.run_and_wait("exit 3")["exit_code"] == 3


def test_wait_falls_back_to_polling_on_an_old_server(api, mags_client):
    """An old server ignores ``wait`` and answers at once: poll at poll_interval."""
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on(
        "GET",
        f"/mags-jobs/{JOB}/status",
        {"status": "pending"},
        {"status": "running"},
        {"status": "completed", "exit_code": 0},
    )
    api.on("GET", f"/mags-jobs/{JOB}/logs", {"logs": []})
    result = mags_client.run_and_wait("sleep 1", poll_interval=0.25)
    assert result["status"] == "completed"
    assert mags_client.slept == [0.25, 0.25]


def test_run_and_wait_times_out(api, mags_client, monkeypatch):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "running"})
    with pytest.raises(ClientError, match="did not finish within 5s") as info:
        mags_client.run_and_wait("sleep 100", timeout=5)
    assert info.value.status_code == 408


def test_new_creates_sleep_infinity_sandbox_and_waits_for_vm(api, mags_client):
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on(
        "GET",
        f"/mags-jobs/{JOB}/status",
        {"status": "running", "vm_id": ""},  # long-poll: running but not yet bound
        {"status": "running", "vm_id": "vm-1", "workspace_id": "dev"},
    )
    out = mags_client.new("dev")
    assert out == {"request_id": JOB, "status": "running", "workspace_id": "dev", "vm_id": "vm-1"}
    assert api.body(api.requests[0]) == {
        "script": "sleep infinity",
        "type": "inline",
        "persistent": True,
        "no_sync": True,
        "name": "dev",
        "workspace_id": "dev",
    }
    first = api.calls("GET", f"/mags-jobs/{JOB}/status")[0]
    assert first.url.params["until"] == "running,sleeping,completed,error"
    assert len(mags_client.slept) == 1 and mags_client.slept[0] < 0.1  # brief re-check, not a poll


def test_new_persistent_syncs_and_passes_options(api, mags_client):
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "running", "vm_id": "v"})
    mags_client.new("dev", persistent=True, base_workspace_id="golden", disk_gb=10)
    body = api.body(api.requests[0])
    assert "no_sync" not in body
    assert body["base_workspace_id"] == "golden" and body["disk_gb"] == 10


def test_new_reports_a_failed_start(api, mags_client):
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "error", "error_message": "no image"})
    with pytest.raises(ClientError, match="failed to start: no image"):
        mags_client.new("dev")


def jobs(*items):
    return {"jobs": list(items), "total": len(items), "page": 1, "page_size": 100}


def test_find_job_priorities(api, mags_client):
    listing = jobs(
        {"request_id": "j-new", "name": "x", "workspace_id": "x", "status": "completed"},
        {"request_id": "j-ws", "name": None, "workspace_id": "x", "status": "sleeping"},
        {"request_id": "j-name", "name": "x", "workspace_id": "other", "status": "running"},
        {"request_id": "j-old", "name": "y", "workspace_id": "y", "status": "error"},
    )
    api.on("GET", "/mags-jobs", listing)
    assert mags_client.find_job("x")["request_id"] == "j-name"
    assert mags_client.find_job("y")["request_id"] == "j-old"
    assert mags_client.find_job("nope") is None
    assert api.requests[0].url.params["page_size"] == "100"


def test_find_job_prefers_workspace_alive_over_dead_name(api, mags_client):
    api.on(
        "GET",
        "/mags-jobs",
        jobs(
            {"request_id": "a", "name": "x", "workspace_id": "x", "status": "completed"},
            {
                "request_id": "b",
                "name": "z",
                "workspace_id": "x",
                "status": "completed",
                "vm_status": "running",
            },
        ),
    )
    assert mags_client.find_job("x")["request_id"] == "b"


def test_find_job_by_id_reads_status(api, mags_client):
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "running", "name": "n"})
    assert mags_client.find_job(JOB) == {"status": "running", "name": "n", "request_id": JOB}


def test_exec_resolves_and_shapes_output(api, mags_client):
    api.on(
        "GET",
        "/mags-jobs",
        jobs({"request_id": JOB, "name": "dev", "workspace_id": "dev", "status": "sleeping"}),
    )
    api.on("POST", f"/mags-jobs/{JOB}/exec", {"exit_code": 0, "stdout": "Linux\n", "stderr": ""})
    out = mags_client.exec("dev", "uname", timeout=15)
    assert out == {"exit_code": 0, "output": "Linux\n", "stderr": ""}
    assert api.body(api.calls("POST")[0]) == {"command": "uname", "timeout": 15}


def test_exec_on_a_stopped_sandbox_is_refused(api, mags_client):
    api.on(
        "GET",
        "/mags-jobs",
        jobs({"request_id": JOB, "name": "dev", "workspace_id": "dev", "status": "completed"}),
    )
    with pytest.raises(ClientError, match="needs to be running or sleeping"):
        mags_client.exec("dev", "ls")
    api.on("GET", "/mags-jobs", jobs())
    with pytest.raises(ClientError, match="no running or sleeping sandbox") as info:
        mags_client.exec("ghost", "ls")
    assert info.value.status_code == 404


def test_exec_with_job_id_goes_straight_to_the_job(api, mags_client):
    api.on("POST", f"/mags-jobs/{JOB}/exec", {"exit_code": 2, "stdout": "", "stderr": "boom"})
    assert mags_client.exec(JOB, "false")["stderr"] == "boom"
    assert len(api.requests) == 1


def test_url_stop_sync_update_resolve_names(api, mags_client):
    api.on(
        "GET",
        "/mags-jobs",
        jobs({"request_id": JOB, "name": "web", "workspace_id": "web", "status": "running"}),
    )
    api.on("POST", f"/mags-jobs/{JOB}/access", {"success": True, "url": "http://u", "subdomain": "s"})
    api.on("POST", f"/mags-jobs/{JOB}/stop", {"success": True})
    api.on("POST", f"/mags-jobs/{JOB}/sync", {"success": True})
    api.on("PATCH", f"/mags-jobs/{JOB}", {"request_id": JOB, "no_sleep": True})
    assert mags_client.url("web", port=3000)["url"] == "http://u"
    assert api.body(api.calls("POST", f"/mags-jobs/{JOB}/access")[0]) == {"port": 3000}
    mags_client.stop("web")
    mags_client.sync("web")
    mags_client.update_job("web", no_sleep=True)
    assert api.body(api.calls("PATCH")[0]) == {"no_sleep": True}
    with pytest.raises(ClientError, match="no job found for 'ghost'") as info:
        mags_client.stop("ghost")
    assert info.value.status_code == 404
    with pytest.raises(ValidationError):
        mags_client.update_job(JOB)


def test_resize_stops_then_starts_persistent(api, mags_client):
    api.on(
        "GET", "/mags-jobs", jobs({"request_id": JOB, "name": "w", "workspace_id": "w", "status": "running"})
    )
    api.on("POST", f"/mags-jobs/{JOB}/stop", {"success": True})
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "completed"})
    api.on("POST", "/mags-jobs", {"request_id": JOB2, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{JOB2}/status", {"status": "running", "vm_id": "v2"})
    out = mags_client.resize("w", 10)
    assert out["request_id"] == JOB2
    order = [(r.method, r.url.path.rsplit("/", 1)[-1]) for r in api.requests]
    assert order == [
        ("GET", "mags-jobs"),
        ("POST", "stop"),
        ("GET", "status"),
        ("POST", "mags-jobs"),
        ("GET", "status"),
    ]
    body = api.body(api.calls("POST", "/mags-jobs")[0])
    assert body["disk_gb"] == 10 and body["persistent"] is True and "no_sync" not in body


def test_simple_endpoints(api, mags_client):
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "running"})
    api.on("GET", f"/mags-jobs/{JOB}/logs", {"logs": []})
    api.on("GET", "/mags-jobs", jobs())
    api.on("POST", f"/mags-jobs/{JOB}/access", {"success": True, "ssh_host": "h", "ssh_port": 2222})
    api.on("GET", "/mags-jobs/usage", {"total_jobs": 3, "vm_seconds": 1.5})
    assert mags_client.status(JOB) == {"status": "running"}
    assert mags_client.logs(JOB) == {"logs": []}
    assert mags_client.list_jobs(page=2, page_size=5)["jobs"] == []
    assert api.calls("GET", "/mags-jobs")[0].url.params["page"] == "2"
    assert mags_client.enable_access(JOB, port=22)["ssh_port"] == 2222
    assert mags_client.usage(window_days=7)["total_jobs"] == 3
    assert api.calls("GET", "/mags-jobs/usage")[0].url.params["window_days"] == "7"


def test_logs_follow_pages(api, mags_client):
    api.on(
        "GET",
        f"/mags-jobs/{JOB}/logs",
        {"logs": [{"seq": 1, "message": "a"}], "has_more": True, "next_after": 1},
        {"logs": [{"seq": 2, "message": "b"}], "has_more": False, "next_after": 2},
    )
    assert [e["message"] for e in mags_client.logs(JOB)["logs"]] == ["a", "b"]
    assert "after" not in api.requests[0].url.params
    assert api.requests[1].url.params["after"] == "1"


def test_wait_for_status(api, mags_client):
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "running"})
    assert mags_client.wait_for_status(JOB)["status"] == "running"
    assert api.requests[0].url.params["until"] == "running,sleeping,completed,error"
    api.routes.clear()
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "sleeping"})
    assert mags_client.wait_for_status(JOB, ("sleeping",), timeout=5)["status"] == "sleeping"
    assert api.requests[1].url.params["until"] == "sleeping"
    assert int(api.requests[1].url.params["wait"]) == 5


def test_run_and_wait_takes_inline_logs_from_a_mags_server(api, mags_client):
    """A mags server answers the long-poll with the logs: no separate logs request."""
    logs = [{"timestamp": "t", "source": "stdout", "message": "hi"}]
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{JOB}/status",
           {"status": "completed", "exit_code": 0, "script_duration_ms": 3, "logs": logs, "logs_has_more": False})
    result = mags_client.run_and_wait("echo hi")
    assert result["logs"] == logs and "logs_has_more" not in result
    assert api.calls("GET", f"/mags-jobs/{JOB}/status")[0].url.params["include"] == "logs"
    assert api.calls("GET", f"/mags-jobs/{JOB}/logs") == []


def test_run_and_wait_takes_the_result_from_the_submit_when_it_is_done(api, mags_client):
    """A mags server honours ``POST ?wait=``: a short job's result comes in one request."""
    logs = [{"timestamp": "t", "source": "stdout", "message": "hi"}]
    api.on("POST", "/mags-jobs", {"request_id": JOB, "status": "completed", "exit_code": 0,
                                  "script_duration_ms": 3, "logs": logs, "logs_has_more": False})
    result = mags_client.run_and_wait("echo hi", timeout=30)
    assert result == {"request_id": JOB, "status": "completed", "exit_code": 0, "duration_ms": 3, "logs": logs}
    post = api.calls("POST", "/mags-jobs")[0]
    assert float(post.url.params["wait"]) == 2 and post.url.params["include"] == "logs"
    assert len(api.requests) == 1
