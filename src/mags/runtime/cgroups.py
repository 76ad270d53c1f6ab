"""Per-sandbox cgroups on cgroup v1 (one dir per controller) and v2 (one unified dir).

Layout: ``<hierarchy>/mags/<agent>/<sandbox>`` so each agent on a host only ever touches its
own groups (cleanup of leftovers after a crash included).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from mags.errors import RuntimeUnavailable, SandboxError
from mags.runtime.base import Limits, SandboxStats

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
CPU_PERIOD_US = 100_000


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise SandboxError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


def _procs(d: Path) -> list[int]:
    try:
        return [int(p) for p in (d / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _rmdir_tree(d: Path) -> None:
    """Remove a cgroup dir and its children (cgroup dirs can only be rmdir'ed bottom-up)."""
    if not d.exists():
        return
    for child in sorted((p for p in d.iterdir() if p.is_dir()), reverse=True):
        _rmdir_tree(child)
    for _ in range(50):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            for pid in _procs(d):
                _kill(pid)
            time.sleep(0.01)
    raise SandboxError(f"cannot remove cgroup {d}: still busy")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class Cgroup:
    """One sandbox's cgroup(s)."""

    driver: CgroupDriver
    name: str
    dirs: dict[str, Path]  # controller (or "unified") -> dir

    @property
    def join_dirs(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def set_limits(self, limits: Limits) -> None:
        self.driver.apply_limits(self, limits)

    def stats(self) -> SandboxStats:
        return self.driver.stats(self)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.join_dirs:
            found.update(_procs(d))
        return sorted(found)

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the group until it is empty."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                _kill(pid)
            if time.monotonic() > deadline:
                raise SandboxError(f"processes {pids} in sandbox {self.name} survive SIGKILL")
            time.sleep(0.002)

    def remove(self) -> None:
        self.kill_all()
        for d in self.join_dirs:
            _rmdir_tree(d)


class CgroupDriver:
    """Creates and manages sandbox cgroups under ``mags/<agent>``."""

    version: int = 0

    def __init__(self, agent: str) -> None:
        self.agent = agent

    @staticmethod
    def detect(agent: str) -> CgroupDriver:
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return CgroupV2(agent)
        if (CGROUP_ROOT / "memory").is_dir() and (CGROUP_ROOT / "pids").is_dir():
            return CgroupV1(agent)
        raise RuntimeUnavailable("no usable cgroup hierarchy at /sys/fs/cgroup (need v2, or v1 memory+pids)")

    def create(self, name: str, limits: Limits) -> Cgroup:
        raise NotImplementedError

    def apply_limits(self, cg: Cgroup, limits: Limits) -> None:
        raise NotImplementedError

    def stats(self, cg: Cgroup) -> SandboxStats:
        raise NotImplementedError

    def agent_dirs(self) -> list[Path]:
        raise NotImplementedError

    def cleanup_leftovers(self) -> int:
        """Kill and remove every sandbox group of this agent (after a crash). Returns how many."""
        count = 0
        for base in self.agent_dirs():
            if not base.is_dir():
                continue
            for d in base.iterdir():
                if d.is_dir():
                    for pid in _procs(d):
                        _kill(pid)
                    _rmdir_tree(d)
                    count += 1
        return count

    def remove_agent_dirs(self) -> None:
        for base in self.agent_dirs():
            _rmdir_tree(base)


class CgroupV1(CgroupDriver):
    version = 1

    def __init__(self, agent: str) -> None:
        super().__init__(agent)
        self.controllers = [c for c in V1_CONTROLLERS if (CGROUP_ROOT / c).is_dir()]
        self.has_memsw = (CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists()

    def agent_dirs(self) -> list[Path]:
        return [CGROUP_ROOT / c / "mags" / self.agent for c in self.controllers]

    def create(self, name: str, limits: Limits) -> Cgroup:
        dirs: dict[str, Path] = {}
        for c in self.controllers:
            d = CGROUP_ROOT / c / "mags" / self.agent / name
            d.mkdir(parents=True, exist_ok=True)
            dirs[c] = d
        cg = Cgroup(self, name, dirs)
        try:
            mem = dirs["memory"]
            if (mem / "memory.use_hierarchy").exists():
                try:
                    _write(mem / "memory.use_hierarchy", "1")
                except SandboxError:
                    pass  # inherited from the parent and cannot be changed: fine
            self.apply_limits(cg, limits)
        except Exception:
            cg.remove()
            raise
        return cg

    def apply_limits(self, cg: Cgroup, limits: Limits) -> None:
        mem = cg.dirs["memory"]
        value = str(limits.memory_mb * 1024 * 1024)
        current = _read_int(mem / "memory.limit_in_bytes", 0)
        # memsw must stay >= limit: order the two writes by direction of change
        if self.has_memsw and int(value) < current:
            _write(mem / "memory.limit_in_bytes", value)
            _write(mem / "memory.memsw.limit_in_bytes", value)
        elif self.has_memsw:
            _write(mem / "memory.memsw.limit_in_bytes", value)
            _write(mem / "memory.limit_in_bytes", value)
        else:
            _write(mem / "memory.limit_in_bytes", value)
        _write(cg.dirs["pids"] / "pids.max", str(limits.pids))
        if "cpu" in cg.dirs:
            _write(cg.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cg.dirs["cpu"] / "cpu.cfs_quota_us", str(max(1000, int(limits.cpus * CPU_PERIOD_US))))

    def stats(self, cg: Cgroup) -> SandboxStats:
        mem = cg.dirs["memory"]
        oom = _read_kv(mem / "memory.oom_control")
        cpu = _read_int(cg.dirs["cpuacct"] / "cpuacct.usage") // 1000 if "cpuacct" in cg.dirs else 0
        return SandboxStats(
            memory_bytes=_read_int(mem / "memory.usage_in_bytes"),
            memory_peak_bytes=_read_int(mem / "memory.max_usage_in_bytes"),
            cpu_usec=cpu,
            pids=_read_int(cg.dirs["pids"] / "pids.current"),
            oom_kills=oom.get("oom_kill", 0),
        )


class CgroupV2(CgroupDriver):
    version = 2

    def __init__(self, agent: str) -> None:
        super().__init__(agent)
        self.base = CGROUP_ROOT / "mags"

    def agent_dirs(self) -> list[Path]:
        return [self.base / self.agent]

    def _enable(self, d: Path) -> None:
        wanted = {"memory", "pids", "cpu"}
        have = set((d / "cgroup.controllers").read_text().split())
        missing = wanted - have
        if missing:
            raise RuntimeUnavailable(f"cgroup v2 controllers {sorted(missing)} are not delegated to {d}")
        enabled = set((d / "cgroup.subtree_control").read_text().split())
        todo = " ".join(f"+{c}" for c in sorted(wanted - enabled))
        if todo:
            _write(d / "cgroup.subtree_control", todo)

    def create(self, name: str, limits: Limits) -> Cgroup:
        agent_dir = self.base / self.agent
        if not agent_dir.exists():
            self._enable(CGROUP_ROOT)
            self.base.mkdir(exist_ok=True)
            self._enable(self.base)
            agent_dir.mkdir(exist_ok=True)
            self._enable(agent_dir)
        d = agent_dir / name
        d.mkdir(exist_ok=True)
        cg = Cgroup(self, name, {"unified": d})
        try:
            self.apply_limits(cg, limits)
        except Exception:
            cg.remove()
            raise
        return cg

    def apply_limits(self, cg: Cgroup, limits: Limits) -> None:
        d = cg.dirs["unified"]
        _write(d / "memory.max", str(limits.memory_mb * 1024 * 1024))
        if (d / "memory.swap.max").exists():
            _write(d / "memory.swap.max", "0")
        _write(d / "pids.max", str(limits.pids))
        _write(d / "cpu.max", f"{max(1000, int(limits.cpus * CPU_PERIOD_US))} {CPU_PERIOD_US}")

    def stats(self, cg: Cgroup) -> SandboxStats:
        d = cg.dirs["unified"]
        return SandboxStats(
            memory_bytes=_read_int(d / "memory.current"),
            memory_peak_bytes=_read_int(d / "memory.peak"),
            cpu_usec=_read_kv(d / "cpu.stat").get("usage_usec", 0),
            pids=_read_int(d / "pids.current"),
            oom_kills=_read_kv(d / "memory.events").get("oom_kill", 0),
        )

    def kill(self, cg: Cgroup) -> None:
        kill_file = cg.dirs["unified"] / "cgroup.kill"
        if kill_file.exists():
            _write(kill_file, "1")
