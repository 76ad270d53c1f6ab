"""CLI habits of hosted Mags users: ``run --timeout``, ``workspace delete [--force]`` right after a run."""

from __future__ import annotations

import json


def test_run_timeout_limits_the_job_on_the_server(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on(
        "GET",
        f"/mags-jobs/{helpers.JOB}/logs",
        helpers.sse(("end", {"status": "error", "exit_code": 137, "error_message": "timed out after 600 s"})),
    )
    result = mags("run", "--timeout", "600", "long-running-script.sh")
    assert result.exit_code == 137
    assert result.stderr == "error: timed out after 600 s\n"
    assert api.body(api.calls("POST", "/mags-jobs")[0]) == {
        "script": "long-running-script.sh", "type": "inline", "persistent": False, "timeout_s": 600.0,
    }  # fmt: skip


def test_run_timeout_with_json_waits_for_the_server_to_end_it(mags, api, helpers):
    api.on("POST", "/mags-jobs", {"request_id": helpers.JOB, "status": "accepted"})
    api.on("GET", f"/mags-jobs/{helpers.JOB}/status", {"status": "error", "exit_code": 137})
    api.on("GET", f"/mags-jobs/{helpers.JOB}/logs", {"logs": []})
    result = mags("run", "--json", "--timeout", "2", "sleep 30")
    assert result.exit_code == 137 and json.loads(result.stdout)["status"] == "error"
    assert api.body(api.calls("POST", "/mags-jobs")[0])["timeout_s"] == 2.0


def test_run_timeout_must_be_at_least_a_second(mags, api):
    result = mags("run", "--timeout", "0", "true")
    assert result.exit_code == 2 and api.requests == []


def test_workspace_delete_force_and_a_busy_workspace_is_one_line(mags, api):
    api.on("DELETE", "/mags-workspaces/fork-1", {"success": True, "deleted": True})
    assert mags("workspace", "delete", "--yes", "fork-1").stdout == "Deleted workspace fork-1\n"
    assert "force" not in api.requests[-1].url.params  # what the published SDK sends too
    assert mags("workspace", "delete", "--force", "--yes", "fork-1").exit_code == 0
    assert api.requests[-1].url.params["force"] == "true"
    message = 'workspace "busy" is in use: job j1 is still running its script (wait for it, stop it, ...)'
    api.on("DELETE", "/mags-workspaces/busy", (409, {"error": message, "code": "workspace_in_use"}))
    result = mags("workspace", "delete", "--yes", "busy")
    assert result.exit_code == 1 and result.stderr == f"error: {message}\n"
