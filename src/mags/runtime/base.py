"""The Runtime interface: what every isolation backend provides.

A *Runtime* creates *Sandboxes* from a :class:`SandboxSpec`.  A Sandbox is a running isolated
environment with an init speaking the sandbox protocol (``runtime/protocol.py``); processes are
spawned into it, files written into it, and it is destroyed as a whole.  Backends:

* ``namespaces`` -- Linux namespaces + cgroups + overlayfs, launched by ``mags-sandbox``.
* ``gvisor``     -- the same root filesystem and init under gVisor ``runsc`` (systrap).
* (``microvm``   -- later: the same init inside a VM, protocol over virtio-serial.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mags.errors import ValidationError
from mags.runtime.protocol import ExitStatus, InitConnection, Output, ProcessHandle

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = {"PATH": DEFAULT_PATH, "HOME": "/root", "USER": "root", "LANG": "C.UTF-8", "HOSTNAME": "mags-vm"}


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 1024
    pids: int = 1024
    cpus: float = 1.0
    disk_gb: int = 2

    def validate(self) -> Limits:
        if not 16 <= self.memory_mb <= 1024 * 1024:
            raise ValidationError(f"memory limit must be between 16 MB and 1 TB, got {self.memory_mb} MB")
        if not 16 <= self.pids <= 4_194_304:
            raise ValidationError(f"pids limit must be between 16 and 4194304, got {self.pids}")
        if not 0.01 <= self.cpus <= 1024:
            raise ValidationError(f"cpu limit must be between 0.01 and 1024, got {self.cpus}")
        if not 1 <= self.disk_gb <= 16384:
            raise ValidationError(f"disk size must be between 1 and 16384 GB, got {self.disk_gb}")
        return self


@dataclass(frozen=True)
class Bind:
    """A host path mounted inside the sandbox."""

    source: Path
    target: str
    readonly: bool = True


@dataclass
class SandboxSpec:
    """Everything a runtime needs to build one sandbox."""

    sandbox_id: str
    image: str = "standard"
    limits: Limits = field(default_factory=Limits)
    # Read-only layers stacked *above* the image (e.g. a base workspace snapshot), topmost first.
    layers: Sequence[Path] = ()
    # The writable layer. None: a fresh scratch layer that is discarded with the sandbox.
    # Otherwise a directory holding ``upper/`` and ``work/`` (a workspace), kept.
    writable: Path | None = None
    binds: Sequence[Bind] = ()
    hostname: str = "mags-vm"


@dataclass
class SandboxStats:
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    cpu_usec: int = 0
    pids: int = 0
    oom_kills: int = 0


@dataclass
class CompletedProcess:
    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: int = 0
    timed_out: bool = False
    stdout_truncated: bool = False  # more stdout than ``max_output`` came and was dropped
    stderr_truncated: bool = False


class Sandbox:
    """A running sandbox.  Backends subclass it and implement the ``_``-methods."""

    def __init__(self, spec: SandboxSpec, conn: InitConnection, ip: str | None) -> None:
        self.spec = spec
        self.id = spec.sandbox_id
        self.conn = conn
        self.ip = ip
        self.created_at = time.time()
        self.destroyed = False
        self.last_activity = time.monotonic()
        self.base_env: dict[str, str] = dict(BASE_ENV)
        self.shell: str | None = None  # known shell of the root filesystem, if any

    # ---------------------------------------------------------------- processes
    async def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str = "/root",
        *,
        pty: bool = False,
        stdin: bool = False,
        rows: int = 24,
        cols: int = 80,
    ) -> ProcessHandle:
        """Start a process inside the sandbox; ``env`` is added to the base environment."""
        full_env = dict(self.base_env)
        if pty:
            full_env["TERM"] = "xterm-256color"
        if env:
            full_env.update(env)
        self.last_activity = time.monotonic()
        return await self.conn.spawn(argv, full_env, cwd, pty=pty, stdin=stdin, rows=rows, cols=cols)

    async def spawn_script(self, script: str, env: Mapping[str, str] | None = None, cwd: str = "/root") -> ProcessHandle:
        """Run a script the way jobs run: bash if the image has it, else sh, in /root."""
        return await self.spawn(self._script_argv(script), env, cwd)

    def _script_argv(self, script: str) -> list[str]:
        if self.shell is not None:
            return [self.shell, "-c", script]
        return ["/bin/sh", "-c", _SHELL_SHIM, "mags-script", script]

    async def exec(
        self,
        argv: Sequence[str] | str,
        env: Mapping[str, str] | None = None,
        cwd: str = "/root",
        timeout: float | None = None,
        stdin_data: bytes | None = None,
        max_output: int | None = None,
    ) -> CompletedProcess:
        """Run a command to completion and collect its output (a string runs via the shell).

        ``max_output``: bytes kept per stream, counted as the JSON answer will carry them
        (a control character other than tab/newline/CR travels as ``\\u00XX``: it counts 6).
        Past it the output is still read, and dropped: the command runs to its end (or its
        timeout) as it would with a reader that stopped looking, and memory stays bounded
        whatever it prints.
        """
        if isinstance(argv, str):
            argv = self._script_argv(argv)
        proc = await self.spawn(argv, env, cwd, stdin=stdin_data is not None)
        if stdin_data is not None:
            await proc.write(stdin_data)
            await proc.close_stdin()
        out, err = bytearray(), bytearray()
        cut = {"stdout": False, "stderr": False}
        spent = {"stdout": 0, "stderr": 0}
        timed_out = False

        async def collect() -> ExitStatus:
            status: ExitStatus | None = None
            async for ev in proc.events():
                if isinstance(ev, Output):
                    stream = "stdout" if ev.stream == "stdout" else "stderr"
                    buf = out if stream == "stdout" else err
                    if max_output is None:
                        buf.extend(ev.data)
                    elif not cut[stream]:
                        cost = _answer_cost(ev.data)
                        if spent[stream] + cost <= max_output:
                            buf.extend(ev.data)
                            spent[stream] += cost
                        else:
                            buf.extend(_fitting(ev.data, max_output - spent[stream]))
                            cut[stream] = True
                else:
                    status = ev
                    break
            return status or ExitStatus(137, 9)

        try:
            status = await asyncio.wait_for(collect(), timeout)
        except TimeoutError:
            timed_out = True
            await proc.signal(9)
            status = await proc.wait()
        for msg in proc.errors:
            err.extend(msg.encode() + b"\n")
        self.last_activity = time.monotonic()
        return CompletedProcess(
            status.exit_code, bytes(out), bytes(err), status.signal, timed_out, cut["stdout"], cut["stderr"]
        )

    async def put_file(self, path: str, data: bytes | AsyncIterator[bytes], mode: int = 0o644) -> None:
        await self.conn.put_file(path, data, mode)

    async def kill_all(self) -> None:
        """Kill every process in the sandbox but its init."""
        await self.conn.kill_all()

    # ---------------------------------------------------------------- backend hooks
    async def stats(self) -> SandboxStats:
        raise NotImplementedError

    async def set_limits(self, limits: Limits) -> None:
        """Change memory/pids/cpu limits of a running sandbox."""
        raise NotImplementedError

    async def destroy(self) -> None:
        """Kill everything and remove every trace of the sandbox (idempotent)."""
        raise NotImplementedError

    async def wait_closed(self) -> None:
        """Return when the sandbox's init is gone (crash, OOM of init, destroy)."""
        await self.conn.closed.wait()


