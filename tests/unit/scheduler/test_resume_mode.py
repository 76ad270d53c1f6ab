"""Which jobs whose sandbox was lost come back after a restart, and how (scheduler/resume.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mags.scheduler.resume import resume_mode


def row(**over: Any) -> Any:
    m = {"persistent": True, "workspace_id": "ws", "stop_reason": None, "vm_status": "running",
         "no_sleep": False, "finished_at": None, "status": "running", "script": "python app.py"}
    m.update(over)
    return SimpleNamespace(_mapping=m)


@pytest.mark.parametrize(
    ("fields", "mode"),
    [
        ({"no_sleep": True}, "running"),  # always-on: booted again (its script re-run)
        ({"no_sleep": True, "vm_status": "sleeping", "status": "sleeping"}, "running"),
        ({"vm_status": "sleeping", "status": "sleeping"}, "sleeping"),
        ({"status": "completed", "finished_at": 1.0}, "sleeping"),  # script done, VM idle
        ({"script": "sleep infinity"}, "sleeping"),  # a `mags new` sandbox
        ({}, None),  # a script still running in a VM that may sleep: it ends
        ({"persistent": False, "no_sleep": True}, None),
        ({"workspace_id": None, "no_sleep": True}, None),
        ({"no_sleep": True, "stop_reason": "stopped by user"}, None),  # was being stopped
        ({"no_sleep": True, "vm_status": "starting"}, None),  # never started
        ({"no_sleep": True, "vm_status": "stopping"}, None),
    ],
)
def test_resume_mode(fields: dict[str, Any], mode: str | None) -> None:
    assert resume_mode(row(**fields)) == mode
