"""Reading an upper directory: entry kinds, metadata, xattrs and content-defined chunks.

Chunking is FastCDC (256 KiB min, 1 MiB average, 4 MiB max) over 16 MiB read windows, so a
huge file never sits in memory whole; a sparse file is read extent by extent (``SEEK_DATA`` /
``SEEK_HOLE``) so its holes cost nothing and come back as holes.  Files are read with
``pread`` rather than ``mmap``: a sandbox may truncate a file while we read it, which would
SIGBUS an mmap reader.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from typing import Any

from fastcdc.fastcdc_cy import fastcdc_cy

from mags.storage.sync import format as fmt

CDC_MIN = 256 << 10
CDC_AVG = 1 << 20
CDC_MAX = 4 << 20
WINDOW = 16 << 20

# Entry kinds, as stored in manifests.
FILE, DIR, SYMLINK, WHITEOUT, FIFO = "f", "d", "l", "w", "p"

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class FileChanged(Exception):
    """The file changed under us while it was read (shrunk, replaced)."""


def kind_of(st: os.stat_result) -> str | None:
    """The manifest kind of an lstat result; None for what we skip (sockets, devices)."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_ISCHR(mode) and st.st_rdev == 0:
        return WHITEOUT  # overlayfs whiteout: a 0:0 character device
    if stat.S_ISFIFO(mode):
        return FIFO
    return None


_CLOCK_REALTIME_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)  # 5 on Linux; Python < 3.13 lacks it


def coarse_now_ns() -> int:
    """The kernel's coarse wall clock, the one file timestamps are taken from."""
    return time.clock_gettime_ns(_CLOCK_REALTIME_COARSE)


def read_xattrs(target: str | int) -> dict[str, bytes]:
    """All xattrs of a path (not following symlinks) or an open fd."""
    follow = isinstance(target, int)
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
            return {}
        raise
    out: dict[str, bytes] = {}
    for name in names:
        try:
            out[name] = os.getxattr(target, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                continue  # removed since listed, or not readable here
            raise
    return out


def base_entry(name: str, kind: str, st: os.stat_result) -> dict[str, Any]:
    """The fields every manifest entry has."""
    return {
        "n": name,
        "k": kind,
        "m": stat.S_IMODE(st.st_mode),
        "u": st.st_uid,
        "g": st.st_gid,
        "t": st.st_mtime_ns,
    }


def meta_entry(path: str, name: str, kind: str, st: os.stat_result) -> dict[str, Any]:
    """A full entry for a non-file (dir fields except the subtree, symlink, whiteout, fifo)."""
    entry = base_entry(name, kind, st)
    if kind == SYMLINK:
        entry["L"] = os.readlink(path)
    xattrs = read_xattrs(path)
    if xattrs:
        entry["x"] = fmt.encode_xattrs(xattrs)
    return entry


def open_file(path: str) -> int:
    """Open a regular file for reading without following symlinks or touching atime."""
    try:
        return os.open(path, _OPEN_FLAGS | os.O_NOATIME)
    except PermissionError:
        return os.open(path, _OPEN_FLAGS)  # O_NOATIME needs ownership or CAP_FOWNER


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of a file that hold data (holes left out)."""
    extents: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # only a hole remains
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end))
        pos = end
    return extents


def is_sparse(st: os.stat_result) -> bool:
    """True when a file has holes worth skipping (allocated well below its size)."""
    return st.st_size > CDC_MAX and st.st_blocks * 512 < st.st_size - CDC_MIN


def iter_chunks(fd: int, st: os.stat_result) -> Iterator[tuple[int, memoryview]]:
    """Yield ``(file offset, data)`` content-defined chunks of an open file.

    Each yielded view is valid until the next one is requested.
    """
    size = st.st_size
    if size == 0:
        return
    if size <= CDC_MIN:
        data = os.pread(fd, size, 0)
        if len(data) != size:
            raise FileChanged
        yield 0, memoryview(data)
        return
    extents = data_extents(fd, size) if is_sparse(st) else [(0, size)]
    for start, end in extents:
        yield from _chunk_extent(fd, start, end)


def _chunk_extent(fd: int, start: int, end: int) -> Iterator[tuple[int, memoryview]]:
    carry = b""
    base = start  # file offset of carry[0]
    pos = start
    while True:
        want = min(WINDOW, end - pos)
        block = os.pread(fd, want, pos) if want > 0 else b""
        if len(block) != want:
            raise FileChanged
        pos += want
        buf = carry + block if carry else block
        if not buf:
            return
        final = pos >= end
        view = memoryview(buf)
        cuts = [(c.offset, c.length) for c in fastcdc_cy(view, CDC_MIN, CDC_AVG, CDC_MAX)]
        if not final and len(cuts) > 1:
            cuts.pop()  # the last cut may move once the next window is read
        consumed = 0
        for off, length in cuts:
            yield base + off, view[off : off + length]
            consumed = off + length
        if final:
            return
        carry = buf[consumed:]
        base += consumed
