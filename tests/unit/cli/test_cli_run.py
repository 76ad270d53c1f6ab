"""``mags run``: payload, live output on the right streams, exit codes, --json, --no-wait, --url."""

from __future__ import annotations

import json


def log(seq, message, source="stdout"):
    return {"seq": seq, "timestamp": "2025-01-01T00:00:00Z", "source": source, "message": message}


def test_run_streams_output_and_exits_with_script_code(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on(
        "GET",
        f"/mags-jobs/{helpers.JOB}/logs",
        helpers.sse(
            ("log", log(0, "Hello World")),
            ("log", log(1, "oops", "stderr")),
            ("log", log(2, "sandbox started", "system")),
            ("end", {"request_id": helpers.JOB, "status": "error", "exit_code": 3}),
        ),
    )
    result = mags("run", "echo Hello World")
    assert result.exit_code == 3
    assert result.stdout == "Hello World\n"
    assert result.stderr == "oops\n"  # system lines only on a terminal
    assert api.body(api.requests[0]) == {"script": "echo Hello World", "type": "inline", "persistent": False}
    assert api.requests[1].url.params["follow"] == "true"


def test_run_error_without_exit_code_exits_1_with_reason(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on(
        "GET",
        f"/mags-jobs/{helpers.JOB}/logs",
        helpers.sse(("end", {"status": "error", "exit_code": None, "error_message": "no capacity"})),
    )
    result = mags("run", "true")
    assert result.exit_code == 1
    assert result.stderr == "error: no capacity\n"


def test_run_options_build_the_payload(mags, api, helpers, tmp_path):
    upload = tmp_path / "data.csv"
    upload.write_text("a,b\n")
    api.on("POST", "/mags-files", {"file_id": "f-1"})
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on(
        "GET", f"/mags-jobs/{helpers.JOB}/logs", helpers.sse(("end", {"status": "completed", "exit_code": 0}))
    )
    result = mags(
        "run", "-n", "proj", "-p", "--no-sleep", "--base", "golden", "-f", str(upload), "--disk", "5",
        "--startup-command", "python3 app.py", "-E", "A=1", "-E", "B=x=y", "python3", "app.py",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert api.body(api.calls("POST", "/mags-jobs")[0]) == {
        "script": "python3 app.py",
        "type": "inline",
        "persistent": True,
        "no_sleep": True,
        "name": "proj",
        "workspace_id": "proj",
        "base_workspace_id": "golden",
        "startup_command": "python3 app.py",
        "environment": {"A": "1", "B": "x=y"},
        "file_ids": ["f-1"],
        "disk_gb": 5,
    }
    assert b'filename="data.csv"' in api.calls("POST", "/mags-files")[0].content


def test_run_ephemeral_flag(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on(
        "GET", f"/mags-jobs/{helpers.JOB}/logs", helpers.sse(("end", {"status": "completed", "exit_code": 0}))
    )
    assert mags("run", "-e", "uname -a").exit_code == 0
    assert api.body(api.requests[0])["ephemeral"] is True


def test_run_json_waits_and_prints_result(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on(
        "GET",
        f"/mags-jobs/{helpers.JOB}/status",
        {"status": "completed", "exit_code": 0, "script_duration_ms": 9},
    )
    api.on("GET", f"/mags-jobs/{helpers.JOB}/logs", {"logs": [log(0, "hi")]})
    result = mags("run", "--json", "echo hi")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data == {
        "request_id": helpers.JOB,
        "status": "completed",
        "exit_code": 0,
        "duration_ms": 9,
        "logs": [log(0, "hi")],
    }
    assert api.calls("GET", f"/mags-jobs/{helpers.JOB}/status")[0].url.params["until"] == "completed,error"


def test_run_no_wait_prints_the_id(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    result = mags("run", "--no-wait", "sleep 100")
    assert (result.exit_code, result.stdout) == (0, helpers.JOB + "\n")
    result = mags("run", "--no-wait", "--json", "sleep 100")
    assert json.loads(result.stdout) == {"request_id": helpers.JOB, "status": "accepted"}


def test_run_with_url_enables_access_once_running(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{helpers.JOB}/status", {"status": "running", "vm_id": "v"})
    api.on("POST", f"/mags-jobs/{helpers.JOB}/access", {"success": True, "url": "http://abc.apps.test"})
    api.on(
        "GET", f"/mags-jobs/{helpers.JOB}/logs", helpers.sse(("end", {"status": "completed", "exit_code": 0}))
    )
    result = mags("run", "-w", "web", "-p", "--url", "--port", "3000", "node server.js")
    assert result.exit_code == 0, result.output
    assert "URL: http://abc.apps.test" in result.stderr
    assert api.body(api.calls("POST", f"/mags-jobs/{helpers.JOB}/access")[0]) == {"port": 3000}


def test_run_script_words_are_joined(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on(
        "GET", f"/mags-jobs/{helpers.JOB}/logs", helpers.sse(("end", {"status": "completed", "exit_code": 0}))
    )
    assert mags("run", "ls", "-la", "/root").exit_code == 0
    assert api.body(api.requests[0])["script"] == "ls -la /root"


def test_run_missing_file_is_a_usage_error(mags, api, tmp_path):
    result = mags("run", "-f", str(tmp_path / "nope"), "true")
    assert result.exit_code == 2
    assert api.requests == []


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt
    yield  # pragma: no cover - makes this a generator


def test_ctrl_c_stops_a_throwaway_job(mags, api, helpers, monkeypatch):
    from mags.sdk.sync import Mags

    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on("POST", f"/mags-jobs/{helpers.JOB}/stop", {"success": True})
    monkeypatch.setattr(Mags, "follow_events", _interrupt)
    result = mags("run", "sleep 100")
    assert result.exit_code == 130
    assert f"stopped job {helpers.JOB}" in result.stderr
    assert len(api.calls("POST", f"/mags-jobs/{helpers.JOB}/stop")) == 1


def test_ctrl_c_detaches_from_a_persistent_job(mags, api, helpers, monkeypatch):
    from mags.sdk.sync import Mags

    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    monkeypatch.setattr(Mags, "follow_events", _interrupt)
    result = mags("run", "-w", "srv", "-p", "python3 -m http.server")
    assert result.exit_code == 130
    assert "detached" in result.stderr
    assert api.calls("POST", f"/mags-jobs/{helpers.JOB}/stop") == []


def test_run_options_may_follow_the_script(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on(
        "GET", f"/mags-jobs/{helpers.JOB}/logs", helpers.sse(("end", {"status": "completed", "exit_code": 0}))
    )
    assert mags("run", "python3 app.py", "-w", "proj", "-p").exit_code == 0
    assert mags("run", "python3", "-c", "print(1)").exit_code == 0
    assert mags("run", "--", "grep", "-e", "x", "f").exit_code == 0
    bodies = [api.body(r) for r in api.calls("POST", "/mags-jobs")]
    assert (bodies[0]["script"], bodies[0]["workspace_id"], bodies[0]["persistent"]) == (
        "python3 app.py",
        "proj",
        True,
    )
    assert bodies[1]["script"] == "python3 -c 'print(1)'"
    assert bodies[2] == {"script": "grep -e x f", "type": "inline", "persistent": False}
