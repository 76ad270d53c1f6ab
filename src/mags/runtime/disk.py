"""Size-limited writable layers: a sparse ext4 image per workspace (or scratch), loop-mounted.

This kernel has no quota support (CONFIG_QUOTA is off: neither ext4 nor XFS project quotas
mount), so a hard per-sandbox size limit needs a filesystem of its own.  A sparse ext4 image
costs only what is written, gives the script ENOSPC at the limit, and never fills the host
beyond its size.  Layout of a mounted disk: ``upper/`` and ``work/`` (overlay), ``tmp/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mags.errors import Conflict, SandboxError, ValidationError

GB = 1024**3


def _run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in ok:
        raise SandboxError(f"{cmd[0]} failed: {(proc.stderr or proc.stdout).strip()[:500]}")
    return proc


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

    def create(self, size_gb: int, journal: bool = True) -> None:
        if size_gb < 1:
            raise ValidationError("disk size must be at least 1 GB")
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "disk.img.new"
        with open(tmp, "wb") as f:
            f.truncate(size_gb * GB)
        opts = ["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]
        if not journal:
            opts += ["-O", "^has_journal"]
        try:
            _run(["mkfs.ext4", *opts, str(tmp)])
        except SandboxError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.image)

    def mount(self) -> None:
        if is_mounted(self.mnt):
            return
        self.mnt.mkdir(parents=True, exist_ok=True)
        _run(["mount", "-o", "loop,noatime", str(self.image), str(self.mnt)])
        for d in ("upper", "work"):
            (self.mnt / d).mkdir(exist_ok=True)

    def umount(self) -> None:
        if is_mounted(self.mnt):
            proc = subprocess.run(["umount", str(self.mnt)], capture_output=True, text=True)
            if proc.returncode != 0:
                subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)

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
        if was_mounted:
            self.mount()

    def _loop_device(self) -> str:
        out = _run(["losetup", "-j", str(self.image)]).stdout.strip()
        if not out:
            raise SandboxError(f"{self.image} is not attached to a loop device")
        return out.split(":", 1)[0]

    def destroy(self) -> None:
        self.umount()
        shutil.rmtree(self.dir, ignore_errors=True)
