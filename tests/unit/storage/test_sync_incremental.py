"""Incremental syncs: nothing changed costs nothing, one change costs about that change."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from mags.storage.local import LocalObjectStore
from mags.storage.sync import SnapshotResult, fsread, restore, snapshot

from .helpers import assert_same_tree, build_basic_tree, random_bytes, write


def settle() -> None:
    """Let the coarse clock tick past the last change (else it is rightly re-read next time)."""
    time.sleep(0.03)


def sync(store: LocalObjectStore, upper: Path, parent: str | None, cache: Path) -> SnapshotResult:
    settle()
    return snapshot(store, upper, parent, cache)


def check_roundtrip(store: LocalObjectStore, res: SnapshotResult, upper: Path, tmp_path: Path) -> None:
    dest = tmp_path / f"check-{res.snapshot_id}"
    restore(store, res.snapshot_id, dest, tmp_path / f"cache-{res.snapshot_id}")
    assert_same_tree(upper, dest)
    shutil.rmtree(dest)


def test_no_change_commits_nothing(store: LocalObjectStore, upper: Path, cache: Path) -> None:
    build_basic_tree(upper)
    first = sync(store, upper, None, cache)
    objects = sorted(i.key for i in store.list(""))
    again = sync(store, upper, first.snapshot_id, cache)
    assert (again.snapshot_id, again.changed, again.bytes_uploaded) == (first.snapshot_id, False, 0)
    assert again.files_hashed == 0
    assert (again.files, again.bytes_total) == (first.files, first.bytes_total)
    assert sorted(i.key for i in store.list("")) == objects


def test_one_file_change_uploads_about_that_file(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    build_basic_tree(upper)
    for i in range(200):
        write(upper / f"many/d{i % 10}/f{i}.bin", random_bytes(20_000, 100 + i))
    first = sync(store, upper, None, cache)
    write(upper / "many/d3/f13.bin", random_bytes(20_000, 9999))
    res = sync(store, upper, first.snapshot_id, cache)
    assert res.changed and res.snapshot_id != first.snapshot_id
    assert res.files_hashed == 1
    assert 20_000 < res.bytes_uploaded < 20_000 + 8_000  # the file + 3 small manifests + root
    assert res.bytes_uploaded < first.bytes_uploaded / 100
    check_roundtrip(store, res, upper, tmp_path)


def test_small_change_in_big_file_uploads_one_chunk(
    store: LocalObjectStore, upper: Path, cache: Path
) -> None:
    write(upper / "big.bin", random_bytes(16 << 20, 5))
    first = sync(store, upper, None, cache)
    with open(upper / "big.bin", "r+b") as f:
        f.seek(9 << 20)
        f.write(random_bytes(4096, 6))
    res = sync(store, upper, first.snapshot_id, cache)
    assert res.bytes_uploaded < 2 * fsread.CDC_MAX  # one or two chunks, not the file
    assert res.bytes_uploaded < first.bytes_uploaded / 4


def test_dedup_across_files_and_workspaces(store: LocalObjectStore, tmp_path: Path, cache: Path) -> None:
    blob = random_bytes(3 << 20, 7)
    a = tmp_path / "ws-a"
    write(a / "one.bin", blob)
    write(a / "copy/two.bin", blob)
    res_a = sync(store, a, None, cache)
    assert len(blob) < res_a.bytes_uploaded < len(blob) * 1.05
    b = tmp_path / "ws-b"
    write(b / "three.bin", blob)
    res_b = sync(store, b, None, cache)  # another workspace, same host: the index knows the chunks
    assert res_b.bytes_uploaded < 10_000
    check_roundtrip(store, res_b, b, tmp_path)


@pytest.mark.parametrize(
    "change",
    [
        "content_same_size_and_mtime",
        "chmod",
        "xattr",
        "mtime",
        "delete",
        "rename_file",
        "rename_dir",
        "file_to_dir",
        "symlink_target",
        "new_hardlink",
        "truncate",
    ],
)
def test_every_change_is_seen(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path, change: str
) -> None:
    build_basic_tree(upper)
    first = sync(store, upper, None, cache)
    hello = upper / "hello.txt"
    if change == "content_same_size_and_mtime":
        st = os.stat(hello)
        hello.write_bytes(b"H" + hello.read_bytes()[1:])
        os.utime(hello, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "chmod":
        os.chmod(upper / "bin/tool", 0o700)
    elif change == "xattr":
        os.setxattr(upper / "deep/a/b", "user.tag", b"v")
    elif change == "mtime":
        os.utime(upper / "deep/a/b/c/d/e/leaf.py", ns=(1, 2))
    elif change == "delete":
        os.unlink(upper / "deep/a/b/c/d/e/leaf.py")
    elif change == "rename_file":
        os.rename(upper / "secret", upper / "deep/secret-moved")
    elif change == "rename_dir":
        os.rename(upper / "deep", upper / "aaa-deep")  # moves a hardlink; changes the group order
    elif change == "file_to_dir":
        os.unlink(upper / "secret")
        write(upper / "secret/inside", "now a dir")
    elif change == "symlink_target":
        os.unlink(upper / "link-rel")
        os.symlink("empty", upper / "link-rel")
    elif change == "new_hardlink":
        os.link(upper / "bin/tool", upper / "deep/tool-link")
    elif change == "truncate":
        os.truncate(upper / "big.bin", 1000)
    res = sync(store, upper, first.snapshot_id, cache)
    assert res.changed and res.snapshot_id != first.snapshot_id
    check_roundtrip(store, res, upper, tmp_path)
    assert not sync(store, upper, res.snapshot_id, cache).changed


def test_fresh_host_sync_with_parent_reuploads_nothing(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    build_basic_tree(upper)
    first = sync(store, upper, None, cache)
    # Another host restores the head and syncs it: no local state there, so it reads every
    # file, but it learns the parent's chunks from the parent's manifests.
    other = tmp_path / "other-host"
    restore(store, first.snapshot_id, other / "upper", other / "cache")
    assert not sync(store, other / "upper", first.snapshot_id, other / "cache").changed
    shutil.rmtree(other / "cache")
    res = sync(store, other / "upper", first.snapshot_id, other / "cache")
    assert not res.changed and res.files_hashed == res.files and res.bytes_uploaded == 0
    write(other / "upper/hello.txt", "changed on the other host")
    res = sync(store, other / "upper", first.snapshot_id, other / "cache")
    assert res.changed and res.bytes_uploaded < 5_000
    check_roundtrip(store, res, other / "upper", tmp_path)


def test_lost_commit_does_not_force_a_rehash(store: LocalObjectStore, upper: Path, cache: Path) -> None:
    build_basic_tree(upper)
    head = sync(store, upper, None, cache).snapshot_id
    write(upper / "new.txt", "x")
    lost = sync(store, upper, head, cache)  # suppose its compare-and-swap failed
    retry = sync(store, upper, head, cache)  # the agent retries from the same head
    assert retry.changed and retry.files_hashed <= 1
    assert lost.changed


def test_changes_inside_the_scan_tick_are_not_trusted(
    store: LocalObjectStore, upper: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_basic_tree(upper)
    settle()
    monkeypatch.setattr(fsread, "coarse_now_ns", lambda: 0)  # every ctime is "too recent"
    first = snapshot(store, upper, None, cache)
    monkeypatch.undo()
    again = snapshot(store, upper, first.snapshot_id, cache)
    assert not again.changed and again.files_hashed == first.files_hashed > 0
    third = snapshot(store, upper, first.snapshot_id, cache)
    assert third.files_hashed == 0


def test_file_vanishing_mid_sync_is_skipped(
    store: LocalObjectStore, upper: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(upper / "stays", "1")
    write(upper / "goes", "2")
    real_open = fsread.open_file

    def racing_open(path: str) -> int:
        if path.endswith("goes"):
            os.unlink(path)
        return real_open(path)

    monkeypatch.setattr(fsread, "open_file", racing_open)
    res = snapshot(store, upper, None, cache)
    assert res.changed and res.files == 1


def test_rewrite_compacts_many_small_packs(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    write(upper / "base.bin", random_bytes(1 << 20, 20))
    head = sync(store, upper, None, cache)
    for i in range(70):  # 70 tiny syncs: 70 small data packs stay referenced
        write(upper / f"f{i}", f"change {i}")
        head = snapshot(store, upper, head.snapshot_id, cache)
    assert head.packs > 64 and head.compaction_advised
    from mags.storage.sync import SyncOptions

    settle()
    compact = snapshot(store, upper, head.snapshot_id, cache, SyncOptions(rewrite=True))
    assert compact.changed and compact.packs <= 3 and not compact.compaction_advised
    check_roundtrip(store, compact, upper, tmp_path)
    assert not sync(store, upper, compact.snapshot_id, cache).changed
