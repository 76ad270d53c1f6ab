"""``mags exec`` says on stderr when the server cut the command's output at its limit."""

from __future__ import annotations

import json
from typing import Any


def live(helpers: Any) -> dict[str, Any]:
    return {"request_id": helpers.JOB, "name": "dev", "workspace_id": "dev", "status": "running", "vm_id": "vm-1"}


def test_exec_notes_truncated_output_on_stderr(mags, api, helpers):
    api.on("GET", "/mags-jobs", helpers.listing(live(helpers)))
    answer = {
        "exit_code": 0, "stdout": "xxxx", "stderr": "", "timed_out": False,
        "truncated": True, "stdout_truncated": True, "stderr_truncated": False,
    }  # fmt: skip
    api.on("POST", f"/mags-jobs/{helpers.JOB}/exec", answer)
    result = mags("exec", "dev", "yes")
    assert result.exit_code == 0 and result.stdout == "xxxx\n"
    assert result.stderr.splitlines() == [
        "note: stdout truncated (the server keeps at most max_exec_output_bytes of each stream)"
    ]
    result = mags("exec", "--json", "dev", "yes")
    assert json.loads(result.stdout) == {
        "exit_code": 0, "output": "xxxx", "stderr": "",
        "truncated": True, "stdout_truncated": True, "stderr_truncated": False,
    }  # fmt: skip


def test_exec_without_truncation_prints_no_note(mags, api, helpers):
    api.on("GET", "/mags-jobs", helpers.listing(live(helpers)))
    api.on("POST", f"/mags-jobs/{helpers.JOB}/exec", {"exit_code": 0, "stdout": "ok\n", "stderr": ""})
    result = mags("exec", "dev", "true")
    assert (result.stdout, result.stderr) == ("ok\n", "")
