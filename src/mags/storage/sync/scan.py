"""The scan of an upper directory: ``lstat`` everything, decide what can be trusted unread.

A path is *trusted* when its ``(inode, ctime, size, mtime)`` equals what the host recorded for
it as of the parent snapshot (directories: ``(inode, ctime)``): ctime moves on any change to
content, mode, owner, xattrs or link count, so the parent's manifest entry still describes it.  A directory is *clean* when it and everything
below it is trusted — then its whole subtree is reused by ref without being loaded.

Hardlinked regular files (``st_nlink > 1``) get a key: the first path of their inode in this
walk's order (names sorted, depth first), which is the same on every host.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import Future
from typing import Any

from mags.storage.sync import format as fmt
from mags.storage.sync import fsread

#: deepest directory nesting we follow (Python recursion; an upper this deep is refused)
MAX_DEPTH = 500


class Node:
    """One directory found by the scan."""

    __slots__ = ("clean", "kids", "path", "prev", "prev_ref", "rel", "st", "state_ref", "trusted")

    def __init__(self, path: str, rel: str, st: os.stat_result, trusted: bool, state_ref: Any) -> None:
        self.path = path
        self.rel = rel
        self.st = st
        self.kids: list[Kid] = []
        self.trusted = trusted
        self.state_ref = state_ref
        self.clean = False
        self.prev_ref: fmt.Ref | None = None
        self.prev: dict[str, fmt.Entry] | None = None


class Kid:
    """One child of a directory (a subdirectory when ``node`` is set)."""

    __slots__ = ("h", "job", "kind", "name", "node", "rel", "st", "trusted")

    def __init__(
        self, name: str, rel: str, st: os.stat_result, kind: str, h: str | None, trusted: bool
    ) -> None:
        self.name = name
        self.rel = rel
        self.st = st
        self.kind = kind
        self.h = h
        self.trusted = trusted
        self.node: Node | None = None
        self.job: Future[tuple[fmt.Entry, os.stat_result] | None] | None = None


def leaf_state(st: os.stat_result, h: str | None) -> list[Any]:
    """What the host records about a non-directory: git's index fields, plus the link key."""
    rec: list[Any] = [st.st_ino, st.st_ctime_ns, st.st_size, st.st_mtime_ns]
    if h is not None:
        rec.append(h)
    return rec


def join_rel(parent: str, name: str) -> str:
    """Relative path of ``name`` inside the directory ``parent`` ("" is the root)."""
    return f"{parent}/{name}" if parent else name


class TooDeep(Exception):
    """The directory tree nests deeper than MAX_DEPTH."""


class Scanner:
    """Scans one upper directory against a recorded state (``{rel: [ino, ctime, extra?]}``)."""

    def __init__(self, state: dict[str, list[Any]]) -> None:
        self.state = state
        self.warnings: list[str] = []
        self.first_seen: dict[tuple[int, int], str] = {}

    def scan(self, path: str, rel: str, st: os.stat_result, depth: int = 0) -> Node:
        """Scan the directory ``path`` (relative path ``rel``, lstat ``st``) recursively."""
        if depth > MAX_DEPTH:
            raise TooDeep(rel)
        state = self.state
        s = state.get(rel)
        trusted = s is not None and len(s) > 2 and s[0] == st.st_ino and s[1] == st.st_ctime_ns
        node = Node(path, rel, st, trusted, s[2] if trusted else None)  # type: ignore[index]
        clean = trusted
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            crel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                cst = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted since listed
            kind = fsread.kind_of(cst)
            if kind is None:
                if not stat.S_ISSOCK(cst.st_mode):
                    self.warnings.append(f"skipped device node {crel}")
                continue
            if kind == fsread.DIR:
                try:
                    sub = self.scan(entry.path, crel, cst, depth + 1)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                kid = Kid(entry.name, crel, cst, kind, None, sub.trusted)
                kid.node = sub
                clean = clean and sub.clean
            else:
                h = None
                if kind == fsread.FILE and cst.st_nlink > 1:
                    h = self.first_seen.setdefault((cst.st_dev, cst.st_ino), crel)
                ok = state.get(crel) == leaf_state(cst, h)
                kid = Kid(entry.name, crel, cst, kind, h, ok)
                clean = clean and ok
            node.kids.append(kid)
        node.clean = clean
        return node
