"""snapshot() + restore(): every kind of entry comes back exactly, on this host and a fresh one."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from mags.errors import StorageError
from mags.storage.local import LocalObjectStore
from mags.storage.sync import SyncOptions, restore, snapshot
from mags.storage.sync.treediff import describe

from .helpers import (
    IS_ROOT,
    ROOT_REASON,
    assert_same_tree,
    build_basic_tree,
    build_full_tree,
    build_overlay_tree,
    write,
)


def test_roundtrip_every_kind(store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path) -> None:
    build_full_tree(upper)
    res = snapshot(store, upper, None, cache)
    assert res.changed and res.snapshot_id
    assert res.files == len([p for p in describe(upper).values() if p["kind"] == "f"])
    dest = tmp_path / "restored"
    out = restore(store, res.snapshot_id, dest, tmp_path / "fresh-host-cache")
    assert not out.reused and out.bytes_downloaded > 0
    assert_same_tree(upper, dest)


def test_hardlinks_come_back_linked(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    build_basic_tree(upper)
    res = snapshot(store, upper, None, cache)
    dest = tmp_path / "restored"
    restore(store, res.snapshot_id, dest, cache)
    a, b, c = (os.stat(dest / p) for p in ("hello.txt", "deep/hard-to-hello", "zz-hard"))
    assert a.st_ino == b.st_ino == c.st_ino and a.st_nlink == 3


def test_sparse_file_keeps_its_holes(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    build_basic_tree(upper)
    res = snapshot(store, upper, None, cache)
    assert res.bytes_uploaded < 8 << 20  # 40 MiB apparent size, ~5 MiB real data
    restore(store, res.snapshot_id, tmp_path / "r", cache)
    st = os.stat(tmp_path / "r/sparse.img")
    assert st.st_size == (40 << 20) + 3
    assert st.st_blocks * 512 < 4 << 20


@pytest.mark.skipif(not IS_ROOT, reason=ROOT_REASON)
def test_overlay_entries(store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path) -> None:
    build_overlay_tree(upper)
    res = snapshot(store, upper, None, cache)
    dest = tmp_path / "r"
    restore(store, res.snapshot_id, dest, tmp_path / "other-cache")
    st = os.lstat(dest / "deleted-file")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "opaque", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest / "meta-copy", "trusted.overlay.redirect") == b"/some/where"
    assert os.stat(dest / "suid").st_mode & 0o7777 == 0o4755
    assert os.lstat(dest / "owned-link").st_uid == 1234
    assert_same_tree(upper, dest)


def test_root_dir_metadata_is_kept(store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path) -> None:
    write(upper / "f", "x")
    os.chmod(upper, 0o751)
    os.setxattr(upper, "user.root-note", b"top")
    res = snapshot(store, upper, None, cache)
    restore(store, res.snapshot_id, tmp_path / "r", cache)
    assert os.stat(tmp_path / "r").st_mode & 0o7777 == 0o751
    assert os.getxattr(tmp_path / "r", "user.root-note") == b"top"
    assert_same_tree(upper, tmp_path / "r")


def test_sockets_skipped_devices_warned(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    write(upper / "keep", "x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(upper / "app.sock"))
    try:
        if IS_ROOT:
            os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        res = snapshot(store, upper, None, cache)
    finally:
        sock.close()
    assert res.warnings == (["skipped device node null"] if IS_ROOT else [])
    restore(store, res.snapshot_id, tmp_path / "r", cache)
    assert sorted(os.listdir(tmp_path / "r")) == ["keep"]


def test_empty_upper(store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path) -> None:
    res = snapshot(store, upper, None, cache)
    assert res.changed and res.files == 0
    restore(store, res.snapshot_id, tmp_path / "r", cache)
    assert os.listdir(tmp_path / "r") == []


def test_restore_into_existing_empty_dir(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    write(upper / "a", "1")
    res = snapshot(store, upper, None, cache)
    dest = tmp_path / "exists"
    dest.mkdir()
    restore(store, res.snapshot_id, dest, cache)
    assert_same_tree(upper, dest)
    assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []


def test_restore_refuses_foreign_nonempty_dir(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    write(upper / "a", "1")
    res = snapshot(store, upper, None, cache)
    dest = tmp_path / "busy"
    write(dest / "other", "not ours")
    with pytest.raises(StorageError, match="not empty"):
        restore(store, res.snapshot_id, dest, cache)
    out = restore(store, res.snapshot_id, dest, cache, replace=True)
    assert not out.reused
    assert_same_tree(upper, dest)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_restore_same_host_skips_work(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    build_basic_tree(upper)
    res = snapshot(store, upper, None, cache)
    dest = tmp_path / "r"
    restore(store, res.snapshot_id, dest, cache)
    again = restore(store, res.snapshot_id, dest, cache)
    assert again.reused and again.bytes_downloaded == 0
    write(dest / "hello.txt", "locally modified")
    with pytest.raises(StorageError, match="not empty"):
        restore(store, res.snapshot_id, dest, cache)


def test_restore_unknown_snapshot(store: LocalObjectStore, cache: Path, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        restore(store, "0" * 32, tmp_path / "r", cache)
    with pytest.raises(StorageError, match="bad snapshot id"):
        restore(store, "../../etc", tmp_path / "r", cache)
    assert not (tmp_path / "r").exists()


def test_corrupt_pack_is_detected(store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path) -> None:
    write(upper / "data.bin", os.urandom(100_000))
    res = snapshot(store, upper, None, cache)
    for info in store.list("packs/"):
        path = store.path_of(info.key)
        raw = bytearray(path.read_bytes())
        raw[20] ^= 0xFF
        path.write_bytes(bytes(raw))
    with pytest.raises(StorageError, match="corrupt|truncated"):
        restore(store, res.snapshot_id, tmp_path / "r", tmp_path / "fresh")
    assert not (tmp_path / "r").exists()
    assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []


def test_repository_prefix(store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path) -> None:
    write(upper / "a", "1")
    opts = SyncOptions(prefix="tenant-7/")
    res = snapshot(store, upper, None, cache, opts)
    assert {i.key.split("/")[0] for i in store.list("")} == {"tenant-7"}
    restore(store, res.snapshot_id, tmp_path / "r", tmp_path / "c2", opts)
    assert_same_tree(upper, tmp_path / "r")


def test_huge_sparse_file_roundtrip(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    with open(upper / "vm.img", "wb") as f:
        f.truncate(20 << 30)  # 20 GiB, all hole
    write(upper / "note", "x")
    res = snapshot(store, upper, None, cache)
    assert res.bytes_total == (20 << 30) + 1 and res.bytes_uploaded < 10_000
    restore(store, res.snapshot_id, tmp_path / "r", cache)
    st = os.stat(tmp_path / "r/vm.img")
    assert st.st_size == 20 << 30 and st.st_blocks == 0
