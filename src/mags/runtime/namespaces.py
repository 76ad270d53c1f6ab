"""The ``namespaces`` runtime: Linux namespaces + cgroups + overlayfs via ``mags-sandbox launch``."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path

from mags.config import Settings
from mags.errors import RuntimeUnavailable, SandboxError
from mags.runtime.base import Limits, Sandbox, SandboxSpec, SandboxStats
from mags.runtime.host import HostEnv, SandboxResources, read_tail
from mags.runtime.pool import WarmPool
from mags.runtime.protocol import InitConnection
from mags.runtime.spawn import Child, spawn
from mags.runtime.spawn import run as run_process

log = logging.getLogger(__name__)
HELLO_TIMEOUT = 15.0


class ManagedSandbox(Sandbox):
    """A sandbox whose host resources (cgroup, netns slot, dirs) belong to a HostEnv."""

    def __init__(
        self, spec: SandboxSpec, conn: InitConnection, res: SandboxResources, proc: Child,
        runtime: BaseRuntime,
    ) -> None:
        super().__init__(spec, conn, res.net.ip)
        self.res = res
        self.proc = proc
        self.runtime = runtime
        self.base_env.update(res.image.env)
        # a plain sandbox runs scripts with the image's shell directly; a workspace or base
        # layer may have removed bash, so those go through the sh shim that checks
        if not spec.layers and spec.writable is None:
            self.shell = res.image.shell
        self._destroy_lock = asyncio.Lock()

    @property
    def image_version(self) -> str:
        return self.res.image.version

    async def stats(self) -> SandboxStats:
        return self.res.cgroup.stats()

    async def set_limits(self, limits: Limits) -> None:
        limits.validate()
        await asyncio.to_thread(self.res.cgroup.set_limits, self.runtime.host_limits(limits))
        self.spec = replace(self.spec, limits=limits)

    async def destroy(self) -> None:
        async with self._destroy_lock:
            if self.destroyed:
                return
            self.destroyed = True
            try:
                await self.runtime._teardown(self)
            finally:
                self.runtime._forget(self)


class BaseRuntime:
    """Shared machinery of the namespaces and gVisor runtimes (pool, bookkeeping, teardown)."""

    name = "base"
    # a sandbox using more than this share of a CPU is busy (not put to sleep, synced when the
    # sync interval comes); what the runtime itself burns in an idle sandbox stays below it
    idle_cpu_share = 0.02
    # what the runtime itself burns in an idle sandbox (share of a CPU): CPU use above it means
    # the guest ran something, so its workspace may have changed
    idle_cpu_overhead = 0.0

    def __init__(self, settings: Settings, host: HostEnv | None = None) -> None:
        self.settings = settings
        self.host = host or HostEnv(settings)
        self._own_host = host is None
        self._live: dict[str, ManagedSandbox] = {}
        self.pool = WarmPool(self._create_pooled, settings.pool_size)
        self._pool_seq = 0
        self.default_limits = Limits(
            memory_mb=settings.default_memory_mb,
            pids=settings.default_pids,
            cpus=settings.default_cpus,
            disk_gb=settings.default_disk_gb,
        )

    async def start(self) -> None:
        if self._own_host:
            await asyncio.to_thread(self.host.start)
        await self._prepare()
        assert self.host.network is not None
        await self.host.network.prepare(max(2, self.settings.pool_size + 2))
        self.pool.start()

    async def _prepare(self) -> None:
        """Backend checks and setup once the host is ready, before any sandbox starts."""

    async def close(self) -> None:
        await self.pool.close()
        await asyncio.gather(*(sb.destroy() for sb in list(self._live.values())), return_exceptions=True)
        if self._own_host:
            await asyncio.to_thread(self.host.close)

    def sandboxes(self) -> list[Sandbox]:
        return list(self._live.values())

    def get(self, sandbox_id: str) -> ManagedSandbox | None:
        return self._live.get(sandbox_id)

    # ------------------------------------------------------------------ creation
    def host_limits(self, limits: Limits) -> Limits:
        """The cgroup limits that give a sandbox the requested limits (backends add overhead)."""
        return limits

    def _poolable(self, spec: SandboxSpec) -> bool:
        return (
            spec.image == "standard" and not spec.layers and spec.writable is None and not spec.binds
            and spec.limits.disk_gb == self.default_limits.disk_gb
        )

    async def create(self, spec: SandboxSpec) -> Sandbox:
        spec.limits.validate()
        if spec.sandbox_id in self._live:
            raise SandboxError(f"sandbox {spec.sandbox_id} already exists")
        if self._poolable(spec):
            sb = self.pool.take()
            while sb is not None:
                assert isinstance(sb, ManagedSandbox)
                if sb.image_version == self._current_image_version(spec.image):
                    break
                await sb.destroy()  # image was rebuilt since it was pooled
                sb = self.pool.take()
            if sb is not None:
                self._live.pop(sb.id, None)
                if spec.limits != sb.spec.limits:
                    await sb.set_limits(spec.limits)
                sb.spec = spec
                sb.id = spec.sandbox_id
                sb.created_at = time.time()
                self._live[sb.id] = sb
                return sb
        sb = await self._start(spec)
        self._live[sb.id] = sb
        return sb

    def _current_image_version(self, name: str) -> str:
        return self.host.image(name).version

    async def _create_pooled(self) -> Sandbox:
        self._pool_seq += 1
        spec = SandboxSpec(sandbox_id=f"pool-{self._pool_seq}", limits=self.default_limits)
        sb = await self._start(spec)
        self._live[sb.id] = sb
        return sb

    def _forget(self, sb: ManagedSandbox) -> None:
        if self._live.get(sb.id) is sb:
            del self._live[sb.id]

    async def _start(self, spec: SandboxSpec) -> ManagedSandbox:
        raise NotImplementedError

    async def _teardown(self, sb: ManagedSandbox) -> None:
        raise NotImplementedError

    @staticmethod
    def _layer_args(spec: SandboxSpec, res: SandboxResources) -> list[str]:
        """cgroups to join and the overlay root, as ``mags-sandbox`` options."""
        args: list[str] = []
        for d in res.cgroup.join_dirs:
            args += ["--cgroup", str(d)]
        for layer in spec.layers:
            args += ["--lower", str(layer)]
        args += ["--lower", str(res.image.rootfs), "--upper", str(res.upper), "--work", str(res.work)]
        return args + ["--root", str(res.dir / "root")]

    @staticmethod
    def _log_path(res: SandboxResources) -> Path:
        return res.dir.parent / f"{res.name}.log"

    async def _launch(self, spec: SandboxSpec, res: SandboxResources, args: list[str], what: str) -> ManagedSandbox:
        """Start the sandbox's process (its fd 0/1 are the protocol stream) and connect to its init."""
        with open(self._log_path(res), "wb") as errf:
            try:
                proc = await spawn(args, duplex=True, stderr=errf, start_new_session=True)
            except OSError as exc:
                await self.host.release(res)
                raise SandboxError(f"cannot start {what}: {exc}") from exc
        return await self._connect(spec, res, proc)

    async def _stop_process(self, sb: ManagedSandbox, grace: float) -> None:
        """Ask init to shut down, kill the process if it lingers."""
        await sb.conn.shutdown()
        try:
            await asyncio.wait_for(sb.proc.wait(), grace)
        except TimeoutError:
            sb.proc.kill()
            await sb.proc.wait()
        sb.conn.close()
        sb.proc.close()

    async def _release(self, sb: ManagedSandbox) -> None:
        await self.host.release(sb.res)
        self._log_path(sb.res).unlink(missing_ok=True)

    async def _connect(self, spec: SandboxSpec, res: SandboxResources, proc: Child) -> ManagedSandbox:
        assert proc.stdout is not None and proc.stdin is not None
        conn = InitConnection(proc.stdout, proc.stdin)
        try:
            await asyncio.wait_for(asyncio.shield(conn.hello), HELLO_TIMEOUT)
        except (TimeoutError, Exception) as exc:
            conn.close()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            proc.close()
            await self.host.release(res)
            detail = read_tail(self._log_path(res)) or str(exc) or "no output"
            raise SandboxError(f"sandbox failed to start: {detail}") from exc
        return ManagedSandbox(spec, conn, res, proc, self)


