"""Persistent sandboxes over time: periodic workspace sync, idle → sleeping, wake on demand.

* **Sync**: every ``sync_interval_s`` a running persistent sandbox whose CPU time or activity
  moved since its last sync is snapshotted (the syncer itself commits nothing when nothing
  changed).  Also on request, before sleeping and on stop.
* **Sleep**: with no exec/SSH/URL activity and no CPU use above ``IDLE_CPU_SHARE`` for
  ``idle_timeout_s`` (so a long `pip install` or a training loop is never put to sleep), and
  not ``no_sleep``: sync, then destroy the sandbox — every process stopped, RAM and CPU freed;
  the workspace stays on the local disk.  State ``sleeping``.
* **Wake** (exec, SSH, URL, explicit): a new sandbox on the same workspace (no download: the
  local copy is current), ``startup_command`` started in the background, state ``running``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from mags.agent.models import SyncResult
from mags.errors import Conflict, MagsError
from mags.runtime.base import Sandbox
from mags.runtime.protocol import Output

if TYPE_CHECKING:
    from mags.agent.service import AgentService, Tracked

log = logging.getLogger(__name__)
IDLE_CPU_SHARE = 0.02  # a sandbox using more than 2% of a CPU is busy (runtimes may say otherwise)
STARTUP_LOG_LINES = 2000


class LifecycleMixin:
    """Sleep, wake and periodic sync; mixed into AgentService."""

    _lifecycle_task: asyncio.Task[None] | None = None

    def start_lifecycle(self: AgentService) -> None:
        self._lifecycle_task = asyncio.get_running_loop().create_task(self._lifecycle_loop())

    def stop_lifecycle(self: AgentService) -> None:
        if self._lifecycle_task is not None:
            self._lifecycle_task.cancel()
            self._lifecycle_task = None

    def _tick_seconds(self: AgentService) -> float:
        s = self.settings
        return max(0.2, min(5.0, s.idle_timeout_s / 4, s.sync_interval_s / 2))

    async def _lifecycle_loop(self: AgentService) -> None:
        while True:
            await asyncio.sleep(self._tick_seconds())
            for t in list(self._tracked.values()):
                try:
                    await self._tend(t)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one sandbox's trouble must not stop the loop
                    log.warning("lifecycle of %s: %s", t.req.sandbox_id, exc)

    async def _tend(self: AgentService, t: Tracked) -> None:
        if t.state != "running" or t.sandbox is None or not t.persistent or t.lock.locked():
            return
        now = time.time()
        stats = await t.sandbox.stats()
        mono = time.monotonic()
        idle_share = getattr(self.runtime, "idle_cpu_share", IDLE_CPU_SHARE)
        if t.cpu_at and mono > t.cpu_at:
            share = (stats.cpu_usec - t.cpu_seen) / 1e6 / (mono - t.cpu_at)
            if share > idle_share:
                t.last_busy = now
        t.cpu_seen, t.cpu_at = stats.cpu_usec, mono
        s = self.settings
        if t.syncs and now - t.activity_at_sync >= s.sync_interval_s:
            # anything ran since the last sync (more than the runtime's own idle overhead)?
            overhead = getattr(self.runtime, "idle_cpu_overhead", 0.0)
            cpu_since = (stats.cpu_usec - t.cpu_at_sync) / 1e6
            worked = t.cpu_at_sync < 0 or cpu_since > overhead * max(0.0, now - t.activity_at_sync)
            moved = worked or t.last_activity > t.activity_at_sync
            if moved:
                await self.sync_workspace(t, "periodic", stats.cpu_usec)
            else:
                t.activity_at_sync, t.cpu_at_sync = now, stats.cpu_usec
        idle_for = now - max(t.last_activity, t.last_busy)
        timeout = t.req.idle_timeout_s if t.req.idle_timeout_s is not None else s.idle_timeout_s
        if not t.no_sleep and timeout > 0 and idle_for >= timeout:
            await self._sleep(t, f"idle for {int(idle_for)} s")

    # ------------------------------------------------------------------ sync
    async def sync_workspace(self: AgentService, t: Tracked, trigger: str, cpu: int | None = None) -> SyncResult:
        async with t.lock:
            return await self._sync_locked(t, trigger, cpu)

    async def _sync_locked(self: AgentService, t: Tracked, trigger: str, cpu: int | None = None) -> SyncResult:
        key = t.workspace_key
        if key is None:
            raise Conflict(f"sandbox {t.req.sandbox_id} has no workspace")
        sb = t.sandbox
        if sb is not None and not sb.conn.closed.is_set():
            try:  # gVisor keeps written data in its own page cache until sync(2)
                await sb.exec(["sync"], timeout=30)
            except MagsError:
                pass
        res = await self.workspaces.sync(key, t.synced_parent)
        if res.snapshot_id:
            t.synced_parent = res.snapshot_id
        t.activity_at_sync = time.time()
        if cpu is not None:
            t.cpu_at_sync = cpu
        data = res.model_dump()
        data["trigger"] = trigger
        self.events.emit("synced", t.req.sandbox_id, t.req.job_id, data=data)
        return res

    # ------------------------------------------------------------------ sleep / wake
    async def _sleep(self: AgentService, t: Tracked, reason: str) -> None:
        async with t.lock:
            if t.state != "running" or t.sandbox is None:
                return
            if t.syncs:
                await self._sync_locked(t, "sleep")
            t.quiet_kill = True
            sb, t.sandbox = t.sandbox, None
            await sb.destroy()
            if t.script_task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(t.script_task), 5)
                except TimeoutError:
                    t.script_task.cancel()
            t.script_task = None
            if t.workspace_key is not None:
                await self.workspaces.release(t.workspace_key, t.req.sandbox_id)
            t.state = "sleeping"
            self.events.emit("state", t.req.sandbox_id, t.req.job_id, state="sleeping", reason=reason)

    async def ensure_awake(self: AgentService, t: Tracked, reason: str) -> Sandbox:
        """The running sandbox of ``t``, woken first if it sleeps."""
        if t.state == "running" and t.sandbox is not None and not t.lock.locked():
            return t.sandbox
        async with t.lock:
            if t.state == "sleeping":
                await self._wake_locked(t, reason)
            if t.state != "running" or t.sandbox is None:
                raise Conflict(f"sandbox {t.req.sandbox_id} is {t.state}, not running")
            return t.sandbox

    async def wake(self: AgentService, sandbox_id: str, reason: str = "woken by request") -> None:
        """Wake the sandbox if it sleeps; either way, count this as activity (proxy traffic)."""
        t = self._get(sandbox_id)
        await self.ensure_awake(t, reason)
        t.last_activity = time.time()

    def touch(self: AgentService, sandbox_id: str) -> None:
        """Count traffic as activity without waking anything (the proxy's marks)."""
        self._get(sandbox_id).last_activity = time.time()

    async def _wake_locked(self: AgentService, t: Tracked, reason: str) -> None:
        t.state = "starting"
        try:
            sb = await self._boot(t)
        except Exception:
            t.state = "sleeping"
            raise
        t.sandbox = sb
        t.quiet_kill = False
        t.state = "running"
        t.last_activity = time.time()
        t.last_busy = time.time()
        t.activity_at_sync = time.time()
        self.events.emit("state", t.req.sandbox_id, t.req.job_id, state="running", reason=reason)
        await self._start_startup_command(t, sb)

    async def _start_startup_command(self: AgentService, t: Tracked, sb: Sandbox) -> None:
        """Run the sandbox's startup command in the background (after a wake or a resume)."""
        if t.startup_command:
            proc = await sb.spawn_script(t.startup_command, t.req.environment)
            asyncio.get_running_loop().create_task(self._pump_background(t, proc))

    async def _pump_background(self: AgentService, t: Tracked, proc) -> None:  # noqa: ANN001
        feed, flush = self._pump_output(t, STARTUP_LOG_LINES)
        async for ev in proc.events():
            if isinstance(ev, Output):
                feed(ev)
        flush(proc.errors)
