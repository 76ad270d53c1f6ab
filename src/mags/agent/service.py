"""The host agent: runs jobs' scripts in sandboxes of this host and reports what happens.

The agent owns the runtime, every sandbox on its host and the local copies of workspaces.
For each sandbox request it prepares the workspace (restore, base layers, disk size), starts
a sandbox, places uploaded files, runs the script and turns its output into timestamped log
lines on the event log, then reports the exit with a reason (timeout, out of memory,
stopped...).  Ephemeral and local-workspace sandboxes end with their script; persistent ones
stay up, sync periodically, sleep when idle and wake on demand (agent/lifecycle.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mags._version import __version__ as mags_version
from mags.agent.events import EventLog
from mags.agent.lifecycle import LifecycleMixin
from mags.agent.models import (
    AgentHealth,
    ExecRequest,
    ExecResult,
    SandboxInfo,
    SandboxRequest,
    SandboxSettings,
    SandboxState,
    StopRequest,
    SyncResult,
)
from mags.agent.spawns import FORGET_AFTER_S, LOST_REASON, SpawnRecords
from mags.agent.workspaces import WorkspaceManager
from mags.config import Settings
from mags.core.logcap import TRUNCATED_KEY, cut_bytes, cut_text, line_bytes, truncation_message
from mags.errors import Conflict, MagsError, NotFound, SandboxError, SandboxGone, ValidationError
from mags.runtime.base import Limits, Sandbox, SandboxSpec
from mags.runtime.namespaces import BaseRuntime
from mags.runtime.protocol import ExitStatus, Output, ProcessHandle

log = logging.getLogger(__name__)
KEPT_REASON = "asleep while the server restarts: it comes back when the server is up again"
RESUMED_REASON = "re-provisioned: its sandbox was lost when the server or host went down"
TEARDOWN_DELAY_S = 0.015  # after a script's exit is reported, before its sandbox is destroyed
MAX_LINE = 64 * 1024


@dataclass
class Tracked:
    """What the agent knows about one sandbox (a job's VM), across sleeps and wakes."""

    req: SandboxRequest
    state: SandboxState = "starting"
    sandbox: Sandbox | None = None
    created_at: float = field(default_factory=time.time)
    script_task: asyncio.Task[None] | None = None
    script_running: bool = False
    exit_code: int | None = None
    reason: str | None = None
    stop_reason: str | None = None
    quiet_kill: bool = False  # the sandbox is going to sleep: the script's end is not an exit
    oom_baseline: int = 0
    last_activity: float = field(default_factory=time.time)
    no_sleep: bool = False
    startup_command: str | None = None
    synced_parent: str | None = None  # last snapshot of the workspace this sandbox reported
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # idle detection
    cpu_seen: int = 0
    cpu_at: float = 0.0
    last_busy: float = field(default_factory=time.time)
    cpu_at_sync: int = -1
    activity_at_sync: float = 0.0

    @property
    def persistent(self) -> bool:
        return self.req.persistent

    @property
    def workspace_key(self) -> str | None:
        ws = self.req.workspace
        return ws.workspace_id if ws is not None and ws.mode != "ephemeral" else None

    @property
    def syncs(self) -> bool:
        ws = self.req.workspace
        return ws is not None and ws.mode == "persistent" and ws.sync

    def info(self, runtime: str) -> SandboxInfo:
        return SandboxInfo(
            sandbox_id=self.req.sandbox_id,
            job_id=self.req.job_id,
            state=self.state,
            ip=self.sandbox.ip if self.sandbox else None,
            runtime=runtime,
            script_running=self.script_running,
            created_at=self.created_at,
            exit_code=self.exit_code,
            reason=self.reason,
            workspace_id=self.workspace_key,
            no_sleep=self.no_sleep,
            startup_command=self.startup_command,
            last_activity=self.last_activity,
        )


def stable_agent_id(data_dir: Path) -> str:
    """The agent's id, created once and kept in ``<data_dir>/agent.id``."""
    path = data_dir / "agent.id"
    try:
        existing = path.read_text().strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    new = f"agent-{uuid.uuid4().hex[:12]}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new + "\n")
    os.replace(tmp, path)
    return new


class LineSplitter:
    """Turns output chunks of one stream into lines (a partial line waits for its end)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[str]:
        self.buf += data
        lines: list[str] = []
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                if len(self.buf) > MAX_LINE:
                    lines.append(self.buf[:MAX_LINE].decode(errors="replace"))
                    self.buf = self.buf[MAX_LINE:]
                    continue
                return lines
            line = self.buf[:i]
            self.buf = self.buf[i + 1 :]
            lines.append(line.rstrip(b"\r").decode(errors="replace"))

    def flush(self) -> list[str]:
        if not self.buf:
            return []
        line, self.buf = self.buf, b""
        return [line.decode(errors="replace")]


class AgentService(LifecycleMixin):
    """The agent's behaviour, independent of how it is served (HTTP app in agent/app.py)."""

    def __init__(self, settings: Settings, runtime: BaseRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.events = EventLog()
        self.agent_id = stable_agent_id(settings.data_dir)
        self.boot_id = uuid.uuid4().hex
        self.workspaces = WorkspaceManager(settings)
        # base layers stacked under a live sandbox are never evicted from the layer cache
        self.workspaces.live_layers = lambda: [p for sb in runtime.sandboxes() for p in sb.spec.layers]
        self._tracked: dict[str, Tracked] = {}
        self.spawns = SpawnRecords(settings.data_dir / "spawned")  # scripts started, across restarts
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.to_thread(self.workspaces.start)
        await asyncio.to_thread(self.spawns.load)
        # listed (as lost) until the control plane had time to reconcile its jobs with them
        asyncio.get_running_loop().call_later(FORGET_AFTER_S, self.spawns.forget_previous)
        self.start_lifecycle()

    # ------------------------------------------------------------------ queries
    def health(self) -> AgentHealth:
        return AgentHealth(
            agent_id=self.agent_id, boot_id=self.boot_id, runtime=self.runtime.name,
            sandboxes=len(self._tracked), version=mags_version,
        )

    def _get(self, sandbox_id: str) -> Tracked:
        t = self._tracked.get(sandbox_id)
        if t is None:
            raise NotFound(f"no sandbox {sandbox_id} on this agent")
        return t

    def get(self, sandbox_id: str) -> SandboxInfo:
        return self._get(sandbox_id).info(self.runtime.name)

    def list(self) -> list[SandboxInfo]:
        """Our sandboxes, and as ``stopped`` the scripts an earlier run of the agent started."""
        infos = [t.info(self.runtime.name) for t in self._tracked.values()]
        infos += [
            SandboxInfo(sandbox_id=r.sandbox_id, job_id=r.job_id, state="stopped", runtime=self.runtime.name,
                        created_at=r.spawned_at, reason=LOST_REASON)
            for r in self.spawns.previous.values() if r.sandbox_id not in self._tracked
        ]  # fmt: skip
        return infos

    # ------------------------------------------------------------------ create
    def _limits(self, req: SandboxRequest) -> Limits:
        s = self.settings
        return Limits(
            memory_mb=req.memory_mb or s.default_memory_mb,
            pids=req.pids or s.default_pids,
            cpus=req.cpus or s.default_cpus,
            disk_gb=req.disk_gb or s.default_disk_gb,
        ).validate()

    async def _boot(self, t: Tracked) -> Sandbox:
        """Prepare the workspace and start a sandbox for ``t`` (first start or wake)."""
        req = t.req
        limits = self._limits(req)
        writable, layers = None, []
        ws = req.workspace
        key = t.workspace_key
        if ws is not None and key is None:  # ephemeral on top of base layers
            layers = [await self.workspaces._layer(lr) for lr in ws.layers]
        elif ws is not None and key is not None:
            writable, layers = await self.workspaces.acquire(ws, limits.disk_gb, req.sandbox_id)
        try:
            spec = SandboxSpec(
                sandbox_id=req.sandbox_id, image=req.image, limits=limits, writable=writable, layers=layers
            )
            sb = await self.runtime.create(spec)
        except BaseException:
            if key is not None:
                await self.workspaces.release(key, req.sandbox_id)
            raise
        t.oom_baseline = 0  # every sandbox gets a fresh cgroup
        t.cpu_seen, t.cpu_at = 0, time.monotonic()
        return sb

    async def create(self, req: SandboxRequest) -> SandboxInfo:
        if self._closing:
            raise SandboxError("agent is shutting down")
        existing = self._tracked.get(req.sandbox_id)
        if existing is not None:
            if existing.req.job_id != req.job_id:
                raise ValidationError(f"sandbox id {req.sandbox_id} is taken")
            return existing.info(self.runtime.name)  # idempotent retry
        if req.sandbox_id in self.spawns.previous and req.resume is None:
            # its script ran before this agent restarted: never a second time (agent/spawns.py)
            raise Conflict(f"sandbox {req.sandbox_id} already ran its script before the agent restarted")
        if not req.script.strip():
            raise ValidationError("script is empty")
        if req.no_sleep and not req.persistent:
            raise ValidationError("no_sleep needs a persistent sandbox")
        if req.resume is not None and (not req.persistent or req.workspace is None):
            raise ValidationError("only a persistent sandbox on a workspace can be resumed")
        t = Tracked(req=req, no_sleep=req.no_sleep, startup_command=req.startup_command)
        if req.workspace is not None:
            t.synced_parent = req.workspace.snapshot_id
        self._tracked[req.sandbox_id] = t
        if req.resume is not None and not req.rerun_script:
            return await self._resume(t)
        try:
            async with t.lock:
                sb = await self._boot(t)
                t.sandbox = sb
                for f in req.files:
                    data = Path(f.host_path).read_bytes()
                    await sb.put_file(f"/uploads/{f.name}", data, f.mode)
                    await sb.put_file(f"/root/{f.name}", data, f.mode)
                self.spawns.write(req.sandbox_id, req.job_id)  # before the spawn, see agent/spawns.py
                proc = await sb.spawn_script(req.script, req.environment)
        except Exception as exc:
            self._tracked.pop(req.sandbox_id, None)
            self.spawns.forget(req.sandbox_id)
            if t.sandbox is not None:
                await t.sandbox.destroy()
                if t.workspace_key:
                    await self.workspaces.release(t.workspace_key, req.sandbox_id)
            if isinstance(exc, SandboxGone):  # "sandbox is gone" alone says nothing of when
                raise SandboxError(f"the sandbox died before its script started ({exc})") from exc
            if isinstance(exc, MagsError):
                raise
            raise SandboxError(f"cannot start sandbox: {exc}") from exc
        t.state = "running"
        t.script_running = True
        t.last_activity = time.time()
        if req.resume is not None:
            self.events.emit("state", req.sandbox_id, req.job_id, state="running", reason=RESUMED_REASON)
            await self._start_startup_command(t, sb)
        else:
            self.events.emit("started", req.sandbox_id, req.job_id, ip=sb.ip, state="running")
        t.script_task = asyncio.get_running_loop().create_task(self._run_script(t, proc))
        return t.info(self.runtime.name)

    async def _resume(self, t: Tracked) -> SandboxInfo:
        """A lost VM whose script had finished: registered asleep, or booted like a wake."""
        req = t.req
        t.script_running = False
        if req.resume == "sleeping":
            t.state = "sleeping"
            return t.info(self.runtime.name)
        try:
            async with t.lock:
                await self._wake_locked(t, RESUMED_REASON)
        except Exception as exc:
            self._tracked.pop(req.sandbox_id, None)
            if isinstance(exc, MagsError):
                raise
            raise SandboxError(f"cannot resume sandbox: {exc}") from exc
        return t.info(self.runtime.name)

    def _pump_output(self, t: Tracked, limit: int | None = None):  # noqa: ANN202 - small closure factory
        """A line emitter for a process's output: log events, capped per job in lines and bytes.

        Once a cap is reached the output is still read (the sandbox's protocol stream must keep
        flowing) but no longer split or kept: the event buffer holds at most ``max_log_bytes``
        of a process's output (see core/logcap.py).
        """
        sid, jid = t.req.sandbox_id, t.req.job_id
        cap = self.settings.max_log_lines if limit is None else limit
        byte_cap = self.settings.max_log_bytes
        splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
        lines = used = 0
        closed = False

        def close(message: str, **fields: Any) -> None:
            nonlocal closed
            closed = True
            self.events.emit("log", sid, jid, source="system", message=message, **fields)

        def emit(stream: str, texts: list[str]) -> None:
            nonlocal lines, used
            for text in texts:
                if closed:
                    return
                if lines >= cap:
                    close(f"output truncated after {cap} lines")
                    return
                size = line_bytes(text)
                if used + size > byte_cap:
                    # the line that crosses the cap is cut to fit, so the log ends exactly there
                    head = cut_text(text, byte_cap - used - 1)
                    if head:
                        self.events.emit("log", sid, jid, source=stream, message=head)
                    close(truncation_message(byte_cap), data={TRUNCATED_KEY: byte_cap})
                    return
                lines += 1
                used += size
                self.events.emit("log", sid, jid, source=stream, message=text)

        def feed(ev: Output) -> None:
            if not closed:
                emit(ev.stream, splitters[ev.stream].feed(ev.data))

        def flush(errors: list[str]) -> None:
            for stream, sp in splitters.items():
                emit(stream, sp.flush())
            for err in errors:
                emit("stderr", [err])

        return feed, flush

    async def _run_script(self, t: Tracked, proc: ProcessHandle) -> None:
        assert t.sandbox is not None
        req = t.req
        started = time.monotonic()
        feed, flush = self._pump_output(t)
        timeout = req.timeout_s if req.timeout_s is not None else 0.0
        timed_out = False

        async def pump() -> ExitStatus:
            async for ev in proc.events():
                if isinstance(ev, Output):
                    feed(ev)
                else:
                    return ev
            return ExitStatus(137, 9)

        try:
            status = await asyncio.wait_for(pump(), timeout if timeout > 0 else None)
        except TimeoutError:
            timed_out = True
            try:
                await proc.signal(signal.SIGKILL)
            except SandboxError:
                pass
            status = await proc.wait()
        except asyncio.CancelledError:
            status = ExitStatus(137, 9)
        flush(proc.errors)
        t.script_running = False
        if t.quiet_kill:
            return  # the sandbox went to sleep with its script: not an exit of the script
        sb = t.sandbox
        reason = None
        if timed_out:
            reason = f"timed out after {timeout:g} s"
        elif t.stop_reason:
            reason = t.stop_reason
        elif sb is not None:
            try:
                stats = await sb.stats()
                if stats.oom_kills > t.oom_baseline:
                    reason = f"out of memory (limit {sb.spec.limits.memory_mb} MB): killed by the OOM killer"
            except Exception:  # noqa: BLE001 - stats are best effort once a sandbox is dying
                pass
            if reason is None and sb.conn.closed.is_set():
                reason = "sandbox exited unexpectedly"
        t.exit_code = status.exit_code
        t.reason = reason
        duration = int((time.monotonic() - started) * 1000)
        self.events.emit("exit", req.sandbox_id, req.job_id, exit_code=status.exit_code, duration_ms=duration,
                         reason=reason)
        dead = sb is None or sb.conn.closed.is_set()
        if not req.persistent and not dead and not t.stop_reason:
            # the exit is on its way to the caller: let that finish before the teardown's
            # syscalls and thread work compete with it (the sandbox has nothing left to run)
            await asyncio.sleep(TEARDOWN_DELAY_S)
        if not req.persistent or dead or t.stop_reason:
            # a persistent workspace is synced whenever its sandbox ends (also a run without
            # -p on it, or a sandbox that died: the disk is intact)
            await self._end(t, t.stop_reason or reason or "script finished", sync=True)

    # ------------------------------------------------------------------ exec / settings
    async def exec(self, sandbox_id: str, req: ExecRequest) -> ExecResult:
        t = self._get(sandbox_id)
        if not req.command.strip():
            raise ValidationError("command is empty")
        if not 0 < req.timeout <= 86400:
            raise ValidationError("timeout must be between 0 and 86400 seconds")
        sb = await self.ensure_awake(t, "woken by exec")
        t.last_activity = time.time()
        # capped while it is read: however much a command prints, the answer costs this
        # process a few times max_exec_output_bytes
        res = await sb.exec(
            req.command, req.environment, req.cwd, timeout=req.timeout,
            max_output=self.settings.max_exec_output_bytes,
        )  # fmt: skip
        t.last_activity = time.time()
        stderr = cut_bytes(res.stderr, res.stderr_truncated)
        if res.timed_out:
            stderr += f"\ncommand timed out after {req.timeout:g} s and was killed\n"
        return ExecResult(
            exit_code=124 if res.timed_out else res.exit_code,
            stdout=cut_bytes(res.stdout, res.stdout_truncated),
            stderr=stderr,
            timed_out=res.timed_out,
            stdout_truncated=res.stdout_truncated,
            stderr_truncated=res.stderr_truncated,
        )

    async def update(self, sandbox_id: str, req: SandboxSettings) -> SandboxInfo:
        t = self._get(sandbox_id)
        if req.no_sleep is not None:
            if req.no_sleep and not t.persistent:
                raise ValidationError("no_sleep needs a persistent sandbox")
            t.no_sleep = req.no_sleep
            t.last_busy = time.time()  # a switch back to sleeping starts a fresh idle period
        if req.clear_startup_command:
            t.startup_command = None
        elif req.startup_command is not None:
            t.startup_command = req.startup_command
        return t.info(self.runtime.name)

    async def sync(self, sandbox_id: str) -> SyncResult:
        t = self._get(sandbox_id)
        if not t.syncs or t.workspace_key is None:
            raise Conflict(f"sandbox {sandbox_id} has no persistent workspace to sync")
        if t.state in ("stopping", "stopped"):
            raise Conflict(f"sandbox {sandbox_id} is {t.state}")
        return await self.sync_workspace(t, "request")

    # ------------------------------------------------------------------ stop
    async def stop(self, sandbox_id: str, req: StopRequest) -> SandboxInfo:
        t = self._get(sandbox_id)
        if t.state in ("stopping", "stopped"):
            return t.info(self.runtime.name)
        t.stop_reason = req.reason
        if t.script_running and t.script_task is not None and t.sandbox is not None:
            # kill the script; _run_script reports the exit and ends the sandbox
            try:
                await t.sandbox.kill_all()
            except SandboxError:
                pass
            try:
                await asyncio.wait_for(asyncio.shield(t.script_task), 10)
            except TimeoutError:
                t.script_task.cancel()
        await self._end(t, req.reason, sync=req.sync)
        return t.info(self.runtime.name)

    async def _end(self, t: Tracked, reason: str, sync: bool) -> None:
        """Stop the sandbox for good: destroy it, sync its workspace, release it."""
        async with t.lock:
            if t.state in ("stopping", "stopped"):
                return
            was_sleeping = t.state == "sleeping"
            t.state = "stopping"
            try:
                if t.sandbox is not None:
                    await t.sandbox.destroy()
                    t.sandbox = None
                if sync and t.syncs and not was_sleeping:
                    try:
                        await self._sync_locked(t, "stop")
                    except MagsError as exc:
                        log.error("sandbox %s: final sync failed: %s", t.req.sandbox_id, exc)
                        self.events.emit("log", t.req.sandbox_id, t.req.job_id, source="system",
                                         message=f"final workspace sync failed: {exc}")
                if t.workspace_key is not None:
                    await self.workspaces.release(t.workspace_key, t.req.sandbox_id)
            finally:
                t.state = "stopped"
                t.reason = t.reason or reason
                self.events.emit("state", t.req.sandbox_id, t.req.job_id, state="stopped", reason=reason)
                # forget it after a while so late queries still get an answer
                asyncio.get_running_loop().call_later(FORGET_AFTER_S, self._forget, t)

    def _forget(self, t: Tracked) -> None:
        if self._tracked.get(t.req.sandbox_id) is t:  # not a newer sandbox under the same id
            del self._tracked[t.req.sandbox_id]
            self.spawns.forget(t.req.sandbox_id)

    async def close(self, reason: str = "agent shutting down", keep: Collection[str] = ()) -> None:
        """Stop every sandbox (synced); those in ``keep`` are put to sleep instead.

        ``keep``: persistent VMs the control plane brings back at its next start (see
        scheduler/resume.py).  Sleeping syncs the workspace and frees everything, like a stop;
        the VM's state says ``sleeping``, so it can wake again later.
        """
        self._closing = True
        self.stop_lifecycle()

        async def end(sid: str) -> None:
            t = self._tracked.get(sid)
            if t is not None and sid in keep and t.workspace_key is not None:
                try:
                    await self._sleep(t, KEPT_REASON)
                    if t.state == "sleeping":
                        return
                except Exception as exc:  # noqa: BLE001 - then it is stopped like the rest
                    log.warning("sandbox %s: cannot put it to sleep at shutdown: %s", sid, exc)
            await self.stop(sid, StopRequest(reason=reason, sync=True))

        await asyncio.gather(*(end(sid) for sid in list(self._tracked)), return_exceptions=True)
        await asyncio.to_thread(self.workspaces.close)

    # ------------------------------------------------------------------ workspaces admin
    async def resize_workspace(self, key: str, disk_gb: int):  # noqa: ANN201 - WorkspaceInfo
        if not 1 <= disk_gb <= self.settings.max_disk_gb:
            raise ValidationError(f"disk_gb must be between 1 and {self.settings.max_disk_gb}")
        return await self.workspaces.resize(key, disk_gb)

    async def delete_workspace(self, key: str) -> None:
        await self.workspaces.delete(key)
