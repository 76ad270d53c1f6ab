"""The ObjectStore contract, run against every backend: local dir and a real S3 (SeaweedFS)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mags.errors import StorageError
from mags.storage.local import LocalObjectStore
from mags.storage.objectstore import ObjectMissing, ObjectStore


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return request.getfixturevalue("s3_store")


def test_put_get_exists_delete(store: ObjectStore) -> None:
    store.put("a/b/c.bin", b"hello")
    assert store.get("a/b/c.bin") == b"hello"
    assert store.exists("a/b/c.bin")
    assert not store.exists("a/b/missing")
    store.put("a/b/c.bin", b"replaced")
    assert store.get("a/b/c.bin") == b"replaced"
    store.delete("a/b/c.bin")
    assert not store.exists("a/b/c.bin")
    store.delete("a/b/c.bin")  # idempotent
    with pytest.raises(ObjectMissing):
        store.get("a/b/c.bin")


def test_empty_object_and_ranges(store: ObjectStore) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    store.put("r", bytes(range(100)))
    assert store.get_range("r", 10, 5) == bytes(range(10, 15))
    assert store.get_range("r", 95, 50) == bytes(range(95, 100))
    assert store.get_range("r", -4, 4) == bytes(range(96, 100))
    with pytest.raises(ObjectMissing):
        store.get_range("nope", 0, 1)


def test_list_by_prefix(store: ObjectStore) -> None:
    for key in ["packs/aa/1", "packs/ab/2", "packs/ba/3", "snapshots/x", "other"]:
        store.put(key, key.encode())
    assert sorted(i.key for i in store.list("packs/")) == ["packs/aa/1", "packs/ab/2", "packs/ba/3"]
    assert sorted(i.key for i in store.list("packs/a")) == ["packs/aa/1", "packs/ab/2"]
    infos = {i.key: i for i in store.list("")}
    assert set(infos) == {"packs/aa/1", "packs/ab/2", "packs/ba/3", "snapshots/x", "other"}
    assert infos["snapshots/x"].size == len(b"snapshots/x")
    assert infos["other"].mtime > 0
    assert list(store.list("nothing-here/")) == []


def test_delete_many(store: ObjectStore) -> None:
    keys = [f"d/{i}" for i in range(25)]
    for key in keys:
        store.put(key, b"x")
    store.delete_many(keys[:20] + ["d/not-there"])
    assert sorted(i.key for i in store.list("d/")) == sorted(keys[20:])


def test_put_if_absent(store: ObjectStore) -> None:
    assert store.put_if_absent("once", b"first")
    assert not store.put_if_absent("once", b"second")
    assert store.get("once") == b"first"


def test_put_if_absent_races_have_one_winner(store: ObjectStore) -> None:
    wins: list[bool] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        ok = store.put_if_absent("race", str(i).encode())
        with lock:
            wins.append(ok)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_files_in_and_out(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    store.put_file("f/big", src)
    dest = tmp_path / "dest.bin"
    store.get_to_file("f/big", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    with pytest.raises(ObjectMissing):
        store.get_to_file("f/missing", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "../x", "a/./b", "sp ace", "a/b/"])
def test_bad_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(StorageError):
        store.put(key, b"x")
