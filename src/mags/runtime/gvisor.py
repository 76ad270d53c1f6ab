"""The ``gvisor`` runtime: the same root filesystem and init, under gVisor ``runsc`` (systrap).

``mags-sandbox cgexec`` joins the sandbox's cgroups (so the sentry and gofer are limited and
accounted like any sandbox), mounts the overlay root in a private mount namespace, and execs
``runsc run``.  The init (``mags-sandbox init``, bind-mounted read-only at ``/.mags``) is the
container's process; its stdin/stdout are the protocol stream, exactly as for namespaces.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from mags.errors import RuntimeUnavailable
from mags.runtime.base import Limits, SandboxSpec
from mags.runtime.host import NET_RESTORE
from mags.runtime.namespaces import BaseRuntime, ManagedSandbox

GVISOR_THREAD_HEADROOM = 256
# --network=sandbox: gVisor's own network stack (netstack) serves the sandbox's network
# namespace through a packet socket on its eth0, so the sentry makes no host network syscalls
# (a smaller seccomp filter, which is also ~20 ms less to build at every start than
# --network=host's).  --ignore-cgroups: mags-sandbox cgexec already put runsc, the gofer and
# the sentry in the sandbox's cgroups.  --overlay2=none: the root is our own overlayfs.
RUNSC_FLAGS = ("--platform=systrap", "--network=sandbox", "--overlay2=none", "--ignore-cgroups")
# runsc refuses netstack when /proc/sys/net/core/rmem_default exists (its test for "this is
# the host's root network namespace", wrong since that sysctl is per namespace on kernels >=
# 6.x).  cgexec hides /proc/sys/net in runsc's private mount namespace only; runsc still joins
# the pooled namespace given in the OCI spec, never the host's.
NETSTACK_MASK = ("--mask", "/proc/sys/net")
CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def find_runsc(configured: str = "runsc") -> str | None:
    path = shutil.which(configured)
    if path is None:
        return None
    proc = subprocess.run([path, "--version"], capture_output=True, text=True)
    return path if proc.returncode == 0 else None


def runsc_supports_systrap(runsc: str) -> bool:
    proc = subprocess.run([runsc, "help", "run"], capture_output=True, text=True)
    flags = subprocess.run([runsc, "flags"], capture_output=True, text=True)
    return "systrap" in (proc.stdout + proc.stderr + flags.stdout + flags.stderr)


class GvisorRuntime(BaseRuntime):
    """Sandboxes under gVisor: a user-space kernel between the guest and the host."""

    name = "gvisor"
    # the sentry and its systrap stubs use 3.6-4.5% of a CPU in an idle sandbox (measured):
    # above that, the guest itself is working
    idle_cpu_share = 0.10
    idle_cpu_overhead = 0.06

    async def start(self) -> None:
        runsc = find_runsc(self.settings.runsc_path)
        if runsc is None:
            raise RuntimeUnavailable("gVisor runsc is not installed (run scripts/setup.sh)")
        if not runsc_supports_systrap(runsc):
            raise RuntimeUnavailable(f"{runsc} has no systrap platform: install the bookworm-backports build")
        self.runsc = runsc
        await super().start()

    async def _prepare(self) -> None:
        await asyncio.to_thread(self._cleanup_state)
        self.state_root.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        if self.host.slot is not None:
            self._state_root = self.state_root
        await super().close()
        if self._state_root is not None:
            await asyncio.to_thread(self._cleanup_state)

    _state_root: Path | None = None

    @property
    def state_root(self) -> Path:
        if self.host.slot is None:
            assert self._state_root is not None
            return self._state_root
        return self.settings.run_dir / f"runsc-{self.host.slot.name}"

    def _runsc(self, *args: str) -> list[str]:
        return [self.runsc, "--root", str(self.state_root), *args]

    def _cleanup_state(self) -> None:
        root = self.state_root
        if not root.exists():
            return
        listed = subprocess.run(self._runsc("list", "-q"), capture_output=True, text=True)
        for cid in listed.stdout.split():
            subprocess.run(self._runsc("delete", "--force", cid), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    def _oci_spec(self, spec: SandboxSpec, res: Any, binary: Path) -> dict[str, Any]:
        def bind(src: Path | str, dst: str, ro: bool = True) -> dict[str, Any]:
            return {"destination": dst, "type": "bind", "source": str(src), "options": ["rbind", "ro" if ro else "rw"]}

        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            bind(binary.parent, "/.mags"),
            bind(self.host.etc_dir / "resolv.conf", "/etc/resolv.conf"),
            bind(self.host.etc_dir / "hosts", "/etc/hosts"),
        ]
        mounts += [bind(b.source, b.target, b.readonly) for b in spec.binds]
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": 0, "gid": 0},
                "args": [f"/.mags/{binary.name}", "init"],
                "env": [f"{k}={v}" for k, v in self._env().items()],
                "cwd": "/",
                "capabilities": {k: CAPS for k in ("bounding", "effective", "permitted", "inheritable")},
                "rlimits": [
                    {"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576},
                    {"type": "RLIMIT_NPROC", "hard": spec.limits.pids, "soft": spec.limits.pids},
                ],
                "noNewPrivileges": True,
            },
            "root": {"path": str(res.dir / "root"), "readonly": False},
            "hostname": spec.hostname,
            "mounts": mounts,
            "linux": {
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                    {"type": "network", "path": res.net.netns_path},
                ],
            },
        }

    def _poolable(self, spec: SandboxSpec) -> bool:
        # RLIMIT_NPROC is fixed when runsc boots the sandbox: only the pool's own value fits
        return super()._poolable(spec) and spec.limits.pids == self.default_limits.pids

    def host_limits(self, limits: Limits) -> Limits:
        # The sentry and gofer are Go programs with their own threads, and systrap adds stub
        # processes/threads per guest address space: all host pids.  Guest processes are
        # capped by RLIMIT_NPROC inside gVisor; the cgroup is only the host-side backstop.
        return replace(limits, pids=limits.pids * 3 + GVISOR_THREAD_HEADROOM)

    @staticmethod
    def _env() -> dict[str, str]:
        from mags.runtime.base import DEFAULT_PATH

        return {"PATH": DEFAULT_PATH}

    async def _start(self, spec: SandboxSpec) -> ManagedSandbox:
        res = await self.host.allocate(spec.image, self.host_limits(spec.limits), spec.writable)
        assert self.host.binary is not None
        bundle = res.dir / "bundle"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(self._oci_spec(spec, res, self.host.binary)))
        # netstack takes eth0's address while it runs: put it back before the slot is reused
        res.extra[NET_RESTORE] = True
        args = [str(self.host.binary), "cgexec", *self._layer_args(spec, res), *NETSTACK_MASK, "--"]
        args += self._runsc(*RUNSC_FLAGS, "run", "--bundle", str(bundle), res.name)
        return await self._launch(spec, res, args, "runsc")

    def _has_state(self, name: str) -> bool:
        """Whether runsc still holds state (sandbox, gofer, files) of container ``name``."""
        try:
            entries = os.listdir(self.state_root)
        except OSError:
            return False
        return any(e.startswith(f"{name}_") or e == f"runsc-{name}.sock" for e in entries)

    async def _teardown(self, sb: ManagedSandbox) -> None:
        await self._stop_process(sb, 5.0)
        # `runsc run` destroys its sandbox and state before it exits: `runsc delete` (another
        # ~15 ms Go process) only when it was killed before it could
        if self._has_state(sb.res.name):
            await asyncio.to_thread(
                subprocess.run, self._runsc("delete", "--force", sb.res.name), capture_output=True
            )
        await self._release(sb)
