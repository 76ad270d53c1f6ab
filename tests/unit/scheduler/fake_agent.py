"""An in-memory :class:`~mags.agent.models.AgentClient` for control-plane tests.

Scripts are a tiny language, one command per line or ``;``:

* ``echo WORDS`` (``>&2`` at the end: stderr), ``spam N`` (N stdout lines)
* ``sleep SECONDS`` / ``sleep infinity``, ``exit N``, ``true``, ``false``; a request's
  ``timeout_s`` kills the script (exit 137, "timed out after N s") like the real agent
* ``fail-start`` anywhere: ``create_sandbox`` raises like an agent that cannot start it

Events follow the real agent's order: ``started``, ``log``..., ``exit``, then for
non-persistent sandboxes ``state: stopped``.

Workspaces (issue 4): the fake keeps "local copies" keyed by the agent-side key.  A script
(or :meth:`FakeAgentClient.write`) changes a workspace; a sync of a changed persistent
workspace yields a new snapshot id ``snap-<n>`` with the sandbox's last snapshot as parent,
reported as a ``synced`` event (trigger periodic | stop | sleep | request) -- on stop *before*
``state: stopped``, as the real agent does.  ``exec`` understands ``echo``, ``sleep N``
(times out past the request's timeout), ``exit N`` and wakes a sleeping sandbox first.
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
    ResizeRequest,
    SandboxInfo,
    SandboxRequest,
    SandboxSettings,
    StopRequest,
    SyncResult,
    WorkspaceInfo,
)
from mags.errors import Conflict, NotFound, SandboxError, SandboxGone, ValidationError


@dataclass
class FakeSandbox:
    req: SandboxRequest
    state: str = "running"
    script_running: bool = True
    exit_code: int | None = None
    created_at: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    synced_parent: str | None = None
    no_sleep: bool = False
    startup_command: str | None = None

    @property
    def key(self) -> str | None:
        ws = self.req.workspace
        return ws.workspace_id if ws is not None and ws.mode != "ephemeral" else None

    @property
    def syncs(self) -> bool:
        ws = self.req.workspace
        return ws is not None and ws.mode == "persistent" and ws.sync


@dataclass
class FakeWorkspace:
    """A workspace's local copy on the fake host."""

    key: str
    mode: str
    disk_gb: int
    used_bytes: int = 0
    version: int = 0  # bumped by every change
    synced_version: int = 0
    synced_snapshot_id: str | None = None
    in_use_by: str | None = None
    last_used: float = field(default_factory=time.time)


