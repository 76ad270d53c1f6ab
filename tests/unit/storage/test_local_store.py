"""LocalObjectStore specifics: atomic writes, safe key mapping, temp-file cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mags.config import load_settings
from mags.errors import ConfigError, StorageError
from mags.storage.local import LocalObjectStore
from mags.storage.objectstore import ObjectInfo, create_object_store, validate_key


def test_keys_map_inside_root(store: LocalObjectStore) -> None:
    store.put("packs/ab/abcdef", b"x")
    assert (store.root / "packs/ab/abcdef").read_bytes() == b"x"
    for bad in ["../escape", "a/../../b", "/etc/passwd", ".tmp/x", "a\\b", "a\x00b"]:
        with pytest.raises(StorageError):
            store.put(bad, b"x")
    assert not (store.root.parent / "escape").exists()


def test_validate_key_accepts_normal_keys() -> None:
    assert validate_key("snapshots/0123abcd") == "snapshots/0123abcd"
    assert validate_key("tenant-1/packs/ab/x.y_z") == "tenant-1/packs/ab/x.y_z"


def test_failed_write_leaves_nothing(store: LocalObjectStore, tmp_path: Path) -> None:
    store.put("k", b"old")

    def broken():
        yield b"partial data"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        store._publish(store._write_tmp(broken()), store.path_of("k"), exclusive=False)
    assert store.get("k") == b"old"
    assert list((store.root / ".tmp").iterdir()) == []


def test_killed_writer_never_exposes_partial_object(store: LocalObjectStore) -> None:
    """SIGKILL a writer mid-object: the key is absent or whole, never torn."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from mags.storage.local import LocalObjectStore
        s = LocalObjectStore({str(store.root)!r})
        def chunks():
            yield b"a" * 100000
            os.kill(os.getpid(), signal.SIGKILL)
        s._publish(s._write_tmp(chunks()), s.path_of("victim"), exclusive=False)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -9
    assert not store.exists("victim")
    assert [i.key for i in store.list("")] == []  # the temp file is not an object
    leftovers = list((store.root / ".tmp").iterdir())
    assert len(leftovers) == 1
    os.utime(leftovers[0], (time.time() - 7200, time.time() - 7200))
    assert store.cleanup_tmp(3600) == 1


def test_list_reports_size_and_mtime(store: LocalObjectStore) -> None:
    store.put("a/b", b"12345")
    (info,) = list(store.list("a/"))
    assert isinstance(info, ObjectInfo)
    assert info.key == "a/b" and info.size == 5 and abs(info.mtime - time.time()) < 60


def test_factory(tmp_path: Path) -> None:
    local = create_object_store(load_settings(data_dir=str(tmp_path)))
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "objects"
    with pytest.raises(ConfigError):
        create_object_store(load_settings(data_dir=str(tmp_path), object_store="s3"))


def test_unwritable_root_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a dir")
    with pytest.raises(StorageError):
        LocalObjectStore(tmp_path / "file" / "objects")
