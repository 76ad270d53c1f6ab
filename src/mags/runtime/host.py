"""Host-side resources shared by every backend of one agent: slot, cgroups, network, dirs."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mags.config import Settings
from mags.errors import RuntimeUnavailable, SandboxError
from mags.runtime import native
from mags.runtime.base import Limits
from mags.runtime.cgroups import Cgroup, CgroupDriver
from mags.runtime.disk import GB, Disk, is_mounted
from mags.runtime.diskspace import host_budget
from mags.runtime.hostslot import MAX_SLOTS, HostSlot, claim_host_slot, try_hold
from mags.runtime.image import Image, resolve_image
from mags.runtime.network import NetSlot, NetworkManager

log = logging.getLogger(__name__)

# SandboxResources.extra key: the backend moved the slot's address into the sandbox (gVisor
# netstack), so it must be put back on release before the slot is reused
NET_RESTORE = "net_restore"
# how long a new ephemeral sandbox waits for disk budget other sandboxes still hold
SCRATCH_ROOM_WAIT_S = 120.0


@dataclass
class SandboxResources:
    """What the host holds for one sandbox; released exactly once."""

    name: str  # host-side name: cgroup, dir
    dir: Path
    cgroup: Cgroup
    net: NetSlot
    image: Image
    upper: Path
    work: Path
    ephemeral_upper: bool
    released: bool = False
    scratch: Disk | None = None  # the ephemeral writable layer's own disk (None: a workspace's)
    extra: dict[str, object] = field(default_factory=dict)


class HostEnv:
    """Everything an agent owns on this host, namespaced by its host slot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slot: HostSlot | None = None
        self.cgroups: CgroupDriver | None = None
        self.network: NetworkManager | None = None
        self.binary: Path | None = None
        # every scratch disk reserves its size in the host's budget (shared with workspaces)
        self.budget = host_budget(settings.data_dir, settings.disk_free_margin_gb)
        self._images: dict[tuple[str, str], Image] = {}
        self._counter = 0

    @property
    def sandboxes_dir(self) -> Path:
        assert self.slot is not None
        return self.settings.run_dir / "sb"

    @property
    def agent_name(self) -> str:
        assert self.slot is not None
        return self.slot.name

    def start(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeUnavailable("the sandbox runtime needs root (namespaces, cgroups, mounts)")
        self.binary = native.ensure_binary(self.settings.images_path.parent / "bin")
        self.slot = claim_host_slot()
        try:
            self.cgroups = CgroupDriver.detect(self.slot.name)
            n = self.cgroups.cleanup_leftovers()
            if n:
                log.warning("removed %d leftover sandbox cgroups of agent slot %s", n, self.slot.name)
            self.cleanup_mounts()
            if self.sandboxes_dir.exists():
                shutil.rmtree(self.sandboxes_dir, ignore_errors=True)
            self.sandboxes_dir.mkdir(parents=True, exist_ok=True)
            self._clean_scratch()
            self.network = NetworkManager(self.slot.index, self.settings.network_cidr)
            self.network.start()
            self._write_etc()
            self._clean_dead_slots()
        except Exception:
            self.slot.release()
            self.slot = None
            raise

    @property
    def etc_dir(self) -> Path:
        """resolv.conf and hosts shared (read-only) by every sandbox of this agent."""
        return self.settings.run_dir / "etc"

    def _write_etc(self) -> None:
        assert self.network is not None
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        # on a tmpfs of its own, so a guest's mountinfo shows "/resolv.conf" on a tmpfs for
        # these binds instead of a host path (it is unmounted with the agent's mounts)
        if not is_mounted(self.etc_dir):
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755,nosuid,nodev,noexec", "mags-etc", str(self.etc_dir)],
                capture_output=True, check=False,
            )
        (self.etc_dir / "resolv.conf").write_text(self.network.resolv_conf())
        (self.etc_dir / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tmags-vm\n::1\tlocalhost ip6-localhost\n")
        for name in ("resolv.conf", "hosts"):
            # readable by every guest user (the agent's umask is 077; a guest root is not host root)
            os.chmod(self.etc_dir / name, 0o644)

    def _clean_scratch(self) -> None:
        """Remove the filesystem all ephemeral sandboxes once shared (replaced by one each)."""
        Disk(self.settings.run_dir / "scratch").destroy()

    def _make_scratch(self, d: Path, size_gb: int) -> Disk:
        """A size-limited filesystem of its own for one ephemeral sandbox's writable layer.

        Each ephemeral sandbox (no workspace) writes to a sparse ext4 disk of its ``disk_gb``,
        reserved in the host's disk budget: it gets ENOSPC at its size and no tenant can fill
        another's scratch or the host.  ~3 ms: a sparse copy of a template made once per size,
        loop-mounted in-process (runtime/loopdev.py); the warm pool hides even that.
        """
        disk = Disk(d, self.budget, "the sandbox's scratch disk")
        disk.create(size_gb, journal=False, template_dir=self.settings.run_dir / "disk-templates")
        try:
            disk.mount()
        except BaseException:
            disk.destroy()
            raise
        return disk

    def _clean_dead_slots(self) -> None:
        """Remove what crashed agents of *other* slots left behind (their lock is free)."""
        assert self.cgroups is not None and self.slot is not None
        netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        for i in range(MAX_SLOTS):
            if i == self.slot.index:
                continue
            cg = type(self.cgroups)(f"a{i}")
            has_cg = any(d.exists() for d in cg.agent_dirs())
            has_net = any(n.startswith(f"mags-a{i}-") for n in netns)
            if not (has_cg or has_net):
                continue
            held = try_hold(i)  # hold the dead slot's lock so no agent claims it mid-cleanup
            if held is None:
                continue
            try:
                if has_cg:
                    cg.cleanup_leftovers()
                    cg.remove_agent_dirs()
                if has_net:
                    NetworkManager(i, self.settings.network_cidr).cleanup()
                log.warning("cleaned leftovers of dead agent slot a%d", i)
            finally:
                held.release()

    def close(self) -> None:
        if self.network is not None:
            self.network.close()
        if self.cgroups is not None:
            self.cgroups.cleanup_leftovers()
            self.cgroups.remove_agent_dirs()
        self.cleanup_mounts()
        if self.slot is not None:
            shutil.rmtree(self.sandboxes_dir, ignore_errors=True)
            self.slot.release()
            self.slot = None

    def cleanup_mounts(self) -> None:
        """Unmount anything left mounted under our run dir (gVisor roots after a crash)."""
        prefix = str(self.settings.run_dir.resolve()) + "/"
        try:
            mounts = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return
        targets = [m.split()[1].replace("\\040", " ") for m in mounts if len(m.split()) > 1]
        for t in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", t], capture_output=True)

    def image(self, name: str) -> Image:
        """The current version of image ``name`` (one readlink; the rest is cached per version)."""
        try:
            version = os.readlink(self.settings.images_path / name / "current")
        except OSError:
            return resolve_image(self.settings, name)  # raises the helpful error
        img = self._images.get((name, version))
        if img is None:
            img = self._images[(name, version)] = resolve_image(self.settings, name)
        return img

    def new_name(self) -> str:
        self._counter += 1
        return f"s{os.getpid() % 100000}x{self._counter}"

    async def allocate(self, image_name: str, limits: Limits, writable: Path | None) -> SandboxResources:
        """Cgroup + network slot + dirs for a new sandbox."""
        assert self.cgroups is not None and self.network is not None
        image = self.image(image_name)
        name = self.new_name()
        d = self.sandboxes_dir / name
        if writable is None:
            await self._wait_for_room(limits.disk_gb * GB)  # before holding anything else
        net = await self.network.acquire()
        cg: Cgroup | None = None
        scratch: Disk | None = None
        try:
            cg = self.cgroups.create(name, limits)
            (d / "root").mkdir(parents=True)
            if writable is None:
                scratch = await asyncio.to_thread(self._make_scratch, d / "scratch", limits.disk_gb)
                upper, work, ephemeral = scratch.upper, scratch.work, True
            else:
                upper, work, ephemeral = writable / "upper", writable / "work", False
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
        except Exception:
            if cg is not None:
                cg.remove()
            self.network.release(net)
            if scratch is not None:
                await asyncio.to_thread(scratch.destroy)
            shutil.rmtree(d, ignore_errors=True)
            raise
        return SandboxResources(name, d, cg, net, image, upper, work, ephemeral, scratch=scratch)

    async def _wait_for_room(self, size: int) -> None:
        """Wait (bounded) while the host's disk budget is promised to other sandboxes.

        A burst of jobs may ask for more scratch space at once than the host has; each
        sandbox that ends gives its reservation back, so the later ones wait for room
        instead of failing.  A disk that could never fit fails at once (in reserve()).
        """
        deadline = asyncio.get_running_loop().time() + SCRATCH_ROOM_WAIT_S
        while (
            not self.budget.fits_now(size)
            and self.budget.could_fit_later(size)
            and asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.1)

    async def release(self, res: SandboxResources) -> None:
        if res.released:
            return
        res.released = True
        assert self.network is not None
        # one thread hop for all the file work; a slot whose address could not be put back
        # is not reused
        if await asyncio.to_thread(self._release_sync, res):
            self.network.release(res.net)

    def _release_sync(self, res: SandboxResources) -> bool:
        try:
            res.cgroup.remove()  # every process of the sandbox is gone after this
        except SandboxError as exc:
            log.error("sandbox %s: %s", res.name, exc)
        ok = True
        if res.extra.get(NET_RESTORE):
            assert self.network is not None
            try:
                self.network.restore(res.net)
            except SandboxError as exc:
                log.error("sandbox %s: network slot %s not reusable: %s", res.name, res.net.netns, exc)
                ok = False
        if res.scratch is not None:
            res.scratch.destroy()  # unmounted first: its space is back once this returns
        shutil.rmtree(res.dir, True)
        return ok


def read_tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    text = data.decode(errors="replace").strip()
    return re.sub(r"\s+", " ", text)