class FakeAgentClient:
    """Runs fake scripts in asyncio tasks and streams events like the real agent."""

    def __init__(
        self,
        agent_id: str = "local",
        *,
        runtime: str = "fake",
        start_delay: float = 0.0,
        teardown_delay: float = 0.0,
    ) -> None:
        self.agent_id = agent_id
        self.runtime = runtime
        self.start_delay = start_delay
        # between a non-persistent script's exit and its sandbox's `stopped` (the real agent: ~15 ms)
        self.teardown_delay = teardown_delay
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.created: list[SandboxRequest] = []
        self.stops: list[tuple[str, StopRequest]] = []
        self.events_log: list[AgentEvent] = []
        self.stream_calls: list[int] = []  # the `after` of every events() call
        self.closed = False
        self.workspaces: dict[str, FakeWorkspace] = {}
        self.execs: list[tuple[str, ExecRequest]] = []
        self.settings_calls: list[tuple[str, SandboxSettings]] = []
        self.deleted_workspaces: list[str] = []
        self.snapshots = 0  # snapshot ids handed out
        self.sync_gate: asyncio.Event | None = None  # set by tests to hold syncs
        self.stream_gate: asyncio.Event | None = None  # set by tests to hold the event stream
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
            workspace_id=sb.key,
            no_sleep=sb.no_sleep,
            startup_command=sb.startup_command,
        )

    # ------------------------------------------------------------------ AgentClient
    async def health(self) -> AgentHealth:
        live = sum(1 for s in self.sandboxes.values() if s.state != "stopped")
        return AgentHealth(
            agent_id=self.agent_id, boot_id="fake-boot", runtime=self.runtime, sandboxes=live, version="fake"
        )

    async def create_sandbox(self, req: SandboxRequest) -> SandboxInfo:
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        if "fail-start" in req.script:
            raise SandboxError("image standard is broken: cannot start sandbox")
        if req.sandbox_id in self.sandboxes:
            raise SandboxError(f"sandbox {req.sandbox_id} already exists")
        sb = FakeSandbox(req, no_sleep=req.no_sleep, startup_command=req.startup_command)
        if sb.key is not None:
            self._acquire(sb)
        self.created.append(req)
        self.sandboxes[req.sandbox_id] = sb
        self.emit("started", req.sandbox_id, req.job_id)
        sb.task = asyncio.create_task(self._run_limited(sb))
        return self._info(sb)

    async def _run_limited(self, sb: FakeSandbox) -> None:
        """The script under the request's wall-clock limit, as the real agent runs it."""
        limit = sb.req.timeout_s
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(self._run(sb), limit if limit else None)
        except TimeoutError:
            self._script_ended(sb, 137, int((time.monotonic() - t0) * 1000), f"timed out after {limit:g} s")

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
            if self.teardown_delay:
                asyncio.get_running_loop().call_later(self.teardown_delay, self._teardown, sb)
            else:
                self._end(sb, None, sync=True)

    def _teardown(self, sb: FakeSandbox) -> None:
        if sb.state != "stopped":  # not stopped by a request meanwhile
            self._end(sb, None, sync=True)

    # ------------------------------------------------------------------ workspaces
    def _acquire(self, sb: FakeSandbox) -> None:
        ref = sb.req.workspace
        assert ref is not None and sb.key is not None
        disk_gb = sb.req.disk_gb or 2
        ws = self.workspaces.get(sb.key)
        if ws is not None and ws.in_use_by not in (None, sb.req.sandbox_id):
            raise Conflict(f"workspace is in use by sandbox {ws.in_use_by}")
        wanted = ref.snapshot_id if ref.mode == "persistent" else None
        if ws is not None and wanted is not None and ws.synced_snapshot_id != wanted:
            ws = None  # the head moved on elsewhere: the local copy is replaced by a restore
        if ws is None:
            ws = FakeWorkspace(sb.key, ref.mode, disk_gb, synced_snapshot_id=wanted)
            self.workspaces[sb.key] = ws
        if disk_gb < ws.used_bytes / 2**30:
            raise SandboxError(f"cannot shrink workspace {sb.key} to {disk_gb} GB: it holds more")
        ws.disk_gb = disk_gb
        ws.mode = ref.mode
        ws.in_use_by = sb.req.sandbox_id
        ws.version += 1  # running a script changes the workspace
        sb.synced_parent = ws.synced_snapshot_id

    def _release(self, sb: FakeSandbox) -> None:
        ws = self.workspaces.get(sb.key or "")
        if ws is not None and ws.in_use_by == sb.req.sandbox_id:
            ws.in_use_by = None
            ws.last_used = time.time()

    def write(self, key: str, used_bytes: int | None = None) -> None:
        """Pretend something in the sandbox changed workspace ``key``."""
        ws = self.workspaces[key]
        ws.version += 1
        if used_bytes is not None:
            ws.used_bytes = used_bytes

    def _sync(self, sb: FakeSandbox, trigger: str) -> SyncResult:
        assert sb.key is not None
        ws = self.workspaces[sb.key]
        parent = sb.synced_parent
        changed = ws.version != ws.synced_version
        snap = parent
        if changed:
            self.snapshots += 1
            snap = f"snap-{self.snapshots}"
            ws.synced_version = ws.version
            ws.synced_snapshot_id = snap
            sb.synced_parent = snap
        res = SyncResult(workspace_id=sb.key, snapshot_id=snap, parent_snapshot_id=parent, changed=changed)
        self.emit("synced", sb.req.sandbox_id, sb.req.job_id, data={**res.model_dump(), "trigger": trigger})
        return res

    def _end(self, sb: FakeSandbox, reason: str | None, sync: bool) -> None:
        was_sleeping = sb.state == "sleeping"
        if sync and sb.syncs and not was_sleeping:
            self._sync(sb, "stop")
        if sb.key is not None:
            self._release(sb)
        sb.state = "stopped"
        self.emit("state", sb.req.sandbox_id, sb.req.job_id, state="stopped", reason=reason)

    def sleep_sandbox(self, sandbox_id: str, reason: str = "idle for 600 s") -> None:
        """What the agent's idle detection does: sync, free everything, report ``sleeping``."""
        sb = self.sandboxes[sandbox_id]
        if sb.syncs:
            self._sync(sb, "sleep")
        self._release(sb)
        sb.state = "sleeping"
        self.emit("state", sandbox_id, sb.req.job_id, state="sleeping", reason=reason)

    def _wake_sandbox(self, sb: FakeSandbox, reason: str) -> None:
        if sb.state == "sleeping":
            if sb.key is not None:
                ws = self.workspaces[sb.key]
                ws.in_use_by = sb.req.sandbox_id
            sb.state = "running"
            self.emit("state", sb.req.sandbox_id, sb.req.job_id, state="running", reason=reason)

    async def get_sandbox(self, sandbox_id: str) -> SandboxInfo:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise SandboxGone(f"sandbox {sandbox_id} not found")
        return self._info(sb)

    async def list_sandboxes(self) -> list[SandboxInfo]:
        return [self._info(s) for s in self.sandboxes.values() if s.state != "stopped"]

    async def exec(self, sandbox_id: str, req: ExecRequest) -> ExecResult:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise NotFound(f"no sandbox {sandbox_id} on this agent")
        if sb.state not in ("running", "sleeping"):
            raise Conflict(f"sandbox {sandbox_id} is {sb.state}, not running")
        self.execs.append((sandbox_id, req))
        self._wake_sandbox(sb, "woken by exec")
        out, code = [], 0
        for raw in req.command.split(";"):
            word, _, rest = raw.strip().partition(" ")
            if word == "echo":
                out.append(rest + "\n")
            elif word == "sleep":
                if float(rest) > req.timeout:
                    await asyncio.sleep(min(req.timeout, 0.05))
                    return ExecResult(
                        exit_code=124, stdout="".join(out), stderr=f"command timed out after {req.timeout:g} s",
                        timed_out=True,
                    )  # fmt: skip
                await asyncio.sleep(float(rest))
            elif word == "exit":
                code = int(rest)
                break
            elif word == "write" and sb.key is not None:
                self.write(sb.key)
        return ExecResult(exit_code=code, stdout="".join(out), stderr="")

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
        if sb.state != "stopped":
            if self.sync_gate is not None and req.sync and sb.syncs:
                await self.sync_gate.wait()
            self._end(sb, req.reason, sync=req.sync)
        return self._info(sb)

    async def sync_sandbox(self, sandbox_id: str) -> SyncResult:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise NotFound(f"no sandbox {sandbox_id} on this agent")
        if not sb.syncs:
            raise Conflict(f"sandbox {sandbox_id} has no persistent workspace to sync")
        if sb.state in ("stopping", "stopped"):
            raise Conflict(f"sandbox {sandbox_id} is {sb.state}")
        if self.sync_gate is not None:
            await self.sync_gate.wait()
        return self._sync(sb, "request")

    async def wake_sandbox(self, sandbox_id: str) -> SandboxInfo:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise NotFound(f"no sandbox {sandbox_id} on this agent")
        self._wake_sandbox(sb, "woken by request")
        return self._info(sb)

    async def touch_sandbox(self, sandbox_id: str) -> None:
        if sandbox_id not in self.sandboxes:
            raise NotFound(f"no sandbox {sandbox_id} on this agent")

    async def update_sandbox(self, sandbox_id: str, req: SandboxSettings) -> SandboxInfo:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise NotFound(f"no sandbox {sandbox_id} on this agent")
        if req.no_sleep and not sb.req.persistent:
            raise ValidationError("no_sleep needs a persistent sandbox")
        self.settings_calls.append((sandbox_id, req))
        if req.no_sleep is not None:
            sb.no_sleep = req.no_sleep
        if req.clear_startup_command:
            sb.startup_command = None
        elif req.startup_command is not None:
            sb.startup_command = req.startup_command
        return self._info(sb)

    async def list_workspaces(self) -> list[WorkspaceInfo]:
        return [
            WorkspaceInfo(
                workspace_id=w.key,
                mode="persistent" if w.mode == "persistent" else "local",
                disk_gb=w.disk_gb,
                used_bytes=w.used_bytes,
                in_use=w.in_use_by is not None,
                synced_snapshot_id=w.synced_snapshot_id,
                last_used=w.last_used,
            )
            for w in self.workspaces.values()
        ]

    async def resize_workspace(self, workspace_id: str, req: ResizeRequest) -> WorkspaceInfo:
        ws = self.workspaces.get(workspace_id)
        if ws is None:
            raise NotFound(f"no local copy of workspace {workspace_id} on this agent")
        if ws.in_use_by is not None:
            raise Conflict(f"workspace {workspace_id} is in use by sandbox {ws.in_use_by}: stop it first")
        ws.disk_gb = req.disk_gb
        return next(w for w in await self.list_workspaces() if w.workspace_id == workspace_id)

    async def delete_workspace(self, workspace_id: str) -> None:
        ws = self.workspaces.get(workspace_id)
        if ws is None:
            raise NotFound(f"no local copy of workspace {workspace_id} on this agent")
        if ws.in_use_by is not None:
            raise Conflict(f"workspace {workspace_id} is in use by sandbox {ws.in_use_by}: stop it first")
        del self.workspaces[workspace_id]
        self.deleted_workspaces.append(workspace_id)

    async def events(self, after: int = 0) -> AsyncIterator[AgentEvent]:
        self.stream_calls.append(after)
        epoch = self._epoch
        i = after  # seq n is events_log[n - 1]
        while True:
            if self._epoch != epoch:
                raise ConnectionError("event stream broken")
            if self.stream_gate is not None and not self.stream_gate.is_set():
                await self.stream_gate.wait()
                continue
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
