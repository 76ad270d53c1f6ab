"""A host-wide slot number for each agent, so several agents can share one machine.

Each agent holds an exclusive ``flock`` on ``/run/mags/agents/<n>.lock`` for its lifetime.
The slot number namespaces everything the agent creates on the host (cgroups ``mags/a<n>``,
network namespaces ``mags-a<n>-*``, interfaces ``mg<n>s*``, iptables chains ``MAGS<n>-*``,
its address range).  A slot whose lock is free belongs to nobody alive, so whatever carries
its number is a leftover of a crashed agent and safe to clean.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from mags.errors import RuntimeUnavailable

LOCK_DIR = Path("/run/mags/agents")
MAX_SLOTS = 64


@dataclass
class HostSlot:
    index: int
    fd: int

    @property
    def name(self) -> str:
        return f"a{self.index}"

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def claim_host_slot(lock_dir: Path = LOCK_DIR, max_slots: int = MAX_SLOTS) -> HostSlot:
    """Take the lowest free slot; raise RuntimeUnavailable if all are held."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for i in range(max_slots):
        fd = os.open(lock_dir / f"{i}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return HostSlot(i, fd)
    raise RuntimeUnavailable(f"all {max_slots} agent slots on this host are in use")



def try_hold(index: int, lock_dir: Path = LOCK_DIR) -> HostSlot | None:
    """Take slot ``index`` if no live agent holds it (the caller releases it)."""
    path = lock_dir / f"{index}.lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return HostSlot(index, fd)
