"""The sync engine against a real S3 server (SeaweedFS): round trip, incremental, gc, index rebuild."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

from mags.storage.sync import SyncOptions, gc, rebuild_index, restore, snapshot
from mags.storage.sync.treediff import describe, diff_trees

IS_ROOT = os.geteuid() == 0


def make_tree(root: Path) -> None:
    rng = random.Random(3)
    for i in range(60):
        p = root / f"d{i % 6}" / f"f{i}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.choice([0, 100, 5000, 200_000])))
    (root / "big.bin").write_bytes(rng.randbytes(9 << 20))  # spans packs
    os.symlink("d0/f0.bin", root / "link")
    os.link(root / "d1/f1.bin", root / "hard")
    os.setxattr(root / "d2", "user.k", b"v")
    if IS_ROOT:
        os.mknod(root / "whiteout", stat.S_IFCHR, os.makedev(0, 0))
        os.setxattr(root / "d3", "trusted.overlay.opaque", b"y")


def test_s3_roundtrip_incremental_and_gc(s3_store, tmp_path: Path) -> None:  # noqa: ANN001
    upper = tmp_path / "upper"
    make_tree(upper)
    cache = tmp_path / "cache"
    first = snapshot(s3_store, upper, None, cache)
    assert first.changed and first.objects_uploaded >= 3

    dest = tmp_path / "restored"
    res = restore(s3_store, first.snapshot_id, dest, tmp_path / "fresh-cache")
    assert res.bytes_downloaded > 9 << 20
    assert diff_trees(describe(upper), describe(dest)) == []

    again = snapshot(s3_store, upper, first.snapshot_id, cache)
    assert not again.changed and again.bytes_uploaded == 0

    (upper / "d4/f4.bin").write_bytes(b"changed")
    second = snapshot(s3_store, upper, first.snapshot_id, cache)
    assert second.changed and second.bytes_uploaded < 10_000

    # Same host, remote store: the packs come from the host's pack cache.
    res = restore(s3_store, second.snapshot_id, tmp_path / "again", cache)
    assert res.bytes_downloaded < 10_000
    assert diff_trees(describe(upper), describe(tmp_path / "again")) == []

    # S3 reports mtimes in whole seconds: grace 0 still keeps the live snapshot's data.
    out = gc(s3_store, {second.snapshot_id}, grace_seconds=0)
    assert out.snapshots_deleted == 1
    res = restore(s3_store, second.snapshot_id, tmp_path / "after-gc", tmp_path / "fresh2")
    assert diff_trees(describe(upper), describe(tmp_path / "after-gc")) == []

    assert rebuild_index(s3_store, tmp_path / "fresh3") > 0


def test_s3_repository_prefix_isolation(s3_store, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "u").mkdir()
    (tmp_path / "u/f").write_text("x")
    a = snapshot(s3_store, tmp_path / "u", None, tmp_path / "c", SyncOptions(prefix="ta/"))
    snapshot(s3_store, tmp_path / "u", None, tmp_path / "c2", SyncOptions(prefix="tb/"))
    gc(s3_store, set(), grace_seconds=0, prefix="tb/")  # tenant b's data goes, a's stays
    assert [i.key for i in s3_store.list("tb/")] == []
    restore(s3_store, a.snapshot_id, tmp_path / "r", tmp_path / "c3", SyncOptions(prefix="ta/"))
    assert (tmp_path / "r/f").read_text() == "x"
