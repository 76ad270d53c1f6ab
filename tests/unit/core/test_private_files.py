"""The server's files are root-only: its umask, and the tightening of what older versions left."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mags.core.bootstrap import make_private, secure_data_dir, sqlite_files, use_private_umask
from mags.storage.local import LocalObjectStore


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run with the usual umask and restore the test process's own afterwards."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_private_umask_makes_new_files_0600_and_dirs_0700(tmp_path: Path, umask_022: None) -> None:
    assert use_private_umask() == 0o022
    (tmp_path / "f").write_text("secret")
    (tmp_path / "d").mkdir()
    fd = os.open(tmp_path / "g", os.O_CREAT | os.O_WRONLY, 0o666)  # as SQLite creates its files
    os.close(fd)
    assert (mode(tmp_path / "f"), mode(tmp_path / "d"), mode(tmp_path / "g")) == (0o600, 0o700, 0o600)


def test_make_private_drops_group_and_other_bits_only(tmp_path: Path) -> None:
    f, d, x = tmp_path / "f", tmp_path / "d", tmp_path / "x"
    f.write_text("")
    d.mkdir()
    x.write_text("")
    os.chmod(f, 0o664)
    os.chmod(d, 0o2755)
    os.chmod(x, 0o4751)
    assert make_private(f) and make_private(d) and make_private(x)
    assert (mode(f), mode(d), mode(x)) == (0o600, 0o700, 0o700)
    assert not make_private(f)  # already private: nothing to do
    assert not make_private(tmp_path / "missing")
    link = tmp_path / "link"
    link.symlink_to("/etc/hostname")
    assert not make_private(link) and mode(Path("/etc/hostname")) & 0o044  # never follows a link


def test_secure_data_dir_tightens_the_dir_and_its_top_level_only(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    for d in (data / "objects" / "ws", store):
        d.mkdir(parents=True)
    (data / "mags.db").write_text("db")
    (data / "server.log").write_text("log")
    (data / "objects" / "ws" / "pack").write_text("object")
    for p in (data, data / "objects", data / "objects" / "ws", store):
        os.chmod(p, 0o755)
    for p in (data / "mags.db", data / "server.log", data / "objects" / "ws" / "pack"):
        os.chmod(p, 0o644)
    changed = secure_data_dir(data, [store, tmp_path / "elsewhere.db"])
    assert set(changed) == {data, data / "mags.db", data / "server.log", data / "objects", store}
    assert mode(data) == mode(data / "objects") == mode(store) == 0o700
    assert mode(data / "mags.db") == mode(data / "server.log") == 0o600
    # not walked (millions of objects): the 0700 above it is what keeps other users out
    assert mode(data / "objects" / "ws" / "pack") == 0o644
    assert secure_data_dir(data) == []  # a second start changes nothing


def test_secure_data_dir_creates_a_private_dir(tmp_path: Path, umask_022: None) -> None:
    secure_data_dir(tmp_path / "new" / "data")
    assert mode(tmp_path / "new" / "data") == 0o700


def test_sqlite_files() -> None:
    assert sqlite_files("sqlite+aiosqlite:////var/lib/mags/mags.db") == [
        Path("/var/lib/mags/mags.db"),
        Path("/var/lib/mags/mags.db-wal"),
        Path("/var/lib/mags/mags.db-shm"),
        Path("/var/lib/mags/mags.db-journal"),
    ]
    assert sqlite_files("postgresql+asyncpg://u:p@h/db") == []
    assert sqlite_files("sqlite+aiosqlite:///:memory:") == []


def test_local_object_store_is_private_whatever_the_umask(tmp_path: Path, umask_022: None) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root, fsync=False)
    store.put("ws/u1-x/packs/ab/abcdef", b"tenant bytes")
    store.put_file("ws/u1-x/snapshots/s1", __file__)
    assert store.put_if_absent("ws/u1-y/snapshots/s2", b"root")
    for path in [root, *root.rglob("*")]:
        assert mode(path) & 0o077 == 0, path
    # a store an older version left readable: its root is tightened when opened
    os.chmod(root, 0o755)
    os.chmod(root / ".tmp", 0o755)
    LocalObjectStore(root, fsync=False)
    assert mode(root) == mode(root / ".tmp") == 0o700
