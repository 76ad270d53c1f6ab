"""Exec answers are bounded: output capped per stream while it is read, timeouts clamped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from scheduler.fake_agent import FakeAgentClient
from workspaces.helpers import eventually, submit

from mags.agent.models import ExecRequest, ExecResult
from mags.runtime.base import Sandbox, SandboxSpec
from mags.runtime.protocol import ExitStatus, Output
from mags.sdk.base import exec_result


async def live_job(client: httpx.AsyncClient, agent: FakeAgentClient) -> str:
    job = await submit(client, "sleep infinity", persistent=True, workspace_id="dev")
    await eventually(lambda: any(r.job_id == job for r in agent.created))
    return job


async def test_a_timeout_above_the_maximum_is_clamped_not_refused(
    alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job = await live_job(alice, agent)
    r = await alice.post(f"/mags-jobs/{job}/exec", json={"command": "echo hi", "timeout": 86400})
    assert r.status_code == 200, r.text
    assert agent.execs[-1][1].timeout == 3600  # the default max_exec_timeout_s
    r = await alice.post(f"/mags-jobs/{job}/exec", json={"command": "echo hi", "timeout": 15})
    assert r.status_code == 200 and agent.execs[-1][1].timeout == 15
    assert "truncated" not in r.json()  # the published shape when nothing was cut
    for bad in (0, -5, "10", True):
        r = await alice.post(f"/mags-jobs/{job}/exec", json={"command": "echo hi", "timeout": bad})
        assert r.status_code == 400, bad


async def test_truncation_flags_reach_the_answer(
    alice: httpx.AsyncClient, agent: FakeAgentClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await live_job(alice, agent)

    async def capped(sandbox_id: str, req: ExecRequest) -> ExecResult:
        return ExecResult(exit_code=0, stdout="x" * 10, stderr="", stdout_truncated=True)

    monkeypatch.setattr(agent, "exec", capped)
    answer = (await alice.post(f"/mags-jobs/{job}/exec", json={"command": "flood"})).json()
    assert answer["truncated"] is True
    assert answer["stdout_truncated"] is True and answer["stderr_truncated"] is False
    assert exec_result(answer) == {
        "exit_code": 0, "output": "x" * 10, "stderr": "",
        "truncated": True, "stdout_truncated": True, "stderr_truncated": False,
    }  # fmt: skip


# ---------------------------------------------------------------------------- Sandbox.exec
class FloodProcess:
    """A process handle that prints ``chunks`` of stdout, some stderr, and exits 0."""

    def __init__(self, chunks: int, size: int, byte: bytes = b"x") -> None:
        self.chunks, self.size, self.byte = chunks, size, byte
        self.errors: list[str] = []
        self.drained = 0

    async def events(self) -> AsyncIterator[Output | ExitStatus]:
        block = self.byte * self.size
        for i in range(self.chunks):
            self.drained += 1
            yield Output("stdout", block)
            if i % 100 == 0:
                yield Output("stderr", b"warning\n")
        yield ExitStatus(0, 0)


class FakeConn:
    def __init__(self, proc: FloodProcess) -> None:
        self.proc = proc

    async def spawn(self, *args: Any, **kwargs: Any) -> FloodProcess:
        return self.proc


async def test_sandbox_exec_keeps_at_most_the_cap_and_drains_the_rest() -> None:
    proc = FloodProcess(chunks=4800, size=65536)  # 300 MiB of stdout
    sb = Sandbox(SandboxSpec(sandbox_id="vm-test"), FakeConn(proc), None)  # type: ignore[arg-type]
    res = await sb.exec("flood", max_output=1 << 20)
    assert len(res.stdout) == 1 << 20 and res.stdout_truncated
    assert res.stderr == b"warning\n" * 48 and not res.stderr_truncated
    assert proc.drained == 4800 and res.exit_code == 0  # read to the end: the command finished
    uncapped = await Sandbox(SandboxSpec(sandbox_id="vm-2"), FakeConn(FloodProcess(3, 10)), None).exec("x")  # type: ignore[arg-type]
    assert uncapped.stdout == b"x" * 30 and not uncapped.stdout_truncated


async def test_control_characters_count_as_json_carries_them() -> None:
    """NUL travels as \\u0000 (6 bytes): 10 MiB of them would be a 60 MiB answer."""
    proc = FloodProcess(chunks=100, size=65536, byte=b"\x00")
    res = await Sandbox(SandboxSpec(sandbox_id="vm-3"), FakeConn(proc), None).exec("x", max_output=60_000)  # type: ignore[arg-type]
    assert res.stdout == b"\x00" * 10_000 and res.stdout_truncated
    proc = FloodProcess(chunks=1, size=10, byte=b"a\x00\n")  # 10 x (1 + 6 + 1)
    res = await Sandbox(SandboxSpec(sandbox_id="vm-4"), FakeConn(proc), None).exec("x", max_output=20)  # type: ignore[arg-type]
    assert res.stdout == b"a\x00\na\x00\na" and res.stdout_truncated  # 8 + 8 + 1 of 20
    proc = FloodProcess(chunks=1, size=5, byte=b"\t")
    res = await Sandbox(SandboxSpec(sandbox_id="vm-5"), FakeConn(proc), None).exec("x", max_output=5)  # type: ignore[arg-type]
    assert res.stdout == b"\t" * 5 and not res.stdout_truncated  # exactly the cap: nothing dropped
