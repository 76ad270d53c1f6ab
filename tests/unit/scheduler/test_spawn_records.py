"""The agent's spawn records (agent/spawns.py): what tells a restarted server which scripts ran."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mags.agent.models import SandboxRequest
from mags.agent.service import AgentService
from mags.agent.spawns import LOST_REASON, MAX_AGE_S, SpawnRecords
from mags.errors import Conflict, ValidationError
from scheduler.helpers import make_settings


def test_records_of_the_previous_run_are_loaded_then_forgotten(tmp_path: Path) -> None:
    root = tmp_path / "spawned"
    first = SpawnRecords(root)
    first.load()
    before = time.time()
    first.write("vm-aaa", "job-a")
    first.write("vm-bbb", "job-b")
    first.forget("vm-bbb")  # stopped and forgotten in that run

    second = SpawnRecords(root)  # the agent restarted
    found = second.load()
    assert list(found) == ["vm-aaa"]
    assert found["vm-aaa"].job_id == "job-a" and before <= found["vm-aaa"].spawned_at <= time.time()
    second.write("vm-aaa", "job-a")  # resumed under the same id: a record of this run now
    assert "vm-aaa" not in second.previous and (root / "vm-aaa").exists()
    second.write("vm-ccc", "job-c")
    third = SpawnRecords(root)
    third.load()
    third.forget_previous()
    assert sorted(os.listdir(root)) == []


def test_unreadable_and_very_old_records_are_dropped(tmp_path: Path) -> None:
    root = tmp_path / "spawned"
    root.mkdir()
    (root / "vm-cut").write_text("")  # the crash hit between open and write: no spawn yet
    (root / "vm-old").write_text(json.dumps({"job_id": "j", "ts": time.time() - MAX_AGE_S - 10}))
    (root / "vm-ok").write_text(json.dumps({"job_id": "j", "ts": time.time()}))
    assert list(SpawnRecords(root).load()) == ["vm-ok"]
    assert sorted(os.listdir(root)) == ["vm-ok"]


def test_a_sandbox_id_is_never_a_path(tmp_path: Path) -> None:
    records = SpawnRecords(tmp_path / "spawned")
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(ValidationError):
            records.write(bad, "j")


def _service(tmp_path: Path) -> AgentService:
    runtime: Any = SimpleNamespace(name="stub")
    return AgentService(make_settings(tmp_path), runtime)


async def test_agent_lists_scripts_of_its_previous_run_and_refuses_to_run_them_again(tmp_path: Path) -> None:
    old = _service(tmp_path)
    old.spawns.load()
    old.spawns.write("vm-0123456789ab", "job-1")  # ... then the agent died with its sandbox

    svc = _service(tmp_path)
    svc.spawns.load()
    [info] = svc.list()
    assert (info.sandbox_id, info.job_id, info.state, info.reason) == (
        "vm-0123456789ab",
        "job-1",
        "stopped",
        LOST_REASON,
    )
    req = SandboxRequest(sandbox_id="vm-0123456789ab", job_id="job-1", script="echo again")
    with pytest.raises(Conflict, match="already ran its script"):
        await svc.create(req)
    assert svc.list() == [info]  # nothing was started
