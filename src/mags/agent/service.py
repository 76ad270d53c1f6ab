"""The host agent: runs jobs' scripts in sandboxes of this host and reports what happens.

The agent owns the runtime and every sandbox on its host.  For each sandbox request it
starts a sandbox, runs the script, turns output into timestamped log lines on the event
log, and reports the exit (with a reason: timeout, out of memory, stopped...).  Ephemeral
sandboxes are destroyed when their script ends; persistent ones stay until stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mags._version import __version__ as mags_version
from mags.agent.events import EventLog
from mags.agent.models import (
    AgentHealth,
    ExecRequest,
    ExecResult,
    SandboxInfo,
    SandboxRequest,
    SandboxState,
    StopRequest,
)
from mags.config import Settings
from mags.errors import NotFound, SandboxError, ValidationError
from mags.runtime.base import Limits, Sandbox, SandboxSpec
from mags.runtime.namespaces import BaseRuntime
from mags.runtime.protocol import Output

log = logging.getLogger(__name__)
MAX_LINE = 64 * 1024


@dataclass
class Tracked:
    """What the agent knows about one sandbox."""

    req: SandboxRequest
    state: SandboxState = "starting"
    sandbox: Sandbox | None = None
    created_at: float = field(default_factory=time.time)
    script_task: asyncio.Task[None] | None = None
    script_running: bool = False
    exit_code: int | None = None
    reason: str | None = None
    stop_reason: str | None = None
    oom_baseline: int = 0

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


class AgentService:
    """The agent's behaviour, independent of how it is served (HTTP app in agent/app.py)."""

    def __init__(self, settings: Settings, runtime: BaseRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.events = EventLog()
        self.agent_id = stable_agent_id(settings.data_dir)
        self.boot_id = uuid.uuid4().hex
        self._tracked: dict[str, Tracked] = {}
        self._closing = False

    # ------------------------------------------------------------------ queries
    def health(self) -> AgentHealth:
        return AgentHealth(
            agent_id=self.agent_id, boot_id=self.boot_id, runtime=self.runtime.name, sandboxes=len(self._tracked), version=mags_version
        )

    def _get(self, sandbox_id: str) -> Tracked:
        t = self._tracked.get(sandbox_id)
        if t is None:
            raise NotFound(f"no sandbox {sandbox_id} on this agent")
        return t

    def get(self, sandbox_id: str) -> SandboxInfo:
        return self._get(sandbox_id).info(self.runtime.name)

    def list(self) -> list[SandboxInfo]:
        return [t.info(self.runtime.name) for t in self._tracked.values()]

    # ------------------------------------------------------------------ create
    def _limits(self, req: SandboxRequest) -> Limits:
        s = self.settings
        return Limits(
            memory_mb=req.memory_mb or s.default_memory_mb,
            pids=req.pids or s.default_pids,
            cpus=req.cpus or s.default_cpus,
            disk_gb=req.disk_gb or s.default_disk_gb,
        ).validate()

    def _writable(self, req: SandboxRequest) -> Path | None:
        if req.workspace is None:
            return None
        # Local workspace directory; object-store sync, disk limits and bases: storage layer.
        d = self.settings.data_dir / "workspaces" / req.workspace.workspace_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    async def create(self, req: SandboxRequest) -> SandboxInfo:
        if self._closing:
            raise SandboxError("agent is shutting down")
        existing = self._tracked.get(req.sandbox_id)
        if existing is not None:
            if existing.req.job_id != req.job_id:
                raise ValidationError(f"sandbox id {req.sandbox_id} is taken")
            return existing.info(self.runtime.name)  # idempotent retry
        if not req.script.strip():
            raise ValidationError("script is empty")
        t = Tracked(req=req)
        self._tracked[req.sandbox_id] = t
        try:
            spec = SandboxSpec(
                sandbox_id=req.sandbox_id, image=req.image, limits=self._limits(req), writable=self._writable(req)
            )
            sb = await self.runtime.create(spec)
            t.sandbox = sb
            t.oom_baseline = (await sb.stats()).oom_kills
            for f in req.files:
                data = Path(f.host_path).read_bytes()
                await sb.put_file(f"/uploads/{f.name}", data, f.mode)
                await sb.put_file(f"/root/{f.name}", data, f.mode)
            proc = await sb.spawn_script(req.script, req.environment)
        except Exception as exc:
            self._tracked.pop(req.sandbox_id, None)
            if t.sandbox is not None:
                await t.sandbox.destroy()
            if isinstance(exc, (SandboxError, ValidationError)) or hasattr(exc, "status_code"):
                raise
            raise SandboxError(f"cannot start sandbox: {exc}") from exc
        t.state = "running"
        t.script_running = True
        self.events.emit("started", req.sandbox_id, req.job_id, ip=sb.ip, state="running")
        t.script_task = asyncio.get_running_loop().create_task(self._run_script(t, proc))
        return t.info(self.runtime.name)

    async def _run_script(self, t: Tracked, proc: object) -> None:
        from mags.runtime.protocol import ExitStatus, ProcessHandle

        assert isinstance(proc, ProcessHandle) and t.sandbox is not None
        req = t.req
        sid, jid = req.sandbox_id, req.job_id
        started = time.monotonic()
        splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
        lines = 0
        cap = self.settings.max_log_lines
        truncated = False

        def emit_lines(stream: str, texts: list[str]) -> None:
            nonlocal lines, truncated
            for text in texts:
                if lines >= cap:
                    if not truncated:
                        truncated = True
                        self.events.emit("log", sid, jid, source="system", message=f"output truncated after {cap} lines")
                    return
                lines += 1
                self.events.emit("log", sid, jid, source=stream, message=text)

        timeout = req.timeout_s if req.timeout_s is not None else float(self.settings.max_job_seconds)
        timed_out = False

        async def pump() -> ExitStatus:
            async for ev in proc.events():
                if isinstance(ev, Output):
                    emit_lines(ev.stream, splitters[ev.stream].feed(ev.data))
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
        for stream, sp in splitters.items():
            emit_lines(stream, sp.flush())
        for err in proc.errors:
            emit_lines("stderr", [err])
        reason = None
        if timed_out:
            reason = f"timed out after {timeout:g} s"
        elif t.stop_reason:
            reason = t.stop_reason
        else:
            try:
                stats = await t.sandbox.stats()
                if stats.oom_kills > t.oom_baseline:
                    reason = f"out of memory (limit {t.sandbox.spec.limits.memory_mb} MB): killed by the OOM killer"
            except Exception:  # noqa: BLE001 - stats are best effort once a sandbox is dying
                pass
            if reason is None and t.sandbox.conn.closed.is_set():
                reason = "sandbox exited unexpectedly"
        t.script_running = False
        t.exit_code = status.exit_code
        t.reason = reason
        duration = int((time.monotonic() - started) * 1000)
        self.events.emit("exit", sid, jid, exit_code=status.exit_code, duration_ms=duration, reason=reason)
        if not req.persistent or t.sandbox.conn.closed.is_set() or t.stop_reason:
            await self._destroy(t, t.stop_reason or reason or "script finished")

    # ------------------------------------------------------------------ exec / stop
    async def exec(self, sandbox_id: str, req: ExecRequest) -> ExecResult:
        t = self._get(sandbox_id)
        if t.sandbox is None or t.state not in ("running",):
            raise SandboxError(f"sandbox {sandbox_id} is {t.state}, not running", status_code=409)
        if not req.command.strip():
            raise ValidationError("command is empty")
        if not 0 < req.timeout <= 86400:
            raise ValidationError("timeout must be between 0 and 86400 seconds")
        res = await t.sandbox.exec(req.command, req.environment, req.cwd, timeout=req.timeout)
        stderr = res.stderr.decode(errors="replace")
        if res.timed_out:
            stderr += f"\ncommand timed out after {req.timeout:g} s and was killed\n"
        return ExecResult(
            exit_code=124 if res.timed_out else res.exit_code,
            stdout=res.stdout.decode(errors="replace"),
            stderr=stderr,
            timed_out=res.timed_out,
        )

    async def stop(self, sandbox_id: str, req: StopRequest) -> SandboxInfo:
        t = self._get(sandbox_id)
        if t.state in ("stopping", "stopped"):
            return t.info(self.runtime.name)
        t.stop_reason = req.reason
        if t.script_running and t.script_task is not None:
            # kill the script; _run_script reports the exit and destroys the sandbox
            if t.sandbox is not None:
                try:
                    await t.sandbox.kill_all()
                except SandboxError:
                    pass
            try:
                await asyncio.wait_for(asyncio.shield(t.script_task), 10)
            except TimeoutError:
                t.script_task.cancel()
        await self._destroy(t, req.reason)
        return t.info(self.runtime.name)

    async def _destroy(self, t: Tracked, reason: str) -> None:
        if t.state in ("stopping", "stopped"):
            return
        t.state = "stopping"
        try:
            if t.sandbox is not None:
                await t.sandbox.destroy()
        finally:
            t.state = "stopped"
            t.reason = t.reason or reason
            self.events.emit("state", t.req.sandbox_id, t.req.job_id, state="stopped", reason=reason)
            # forget it after a while so late queries still get an answer
            asyncio.get_running_loop().call_later(300, self._tracked.pop, t.req.sandbox_id, None)

    async def close(self, reason: str = "agent shutting down") -> None:
        self._closing = True
        await asyncio.gather(
            *(self.stop(sid, StopRequest(reason=reason, sync=True)) for sid in list(self._tracked)),
            return_exceptions=True,
        )
