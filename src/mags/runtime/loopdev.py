"""Loop-mount an image and clone sparse images in-process: what ``mount -o loop`` and ``mkfs`` cost.

Every ephemeral sandbox gets a scratch disk of its own (runtime/host.py), so making, mounting
and unmounting one is on the path of every cold start.  ``mkfs.ext4`` (~5 ms) and ``mount -o
loop`` (~7 ms: util-linux parses the mount table, probes, sets up the loop device) are two
process spawns; the same work done here is ~2-3 ms:

* :func:`clone_sparse` copies an image made once by ``mkfs.ext4`` (a *template* per size): only
  its data extents (~1 MiB for a 2 GB filesystem without a journal), holes stay holes;
* :func:`loop_mount` takes a free loop device (``LOOP_CTL_GET_FREE``), binds it to the image
  with ``LOOP_CONFIGURE`` (``LO_FLAGS_AUTOCLEAR``: the device detaches itself at unmount)
  and calls mount(2);
* :func:`umount` is umount2(2), lazily (``MNT_DETACH``) if the filesystem is busy.

Each raises :class:`Unsupported` where the kernel lacks what it needs (``LOOP_CONFIGURE`` is
Linux >= 5.8), and the caller falls back to the programs.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from pathlib import Path

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
MS_NOSUID, MS_NODEV, MS_NOATIME = 2, 4, 1024
MNT_DETACH = 2
_LOOP_INFO64 = "<QQQQQIIII64s64s32sQQ"  # struct loop_info64 (linux/loop.h)


class Unsupported(OSError):
    """The kernel cannot do this in-process: use the programs."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def clone_sparse(template: Path, dest: Path, mode: int = 0o600) -> None:
    """Copy ``template`` to a new file ``dest``, data extents only (a sparse copy)."""
    src = os.open(template, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            size = os.fstat(src).st_size
            os.ftruncate(dst, size)
            offset = 0
            while offset < size:
                try:
                    data = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                hole = os.lseek(src, data, os.SEEK_HOLE)
                pos = data
                while pos < hole:
                    n = os.copy_file_range(src, dst, hole - pos, pos, pos)
                    if n <= 0:
                        raise OSError(errno.EIO, f"short copy of {template}")
                    pos += n
                offset = hole
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _attach(image: Path) -> tuple[int, str]:
    """A free loop device bound to ``image`` (autoclear): its open fd and path."""
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise Unsupported(exc.errno, f"no /dev/loop-control: {exc.strerror}") from exc
    img = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        name = os.fsencode(image)[:63]
        info = struct.pack(_LOOP_INFO64, 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, name, b"", b"", 0, 0)
        config = struct.pack("<II", img, 0) + info + bytes(64)
        for _ in range(32):  # another process may take the device between GET_FREE and CONFIGURE
            dev = f"/dev/loop{fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)}"
            fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(fd)
                if exc.errno == errno.EBUSY:
                    continue
                if exc.errno in (errno.EINVAL, errno.ENOTTY):
                    raise Unsupported(exc.errno, "LOOP_CONFIGURE not supported") from exc
                raise
            return fd, dev
        raise OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(img)
        os.close(ctl)


def loop_mount(image: Path, target: Path, flags: int, fstype: str = "ext4") -> str:
    """Mount ``image`` (through a new loop device) on ``target``; returns the device."""
    fd, dev = _attach(image)
    try:
        libc = _libc()
        if libc.mount(dev.encode(), os.fsencode(target), fstype.encode(), flags, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {image} on {target}: {os.strerror(err)}")
    finally:
        os.close(fd)  # the mount holds the device now; unmounted, it detaches (autoclear)
    return dev


def umount(target: Path) -> None:
    """Unmount ``target``; lazily if it is busy (it goes once its last user does)."""
    libc = _libc()
    path = os.fsencode(target)
    if libc.umount2(path, 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EINVAL:  # not a mount point (any more)
        return
    if libc.umount2(path, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")
