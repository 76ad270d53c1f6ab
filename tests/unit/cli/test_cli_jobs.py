"""list/status/logs/stop/sync/set/resize and the sandbox commands new/exec/ssh/url."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path


def running(helpers, name="dev", status="running"):
    return {"request_id": helpers.JOB, "name": name, "workspace_id": name, "status": status}


def test_list_table_and_json(mags, api, helpers):
    api.on(
        "GET",
        "/mags-jobs",
        {
            "jobs": [
                {**running(helpers), "exit_code": None, "created_at": "2020-01-01T00:00:00Z"},
                {
                    "request_id": helpers.JOB2,
                    "name": None,
                    "workspace_id": "ws",
                    "status": "error",
                    "exit_code": 2,
                },
            ],
            "total": 2,
            "page": 1,
            "page_size": 20,
        },
    )
    result = mags("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "EXIT", "CREATED"]
    assert helpers.JOB in result.stdout and helpers.JOB2 in result.stdout
    row = next(line for line in lines if helpers.JOB2 in line).split()
    assert row[1:4] == ["ws", "error", "2"]
    assert "d ago" in result.stdout
    data = json.loads(mags("list", "--json").stdout)
    assert data["total"] == 2
    assert api.requests[0].url.params["page_size"] == "20"


def test_list_empty(mags, api):
    api.on("GET", "/mags-jobs", {"jobs": [], "total": 0})
    assert "No jobs yet" in mags("list").stdout


def test_status_by_name_and_by_id(mags, api, helpers):
    api.on("GET", "/mags-jobs", helpers.listing(running(helpers)))
    api.on(
        "GET", f"/mags-jobs/{helpers.JOB}/status", {**running(helpers), "vm_id": "vm-9", "exit_code": None}
    )
    result = mags("status", "dev")
    assert result.exit_code == 0
    assert "status:" in result.stdout and "running" in result.stdout and "vm-9" in result.stdout
    assert json.loads(mags("status", "--json", helpers.JOB).stdout)["vm_id"] == "vm-9"
    result = mags("status", "ghost")
    assert result.exit_code == 5 and result.stderr == "error: no job found for 'ghost'\n"


def test_logs_plain_and_follow(mags, api, helpers):
    api.on("GET", "/mags-jobs", helpers.listing(running(helpers)))
    api.on(
        "GET",
        f"/mags-jobs/{helpers.JOB}/logs",
        {"logs": [{"source": "stdout", "message": "out"}, {"source": "stderr", "message": "err"}]},
    )
    result = mags("logs", "dev")
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    api.routes.pop(("GET", f"/api/v1/mags-jobs/{helpers.JOB}/logs"))
    api.on(
        "GET",
        f"/mags-jobs/{helpers.JOB}/logs",
        helpers.sse(
            ("log", {"seq": 0, "source": "system", "message": "woke"}), ("end", {"status": "completed"})
        ),
    )
    result = mags("logs", "-f", helpers.JOB)
    assert result.exit_code == 0 and result.stderr == "[mags] woke\n"


def test_stop_sync_set_resize(mags, api, helpers):
    api.on("GET", "/mags-jobs", helpers.listing(running(helpers)))
    api.on("POST", f"/mags-jobs/{helpers.JOB}/stop", {"success": True})
    api.on("POST", f"/mags-jobs/{helpers.JOB}/sync", {"success": True})
    api.on("PATCH", f"/mags-jobs/{helpers.JOB}", {"request_id": helpers.JOB, "no_sleep": True})
    assert mags("stop", "dev").stdout == f"Stopped dev ({helpers.JOB})\n"
    assert mags("sync", "dev").exit_code == 0
    assert "auto-sleep disabled" in mags("set", "dev", "--no-sleep").stdout
    assert "auto-sleep enabled" in mags("set", "dev", "--sleep").stdout
    bodies = [api.body(r) for r in api.calls("PATCH", f"/mags-jobs/{helpers.JOB}")]
    assert bodies == [{"no_sleep": True}, {"no_sleep": False}]

    api.on("GET", f"/mags-jobs/{helpers.JOB}/status", {"status": "completed"})
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB2, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{helpers.JOB2}/status", {"status": "running", "vm_id": "v"})
    result = mags("resize", "dev", "--disk", "10")
    assert result.exit_code == 0 and helpers.JOB2 in result.stdout
    assert api.body(api.calls("POST", "/mags-jobs")[0])["disk_gb"] == 10
    assert mags("resize", "dev").exit_code == 2


def test_new(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{helpers.JOB}/status", {"status": "running", "vm_id": "v"})
    result = mags("new", "dev", "-p", "--disk", "4")
    assert result.exit_code == 0
    assert "Sandbox 'dev' is running (persistent)" in result.stdout
    assert "mags ssh dev" in result.stdout
    body = api.body(api.requests[0])
    assert body["script"] == "sleep infinity" and body["persistent"] is True and "no_sync" not in body
    assert body["disk_gb"] == 4
    result = mags("new", "--json", "dev2")
    assert json.loads(result.stdout)["request_id"] == helpers.JOB
    assert api.body(api.calls("POST", "/mags-jobs")[1])["no_sync"] is True


def test_new_failure(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{helpers.JOB}/status", {"status": "error", "error_message": "image missing"})
    result = mags("new", "dev")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: sandbox 'dev'") and "image missing" in result.stderr


def test_exec_passes_output_and_exit_code(mags, api, helpers):
    api.on("GET", "/mags-jobs", helpers.listing(running(helpers, status="sleeping")))
    api.on("POST", f"/mags-jobs/{helpers.JOB}/exec", {"exit_code": 7, "stdout": "a\nb\n", "stderr": "warn"})
    result = mags("exec", "dev", "ls", "-la")
    assert (result.exit_code, result.stdout, result.stderr) == (7, "a\nb\n", "warn\n")
    assert api.body(api.calls("POST", f"/mags-jobs/{helpers.JOB}/exec")[0]) == {
        "command": "ls -la",
        "timeout": 300,
    }
    result = mags("exec", "--json", "--timeout", "5", "dev", "true")
    assert json.loads(result.stdout) == {"exit_code": 7, "output": "a\nb\n", "stderr": "warn"}


def test_exec_on_missing_sandbox(mags, api, helpers):
    api.on("GET", "/mags-jobs", helpers.listing())
    result = mags("exec", "ghost", "ls")
    assert result.exit_code == 5
    assert "no running or sleeping sandbox found for 'ghost'" in result.stderr


SSH = {"success": True, "ssh_host": "127.0.0.1", "ssh_port": 2222, "ssh_private_key": "-----KEY-----"}


def test_ssh_print_keeps_a_private_key(mags, api, helpers, isolated_home):
    api.on("GET", "/mags-jobs", helpers.listing(running(helpers)))
    api.on("POST", f"/mags-jobs/{helpers.JOB}/access", SSH)
    result = mags("ssh", "dev", "--print")
    assert result.exit_code == 0
    key = isolated_home / ".mags" / "ssh" / f"{helpers.JOB}.key"
    assert result.stdout.strip() == (
        f"ssh -i {key} -p 2222 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "-o IdentitiesOnly=yes -o LogLevel=ERROR root@127.0.0.1"
    )
    assert key.read_text() == "-----KEY-----\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert api.body(api.calls("POST", f"/mags-jobs/{helpers.JOB}/access")[0]) == {"port": 22}


def test_ssh_connects_and_removes_the_key(mags, api, helpers, monkeypatch):
    api.on("GET", "/mags-jobs", helpers.listing(running(helpers)))
    api.on("POST", f"/mags-jobs/{helpers.JOB}/access", SSH)
    seen = {}

    def fake_call(argv):
        key = Path(argv[argv.index("-i") + 1])
        seen.update(argv=argv, key=key, mode=stat.S_IMODE(key.stat().st_mode), text=key.read_text())
        return 42

    monkeypatch.setattr(subprocess, "call", fake_call)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/ssh")
    result = mags("ssh", "dev")
    assert result.exit_code == 42
    assert seen["argv"][0] == "ssh" and seen["argv"][-1] == "root@127.0.0.1"
    assert seen["mode"] == 0o600 and seen["text"] == "-----KEY-----\n"
    assert not os.path.exists(seen["key"])


def test_ssh_starts_a_stopped_sandbox(mags, api, helpers, monkeypatch):
    api.on("GET", "/mags-jobs", helpers.listing(running(helpers, status="completed")))
    api.on("GET", "/mags-workspaces", {"workspaces": [{"workspace_id": "dev"}], "total": 1})
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB2, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{helpers.JOB2}/status", {"status": "running", "vm_id": "v"})
    api.on("POST", f"/mags-jobs/{helpers.JOB2}/access", SSH)
    result = mags("ssh", "--print", "dev")
    assert result.exit_code == 0, result.output
    body = api.body(api.calls("POST", "/mags-jobs")[0])
    assert body["workspace_id"] == "dev" and "no_sync" not in body  # it was a persistent workspace


def test_url_and_aliases(mags, api, helpers):
    api.on("GET", "/mags-jobs", helpers.listing(running(helpers, name="web")))
    api.on("POST", f"/mags-jobs/{helpers.JOB}/access", {"success": True, "url": "http://s.apps.test"})
    api.on("POST", "/mags-url-aliases", {"id": "1", "subdomain": "app", "url": "http://app.apps.test"})
    api.on(
        "GET",
        "/mags-url-aliases",
        {"aliases": [{"subdomain": "app", "workspace_id": "web", "url": "http://app.apps.test"}], "total": 1},
    )
    api.on("DELETE", "/mags-url-aliases/app", {"success": True})
    assert mags("url", "web").stdout == "http://s.apps.test\n"
    assert mags("url", "web", "3000").exit_code == 0
    ports = [api.body(r)["port"] for r in api.calls("POST", f"/mags-jobs/{helpers.JOB}/access")]
    assert ports == [8080, 3000]
    assert mags("url", "alias", "app", "web").stdout == "http://app.apps.test\n"
    assert api.body(api.calls("POST", "/mags-url-aliases")[0]) == {"subdomain": "app", "workspace_id": "web"}
    listed = mags("url", "alias", "list").stdout
    assert "SUBDOMAIN" in listed and "http://app.apps.test" in listed
    assert mags("url", "alias", "remove", "app").stdout == "Removed alias app\n"


def test_logs_follow_json_lines(mags, api, helpers):
    api.on(
        "GET",
        f"/mags-jobs/{helpers.JOB}/logs",
        helpers.sse(
            ("log", {"seq": 1, "source": "stdout", "message": "a"}), ("end", {"status": "completed"})
        ),
    )
    lines = mags("logs", "-f", "--json", helpers.JOB).stdout.splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["log", "end"]


def test_list_says_there_is_more(mags, api, helpers):
    api.on("GET", "/mags-jobs", {"jobs": [running(helpers)], "total": 45, "page": 1, "page_size": 20})
    result = mags("list")
    assert "page 1 of 3 (45 jobs); next: mags list --page 2" in result.stderr


def test_url_without_arguments_shows_help(mags, api):
    result = mags("url")
    assert "Usage: " in result.output and "alias" in result.output
    assert api.requests == []


def test_new_uploads_files(mags, api, helpers, tmp_path):
    f = tmp_path / "seed.sql"
    f.write_text("select 1;")
    api.on("POST", "/mags-files", {"file_id": "f-7"})
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{helpers.JOB}/status", {"status": "running", "vm_id": "v"})
    assert mags("new", "db", "-f", str(f)).exit_code == 0
    assert api.body(api.calls("POST", "/mags-jobs")[0])["file_ids"] == ["f-7"]