# What JSON carries only escaped, as \u00XX: six bytes of an exec answer for one of output.
_ESCAPED = bytes(b for b in range(32) if b not in b"\t\n\r")


def _answer_cost(data: bytes) -> int:
    """What ``data`` costs in an exec answer's JSON (not counting quotes and backslashes)."""
    return len(data) + 5 * (len(data) - len(data.translate(None, _ESCAPED)))


def _fitting(data: bytes, budget: int) -> bytes:
    """The longest prefix of ``data`` whose :func:`_answer_cost` is at most ``budget``."""
    if budget <= 0:
        return b""
    if len(data.translate(None, _ESCAPED)) == len(data):
        return data[:budget]
    cost = 0
    for i, byte in enumerate(data):  # one chunk, once per stream
        cost += 6 if byte < 32 and byte not in (9, 10, 13) else 1
        if cost > budget:
            return data[:i]
    return data


# Runs the script with bash when the image has it (as Mags does), else POSIX sh.
_SHELL_SHIM = 'if [ -x /bin/bash ]; then exec /bin/bash -c "$1"; else exec /bin/sh -c "$1"; fi'


class Runtime(Protocol):
    """An isolation backend."""

    name: str

    async def start(self) -> None:
        """Prepare the host (clean leftovers of a previous run, networks, pools)."""

    async def close(self) -> None:
        """Destroy every sandbox and host-side resource this runtime made."""

    async def create(self, spec: SandboxSpec) -> Sandbox:
        """Build and start a sandbox; raises ValidationError / ImageError / SandboxError."""
        ...

    def sandboxes(self) -> list[Sandbox]:
        ...
