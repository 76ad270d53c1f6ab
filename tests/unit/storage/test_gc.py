"""gc(): live and young data stays, dead old data goes; index rebuild; repository deletion."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from mags.errors import StorageError
from mags.storage.local import LocalObjectStore
from mags.storage.sync import SyncOptions, delete_repository, gc, rebuild_index, restore, snapshot

from .helpers import assert_same_tree, random_bytes, write


def age_everything(store: LocalObjectStore, seconds: float) -> None:
    """Pretend every object was written ``seconds`` ago."""
    past = time.time() - seconds
    for info in store.list(""):
        os.utime(store.path_of(info.key), (past, past))


def keys(store: LocalObjectStore, prefix: str) -> set[str]:
    return {i.key for i in store.list(prefix)}


def test_gc_keeps_live_and_young_removes_dead_old(
    store: LocalObjectStore, upper: Path, cache: Path, tmp_path: Path
) -> None:
    write(upper / "a.bin", random_bytes(300_000, 1))
    s1 = snapshot(store, upper, None, cache).snapshot_id
    os.unlink(upper / "a.bin")
    write(upper / "b.bin", random_bytes(300_000, 2))
    s2 = snapshot(store, upper, s1, cache).snapshot_id
    age_everything(store, 7200)
    write(upper / "c.bin", random_bytes(300_000, 3))
    s3 = snapshot(store, upper, s2, cache).snapshot_id  # young, never committed: kept by age

    dry = gc(store, {s2}, grace_seconds=3600, dry_run=True)
    assert dry.snapshots_deleted == 1 and dry.packs_deleted >= 1
    assert keys(store, "snapshots/") == {f"snapshots/{s}" for s in (s1, s2, s3)}

    res = gc(store, {s2}, grace_seconds=3600, cache_dir=cache)
    assert res.snapshots_deleted == 1 and res.bytes_freed >= 300_000
    assert keys(store, "snapshots/") == {f"snapshots/{s2}", f"snapshots/{s3}"}
    for sid in (s2, s3):
        restore(store, sid, tmp_path / sid, tmp_path / f"fresh-{sid}")
    assert_same_tree(upper, tmp_path / s3)

    age_everything(store, 7200)
    gc(store, {s3}, grace_seconds=3600)  # s2 now dead and old; s3's shared packs stay
    assert keys(store, "snapshots/") == {f"snapshots/{s3}"}
    restore(store, s3, tmp_path / "again", tmp_path / "fresh-again")
    assert_same_tree(upper, tmp_path / "again")


def test_gc_after_sync_from_gced_index_is_safe(store: LocalObjectStore, tmp_path: Path, cache: Path) -> None:
    """The host index must not make a new snapshot point into a pack GC deleted."""
    a, b = tmp_path / "a", tmp_path / "b"
    blob = random_bytes(500_000, 4)
    write(a / "x.bin", blob)
    snapshot(store, a, None, cache)  # never committed
    age_everything(store, 30 * 3600)
    gc(store, set(), grace_seconds=24 * 3600)  # deletes it; the index on this host still lists it
    assert keys(store, "packs/") == set()
    write(b / "y.bin", blob)
    res = snapshot(store, b, None, cache)  # old index rows are not trusted: data uploaded again
    assert res.bytes_uploaded > len(blob)
    restore(store, res.snapshot_id, tmp_path / "r", tmp_path / "fresh")
    assert_same_tree(b, tmp_path / "r")


def test_old_index_rows_are_not_reused(store: LocalObjectStore, tmp_path: Path, cache: Path) -> None:
    """A pack older than the reuse window may be collected any moment: do not point into it."""
    blob = random_bytes(500_000, 5)
    write(tmp_path / "a/x.bin", blob)
    snapshot(store, tmp_path / "a", None, cache)
    age_everything(store, 30 * 3600)
    db = sqlite3.connect(cache / "index.sqlite")
    with db:
        db.execute("UPDATE chunks SET ptime = ptime - ?", (30 * 3600,))
    db.close()
    write(tmp_path / "b/y.bin", blob)
    res = snapshot(store, tmp_path / "b", None, cache)
    assert res.bytes_uploaded > len(blob)


def test_gc_refuses_when_a_live_snapshot_is_unreadable(
    store: LocalObjectStore, upper: Path, cache: Path
) -> None:
    write(upper / "f", "x")
    sid = snapshot(store, upper, None, cache).snapshot_id
    age_everything(store, 7200)
    with pytest.raises(StorageError, match="aborted"):
        gc(store, {sid, "f" * 32}, grace_seconds=60)
    assert keys(store, "snapshots/") == {f"snapshots/{sid}"}


def test_gc_removes_stale_temp_files(store: LocalObjectStore) -> None:
    stale = store.root / ".tmp" / "dead-writer"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 90000, time.time() - 90000))
    gc(store, set(), grace_seconds=3600)
    assert not stale.exists()


def test_rebuild_index_gives_cross_workspace_dedup_on_fresh_host(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    blob = random_bytes(2 << 20, 8)
    write(tmp_path / "a/x.bin", blob)
    snapshot(store, tmp_path / "a", None, tmp_path / "host1")
    fresh = tmp_path / "host2"
    assert rebuild_index(store, fresh) >= 2
    write(tmp_path / "b/y.bin", blob)
    res = snapshot(store, tmp_path / "b", None, fresh)
    assert res.bytes_uploaded < 10_000


def test_delete_repository(store: LocalObjectStore, upper: Path, cache: Path) -> None:
    write(upper / "f", "x")
    snapshot(store, upper, None, cache, SyncOptions(prefix="t1/"))
    snapshot(store, upper, None, tmp := cache.parent / "c2", SyncOptions(prefix="t2/"))
    assert tmp.exists()
    assert delete_repository(store, "t1/") >= 3
    assert {i.key.split("/")[0] for i in store.list("")} == {"t2"}
    with pytest.raises(StorageError):
        delete_repository(store, "")
