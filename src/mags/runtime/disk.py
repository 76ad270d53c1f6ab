"""Size-limited writable layers: a sparse ext4 image per workspace (or scratch), loop-mounted.

This kernel has no quota support (CONFIG_QUOTA is off: neither ext4 nor XFS project quotas
mount), so a hard per-sandbox size limit needs a filesystem of its own.  A sparse ext4 image
costs only what is written, gives the script ENOSPC at the limit, and never fills the host
beyond its size.  Layout of a mounted disk: ``upper/`` and ``work/`` (overlay), ``tmp/``.

Disks are mounted ``nosuid,nodev``: a guest's setuid files and device nodes on them mean
nothing to the host (inside a sandbox the *overlay* mount's flags count, so the guest's own
setuid programs still work there).  Given a :class:`~mags.runtime.diskspace.DiskBudget`, a
disk reserves its full size on the host filesystem when it is created or grown, and gives
it back when destroyed, so sparse disks never promise more than the host has.

Making and mounting a disk is done in-process where the kernel allows (runtime/loopdev.py):
scratch disks are sparse copies of a template made once per size by ``mkfs.ext4``, and
mounts use the loop device ioctls and mount(2) directly -- ~3 ms instead of ~12 ms of
``mkfs`` and ``mount -o loop``, on the path of every cold start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mags.errors import Conflict, SandboxError, ValidationError
from mags.runtime import loopdev
from mags.runtime.diskspace import GB, DiskBudget

MOUNT_OPTIONS = "loop,noatime,nosuid,nodev"
MOUNT_FLAGS = loopdev.MS_NOATIME | loopdev.MS_NOSUID | loopdev.MS_NODEV


def _run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode not in ok:
        raise SandboxError(f"{cmd[0]} failed: {(proc.stderr or proc.stdout).strip()[:500]}")
    return proc


def mkfs(path: Path, size_gb: int, journal: bool = True) -> None:
    """A new sparse ext4 image of ``size_gb`` at ``path`` (0600: it holds a tenant's files)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size_gb * GB)
    finally:
        os.close(fd)
    opts = ["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]
    if not journal:
        opts += ["-O", "^has_journal"]
    _run(["mkfs.ext4", *opts, str(path)])


def template(template_dir: Path, size_gb: int, journal: bool = True) -> Path:
    """The image every new disk of this size is cloned from (made by mkfs the first time)."""
    path = template_dir / f"ext4-{size_gb}g{'' if journal else '-nojournal'}.img"
    if path.exists():
        return path
    template_dir.mkdir(parents=True, exist_ok=True)
    tmp = template_dir / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        mkfs(tmp, size_gb, journal)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 1 and parts[1].replace("\\040", " ") == target:
                return True
    except OSError:
        pass
    return False


@dataclass
class Disk:
    """One loop-mounted ext4 image at ``<dir>/disk.img`` mounted on ``<dir>/mnt``."""

    dir: Path
    budget: DiskBudget | None = None
    what: str = "the disk"  # for "not enough disk space" messages

    @property
    def image(self) -> Path:
        return self.dir / "disk.img"

    @property
    def mnt(self) -> Path:
        return self.dir / "mnt"

    @property
    def upper(self) -> Path:
        return self.mnt / "upper"

    @property
    def work(self) -> Path:
        return self.mnt / "work"

    def exists(self) -> bool:
        return self.image.exists()

    @property
    def size_bytes(self) -> int:
        return self.image.stat().st_size

    def create(self, size_gb: int, journal: bool = True, template_dir: Path | None = None) -> None:
        """Make the image (``template_dir``: as a sparse copy of a template of that size)."""
        if size_gb < 1:
            raise ValidationError("disk size must be at least 1 GB")
        if self.budget is not None:
            self.budget.reserve(self.image, size_gb * GB, self.what)
        tmp = self.dir / "disk.img.new"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            if template_dir is not None:
                loopdev.clone_sparse(template(template_dir, size_gb, journal), tmp)
            else:
                mkfs(tmp, size_gb, journal)
            os.replace(tmp, self.image)
        except BaseException:
            tmp.unlink(missing_ok=True)
            if self.budget is not None:
                self.budget.forget(self.image)
            raise

    def mount(self) -> None:
        if is_mounted(self.mnt):
            return
        self.mnt.mkdir(parents=True, exist_ok=True)
        try:
            loopdev.loop_mount(self.image, self.mnt, MOUNT_FLAGS)
        except loopdev.Unsupported:
            _run(["mount", "-o", MOUNT_OPTIONS, str(self.image), str(self.mnt)])
        except OSError as exc:
            raise SandboxError(f"cannot mount {self.image}: {exc.strerror or exc}") from exc
        for d in ("upper", "work"):
            path = self.mnt / d
            if not path.exists():
                path.mkdir()
                # the upper dir is the guest's "/": the usual mode, not the agent's umask 077
                os.chmod(path, 0o755)

    def umount(self) -> None:
        if not is_mounted(self.mnt):
            return
        try:
            loopdev.umount(self.mnt)
        except OSError:
            proc = subprocess.run(["umount", str(self.mnt)], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True, check=False)

    def used_bytes(self) -> int:
        st = os.statvfs(self.mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def resize(self, size_gb: int) -> None:
        """Grow or shrink keeping every file; refuse to shrink below what is in use.

        Offline (the caller stops the workspace's sandbox first): this kernel refuses ext4
        online resize, and a shrink has to be offline anyway.
        """
        new = size_gb * GB
        old = self.size_bytes
        if new == old:
            return
        was_mounted = is_mounted(self.mnt)
        if new < old:
            self.mount()
            used = self.used_bytes()
            if used + 64 * 1024**2 > new:
                raise Conflict(f"cannot shrink to {size_gb} GB: {used / GB:.2f} GB are in use (delete files first)")
        if new > old and self.budget is not None:
            self.budget.reserve(self.image, new, self.what)  # before anything changes
        try:
            self._resize_offline(new, old, size_gb, was_mounted)
        except BaseException:
            if self.budget is not None:
                self.budget.reserve(self.image, self.size_bytes)  # what the image is now
            raise
        if self.budget is not None:
            self.budget.reserve(self.image, new)  # a shrink always fits
        if was_mounted:
            self.mount()

    def _resize_offline(self, new: int, old: int, size_gb: int, was_mounted: bool) -> None:
        self.umount()
        _run(["e2fsck", "-f", "-p", str(self.image)], ok=(0, 1))  # 1: errors fixed
        if new > old:
            with open(self.image, "r+b") as f:
                f.truncate(new)
            _run(["resize2fs", str(self.image)])
        else:
            # resize2fs's own estimate includes metadata; ask it rather than fail half-way
            est = _run(["resize2fs", "-P", str(self.image)]).stdout
            blocks = int(est.strip().rsplit(":", 1)[-1]) if ":" in est else 0
            if blocks * 4096 > new:
                if was_mounted:
                    self.mount()
                raise Conflict(
                    f"cannot shrink to {size_gb} GB: the files and filesystem metadata need "
                    f"{blocks * 4096 / GB:.2f} GB (delete files first)"
                )
            _run(["resize2fs", str(self.image), f"{new // 1024}K"])
            with open(self.image, "r+b") as f:
                f.truncate(new)

    def _loop_device(self) -> str:
        out = _run(["losetup", "-j", str(self.image)]).stdout.strip()
        if not out:
            raise SandboxError(f"{self.image} is not attached to a loop device")
        return out.split(":", 1)[0]

    def destroy(self) -> None:
        self.umount()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.budget is not None:
            self.budget.forget(self.image)