USERNS_SIZE = 65536  # guest ids 0..65535


class NamespacesRuntime(BaseRuntime):
    """Sandboxes isolated by Linux namespaces, cgroups, seccomp and capabilities.

    With ``userns`` (the default) each sandbox also gets its own user namespace: guest ids
    0..65535 are the host ids ``userns_uid_base + slot*65536 + id`` of this agent's slot, so a
    guest's root owns nothing on the host, and kernel per-user counters (inotify instances,
    RLIMIT_NPROC, ...) are per sandbox.  Its layers are idmapped, so files keep their guest
    ids on disk and workspaces sync and restore exactly as without it.
    """

    name = "namespaces"

    @property
    def userns_range(self) -> tuple[int, int] | None:
        """(host id of the guest's root, number of ids), or None without a user namespace."""
        if not self.settings.userns or self.host.slot is None:
            return None
        return self.settings.userns_uid_base + self.host.slot.index * USERNS_SIZE, USERNS_SIZE

    async def _prepare(self) -> None:
        if self.settings.userns:
            await self._probe_userns()

    async def _probe_userns(self) -> None:
        """Refuse to start (clearly) where user namespaces with idmapped layers cannot work."""
        assert self.host.binary is not None
        rng = self.userns_range
        assert rng is not None
        # the image's filesystem and the one holding the agent's disks must both idmap
        dirs = [str(self.host.image("standard").rootfs), str(self.settings.run_dir)]
        code, _, err = await run_process([str(self.host.binary), "probe-userns", f"{rng[0]}:{rng[1]}", *dirs])
        if code != 0:
            detail = err.decode(errors="replace").strip().removeprefix("mags-sandbox: ")
            raise RuntimeUnavailable(
                f"sandbox user namespaces do not work here ({detail}); "
                "set userns = false to run the namespaces runtime with guest root as host root"
            )

    async def _start(self, spec: SandboxSpec) -> ManagedSandbox:
        res = await self.host.allocate(spec.image, self.host_limits(spec.limits), spec.writable)
        assert self.host.binary is not None
        args = [str(self.host.binary), "launch", "--netns", res.net.netns_path, "--hostname", spec.hostname]
        rng = self.userns_range
        if rng is not None:
            args += ["--userns", f"{rng[0]}:{rng[1]}"]
        args += self._layer_args(spec, res)
        args += ["--bind", f"{self.host.etc_dir / 'resolv.conf'}:/etc/resolv.conf:ro"]
        args += ["--bind", f"{self.host.etc_dir / 'hosts'}:/etc/hosts:ro"]
        for b in spec.binds:
            args += ["--bind", f"{b.source}:{b.target}{':ro' if b.readonly else ''}"]
        return await self._launch(spec, res, args, "sandbox launcher")

    async def _teardown(self, sb: ManagedSandbox) -> None:
        await self._stop_process(sb, 3.0)
        await self._release(sb)
