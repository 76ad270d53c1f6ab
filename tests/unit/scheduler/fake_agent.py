"""An in-memory :class:`~mags.agent.models.AgentClient` for control-plane tests.

Scripts are a tiny language, one command per line or ``;``:

* ``echo WORDS`` (``>&2`` at the end: stderr), ``spam N`` (N stdout lines)
* ``sleep SECONDS`` / ``sleep infinity``, ``exit N``, ``true``, ``false``
* ``fail-start`` anywhere: ``create_sandbox`` raises like an agent that cannot start it

Events follow the real agent's order: ``started``, ``log``..., ``exit``, then for
non-persistent sandboxes ``state: stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from mags.agent.models import (
    AgentEvent,
    AgentHealth,
    ExecRequest,
    ExecResult,
    SandboxInfo,
    SandboxRequest,
    StopRequest,
)
from mags.errors import SandboxError, SandboxGone


@dataclass
class FakeSandbox:
    req: SandboxRequest
    state: str = "running"
    script_running: bool = True
    exit_code: int | None = None
    created_at: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None


class FakeAgentClient:
    """Runs fake scripts in asyncio tasks and streams events like the real agent."""

    def __init__(self, agent_id: str = "local", *, runtime: str = "fake", start_delay: float = 0.0) -> None:
        self.agent_id = agent_id
        self.runtime = runtime
        self.start_delay = start_delay
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.created: list[SandboxRequest] = []
        self.stops: list[tuple[str, StopRequest]] = []
        self.events_log: list[AgentEvent] = []
        self.stream_calls: list[int] = []  # the `after` of every events() call
        self.closed = False
        self._seq = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._epoch = 0

    # ------------------------------------------------------------------ helpers for tests
    def emit(self, type_: str, sandbox_id: str, job_id: str, **fields: Any) -> AgentEvent:
        self._seq += 1
        ev = AgentEvent(seq=self._seq, type=type_, sandbox_id=sandbox_id, job_id=job_id, ts=time.time(), **fields)
        self.events_log.append(ev)
        self._wake()
        return ev

    def break_stream(self) -> None:
        """Make every open event stream fail (the control plane must reconnect and resume)."""
        self._epoch += 1
        self._wake()

    def set_state(self, sandbox_id: str, state: str, reason: str | None = None) -> None:
        """Pretend the sandbox went to sleep / woke up."""
        sb = self.sandboxes[sandbox_id]
        sb.state = state
        self.emit("state", sandbox_id, sb.req.job_id, state=state, reason=reason)

    def forget(self, sandbox_id: str) -> None:
        """Lose a sandbox without telling anyone (as after an agent restart)."""
        sb = self.sandboxes.pop(sandbox_id)
        if sb.task is not None:
            sb.task.cancel()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _info(self, sb: FakeSandbox) -> SandboxInfo:
        return SandboxInfo(
            sandbox_id=sb.req.sandbox_id,
            job_id=sb.req.job_id,
            state=sb.state,
            runtime=self.runtime,
            script_running=sb.script_running,
            created_at=sb.created_at,
            exit_code=sb.exit_code,
        )

    # ------------------------------------------------------------------ AgentClient
    async def health(self) -> AgentHealth:
        live = sum(1 for s in self.sandboxes.values() if s.state != "stopped")
        return AgentHealth(agent_id=self.agent_id, runtime=self.runtime, sandboxes=live, version="fake")

    async def create_sandbox(self, req: SandboxRequest) -> SandboxInfo:
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        if "fail-start" in req.script:
            raise SandboxError("image standard is broken: cannot start sandbox")
        if req.sandbox_id in self.sandboxes:
            raise SandboxError(f"sandbox {req.sandbox_id} already exists")
        self.created.append(req)
        sb = FakeSandbox(req)
        self.sandboxes[req.sandbox_id] = sb
        self.emit("started", req.sandbox_id, req.job_id)
        sb.task = asyncio.create_task(self._run(sb))
        return self._info(sb)

    async def _run(self, sb: FakeSandbox) -> None:
        t0 = time.monotonic()
        code = 0
        sid, jid = sb.req.sandbox_id, sb.req.job_id
        for raw in sb.req.script.replace(";", "\n").splitlines():
            cmd = raw.strip()
            word, _, rest = cmd.partition(" ")
            if word == "echo":
                if rest.endswith(">&2"):
                    self.emit("log", sid, jid, source="stderr", message=rest[:-3].strip())
                else:
                    self.emit("log", sid, jid, source="stdout", message=rest)
            elif word == "spam":
                for i in range(int(rest)):
                    self.emit("log", sid, jid, source="stdout", message=f"line {i + 1}")
            elif word == "sleep":
                await asyncio.sleep(1e9 if rest == "infinity" else float(rest))
            elif word == "exit":
                code = int(rest)
                break
            elif word == "false":
                code = 1
                break
        self._script_ended(sb, code, int((time.monotonic() - t0) * 1000), None)

    def _script_ended(self, sb: FakeSandbox, code: int, duration_ms: int, reason: str | None) -> None:
        sid, jid = sb.req.sandbox_id, sb.req.job_id
        sb.script_running = False
        sb.exit_code = code
        self.emit("exit", sid, jid, exit_code=code, duration_ms=duration_ms, reason=reason)
        if not sb.req.persistent:
            sb.state = "stopped"
            self.emit("state", sid, jid, state="stopped")

    async def get_sandbox(self, sandbox_id: str) -> SandboxInfo:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise SandboxGone(f"sandbox {sandbox_id} not found")
        return self._info(sb)

    async def list_sandboxes(self) -> list[SandboxInfo]:
        return [self._info(s) for s in self.sandboxes.values() if s.state != "stopped"]

    async def exec(self, sandbox_id: str, req: ExecRequest) -> ExecResult:
        await self.get_sandbox(sandbox_id)
        return ExecResult(exit_code=0, stdout="", stderr="")

    async def stop_sandbox(self, sandbox_id: str, req: StopRequest) -> SandboxInfo:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None or sb.state == "stopped":
            raise SandboxGone(f"sandbox {sandbox_id} not found")
        self.stops.append((sandbox_id, req))
        if sb.script_running and sb.task is not None:
            sb.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sb.task
            sb.script_running = False
            sb.exit_code = 137
            self.emit("exit", sandbox_id, sb.req.job_id, exit_code=137, duration_ms=1, reason=req.reason)
        sb.state = "stopped"
        self.emit("state", sandbox_id, sb.req.job_id, state="stopped", reason=req.reason)
        return self._info(sb)

    async def events(self, after: int = 0) -> AsyncIterator[AgentEvent]:
        self.stream_calls.append(after)
        epoch = self._epoch
        i = after  # seq n is events_log[n - 1]
        while True:
            if self._epoch != epoch:
                raise ConnectionError("event stream broken")
            if i < len(self.events_log):
                ev = self.events_log[i]
                i += 1
                yield ev
                continue
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut

    async def close(self) -> None:
        self.closed = True
        for sb in self.sandboxes.values():
            if sb.task is not None:
                sb.task.cancel()

    async def stop_all(self, reason: str) -> None:
        """What the real agent's shutdown does: stop every sandbox."""
        for sid, sb in list(self.sandboxes.items()):
            if sb.state != "stopped":
                await self.stop_sandbox(sid, StopRequest(reason=reason))
