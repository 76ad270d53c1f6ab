"""Describe a directory tree exactly (content and metadata) and diff two descriptions.

Used by tests and for verifying a restore by hand: ``diff_trees(describe(a), describe(b))``
is empty when the trees are equal in every way a sync promises to keep — kind, mode, owner,
mtime (ns), size, content hash, symlink target, xattrs, hardlink grouping, whiteouts, holes
aside.  Sockets and device nodes other than whiteouts are ignored, as a sync skips them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import blake3

from mags.storage.sync import fsread


def _content_hash(path: str) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def describe(root: str | Path, *, with_root_mtime: bool = True) -> dict[str, dict[str, Any]]:
    """``{relative path: attributes}`` for every entry under ``root`` ("" is root itself)."""
    out: dict[str, dict[str, Any]] = {}
    first_path: dict[tuple[int, int], str] = {}
    root = str(root)

    def visit(path: str, rel: str) -> None:
        st = os.lstat(path)
        kind = fsread.kind_of(st)
        if kind is None:
            return
        attrs: dict[str, Any] = {
            "kind": kind,
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "xattrs": dict(sorted(fsread.read_xattrs(path).items())),
        }
        if kind != fsread.DIR or rel or with_root_mtime:
            attrs["mtime_ns"] = st.st_mtime_ns
        if kind == fsread.FILE:
            attrs["size"] = st.st_size
            attrs["blake3"] = _content_hash(path)
            if st.st_nlink > 1:
                attrs["link_group"] = first_path.setdefault((st.st_dev, st.st_ino), rel)
        elif kind == fsread.SYMLINK:
            attrs["target"] = os.readlink(path)
        out[rel] = attrs
        if kind == fsread.DIR:
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name), f"{rel}/{name}" if rel else name)

    visit(root, "")
    return out


def diff_trees(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable differences between two :func:`describe` results (empty if equal)."""
    problems = []
    for rel in sorted(set(a) | set(b)):
        if rel not in a:
            problems.append(f"{rel or '/'}: only in second")
        elif rel not in b:
            problems.append(f"{rel or '/'}: only in first")
        elif a[rel] != b[rel]:
            keys = sorted(k for k in set(a[rel]) | set(b[rel]) if a[rel].get(k) != b[rel].get(k))
            detail = ", ".join(f"{k}: {a[rel].get(k)!r} != {b[rel].get(k)!r}" for k in keys)
            problems.append(f"{rel or '/'}: {detail}")
    return problems
