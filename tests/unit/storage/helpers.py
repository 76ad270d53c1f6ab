"""Test helpers: build upper dirs holding every kind of entry overlayfs produces."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

from mags.storage.sync.treediff import describe, diff_trees

IS_ROOT = os.geteuid() == 0
ROOT_REASON = "needs root (whiteouts need CAP_MKNOD, trusted.* xattrs need CAP_SYS_ADMIN)"


def write(path: Path, data: bytes | str, mode: int | None = None) -> Path:
    """Write a file (creating parents), optionally chmod it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        path.chmod(mode)
    return path


def random_bytes(n: int, seed: int) -> bytes:
    """Deterministic incompressible bytes."""
    return random.Random(seed).randbytes(n)


def build_basic_tree(root: Path) -> None:
    """Files, dirs, symlinks, hardlinks, empty/sparse/big files, a fifo (no root needed)."""
    root.mkdir(parents=True, exist_ok=True)
    write(root / "hello.txt", "hello world\n" * 100)
    write(root / "empty", b"")
    write(root / "bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    write(root / "secret", b"s3cret", 0o600)
    write(root / "deep/a/b/c/d/e/leaf.py", "print('leaf')\n")
    (root / "emptydir").mkdir()
    write(root / "big.bin", random_bytes(3 << 20, 1) + b"z" * (2 << 20))
    with open(root / "sparse.img", "wb") as f:
        f.seek(40 << 20)
        f.write(b"end")
        f.seek(8 << 20)
        f.write(random_bytes(200_000, 2))
    os.symlink("hello.txt", root / "link-rel")
    os.symlink("/etc/passwd", root / "link-abs")
    os.symlink("does/not/exist", root / "link-dangling")
    os.link(root / "hello.txt", root / "deep/hard-to-hello")
    os.link(root / "hello.txt", root / "zz-hard")
    os.mkfifo(root / "fifo")
    weird = os.fsdecode(b"caf\xc3\xa9 \xff name\n")
    write(root / weird, "odd name")
    os.setxattr(root / "hello.txt", "user.note", b"\x00binary\xff")
    os.utime(root / "emptydir", ns=(1_000_000_123, 1_500_000_456))
    (root / "dir700").mkdir(mode=0o700)
    os.chmod(root / "bin", 0o2775)


def build_overlay_tree(root: Path) -> None:
    """Entries only root can make: whiteouts, opaque dirs, trusted.* xattrs, other owners, setuid."""
    os.mknod(root / "deleted-file", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (root / "opaque").mkdir()
    os.setxattr(root / "opaque", "trusted.overlay.opaque", b"y")
    write(root / "opaque/new.txt", "replaces the lower dir's content")
    os.mknod(root / "opaque/gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    write(root / "meta-copy", b"")
    os.setxattr(root / "meta-copy", "trusted.overlay.metacopy", b"")
    os.setxattr(root / "meta-copy", "trusted.overlay.redirect", b"/some/where")
    write(root / "owned", "by someone else", 0o640)
    os.chown(root / "owned", 1234, 5678)
    write(root / "suid", b"\x7fELF")
    os.chown(root / "suid", 0, 0)
    os.chmod(root / "suid", 0o4755)  # after chown, which clears setuid
    os.symlink("owned", root / "owned-link")
    os.chown(root / "owned-link", 1234, 5678, follow_symlinks=False)
    os.setxattr(root / "owned-link", "trusted.overlay.origin", b"\x00\x01", follow_symlinks=False)


def build_full_tree(root: Path) -> None:
    """Everything the sync promises to carry (root-only parts only when root)."""
    build_basic_tree(root)
    if IS_ROOT:
        build_overlay_tree(root)


def assert_same_tree(a: Path, b: Path) -> None:
    """Fail with a readable list if the trees differ in content or metadata."""
    problems = diff_trees(describe(a), describe(b))
    assert not problems, "trees differ:\n" + "\n".join(problems[:50])
