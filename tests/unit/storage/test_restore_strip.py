"""Restore options for base layers: ``strip_privileges`` and ``check_space`` (and their CLI flags)."""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import pytest

from mags.storage import syncer
from mags.storage.local import LocalObjectStore
from mags.storage.sync import restore, snapshot
from mags.storage.sync.restore import NoSpace

from .helpers import IS_ROOT, ROOT_REASON, assert_same_tree, build_basic_tree, write

SETID = stat.S_ISUID | stat.S_ISGID
# cap_setuid+ep: VFS_CAP_REVISION_2 | effective, permitted = 1 << CAP_SETUID (7)
CAP_SETUID_EP = struct.pack("<IIIII", 0x02000001, 1 << 7, 0, 0, 0)

pytestmark = pytest.mark.skipif(not IS_ROOT, reason=ROOT_REASON)


def privileged_tree(root: Path) -> None:
    """A tree with what a tenant could plant: setuid/setgid programs, file capabilities."""
    build_basic_tree(root)
    write(root / "suidbash", b"\x7fELF pretend", 0o4755)
    write(root / "sgid", b"\x7fELF", 0o2711)
    write(root / "capfile", b"\x7fELF caps", 0o755)
    os.setxattr(root / "capfile", "security.capability", CAP_SETUID_EP)
    os.setxattr(root / "capfile", "user.keep", b"kept")
    (root / "shared").mkdir()
    os.chmod(root / "shared", 0o2775)  # mkdir drops S_ISGID from its mode
    os.setxattr(root / "shared", "trusted.overlay.opaque", b"y")
    os.link(root / "suidbash", root / "suid-hardlink")


def setid_paths(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if st.st_mode & SETID or (not stat.S_ISLNK(st.st_mode) and "security.capability" in os.listxattr(p)):
                out.append(os.path.relpath(p, root))
    return sorted(out)


def test_strip_privileges_drops_setid_bits_and_security_xattrs(
    tmp_path: Path, store: LocalObjectStore, cache: Path, upper: Path
) -> None:
    privileged_tree(upper)
    assert setid_paths(upper) == ["bin", "capfile", "sgid", "shared", "suid-hardlink", "suidbash"]
    sid = snapshot(store, upper, None, cache).snapshot_id
    assert sid is not None

    exact = tmp_path / "exact"
    restore(store, sid, exact, cache)
    assert_same_tree(upper, exact)  # the default keeps everything (a workspace's own upper)
    assert os.getxattr(exact / "capfile", "security.capability") == CAP_SETUID_EP

    layer = tmp_path / "layer" / "upper"
    restore(store, sid, layer, cache, strip_privileges=True, check_space=True)
    assert setid_paths(layer) == []
    assert stat.S_IMODE(os.stat(layer / "suidbash").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(layer / "sgid").st_mode) == 0o711
    assert stat.S_IMODE(os.stat(layer / "shared").st_mode) == 0o775
    assert (layer / "suidbash").read_bytes() == b"\x7fELF pretend"  # content intact
    assert os.stat(layer / "suidbash").st_ino == os.stat(layer / "suid-hardlink").st_ino
    assert os.getxattr(layer / "capfile", "user.keep") == b"kept"  # other xattrs kept
    assert os.getxattr(layer / "shared", "trusted.overlay.opaque") == b"y"  # overlay's too
    assert "security.capability" not in os.listxattr(layer / "capfile")


def test_check_space_refuses_before_writing(
    tmp_path: Path, store: LocalObjectStore, cache: Path, upper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(upper / "big", os.urandom(3 << 20))
    write(upper / "small", b"x")
    sid = snapshot(store, upper, None, cache).snapshot_id
    assert sid is not None
    real = os.statvfs

    class Tiny:
        def __init__(self, st: os.statvfs_result, free: int) -> None:
            self.f_frsize, self.f_bavail = 4096, free // 4096
            self.f_files, self.f_favail = st.f_files, st.f_favail

    dest = tmp_path / "layers" / "upper"
    monkeypatch.setattr(os, "statvfs", lambda p: Tiny(real(p), 2 << 20))
    with pytest.raises(NoSpace) as info:
        restore(store, sid, dest, cache, check_space=True)
    # 3 MiB + a block for "small" + a block for the root dir
    assert info.value.needed == (3 << 20) + 2 * 4096 and info.value.free == 2 << 20
    assert "not enough space to restore the snapshot" in str(info.value)
    assert not dest.exists() and os.listdir(dest.parent) == []  # nothing written
    monkeypatch.setattr(os, "statvfs", lambda p: Tiny(real(p), 4 << 20))
    restore(store, sid, dest, cache, check_space=True)
    assert (dest / "big").stat().st_size == 3 << 20


def test_syncer_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str], upper: Path) -> None:
    privileged_tree(upper)
    common = ["--local-root", str(tmp_path / "objects"), "--cache", str(tmp_path / "cache")]
    assert syncer.main([*common, "snapshot", "--upper", str(upper)]) == 0
    sid = json.loads(capsys.readouterr().out)["snapshot_id"]
    dest = tmp_path / "layer" / "upper"
    code = syncer.main([*common, "restore", "--snapshot", sid, "--dest", str(dest), "--replace",
                        "--strip-privileges", "--check-space"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ok"], out
    assert setid_paths(dest) == []


def test_syncer_reports_no_space(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], upper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(upper / "big", os.urandom(1 << 20))
    common = ["--local-root", str(tmp_path / "objects"), "--cache", str(tmp_path / "cache")]
    assert syncer.main([*common, "snapshot", "--upper", str(upper)]) == 0
    sid = json.loads(capsys.readouterr().out)["snapshot_id"]
    real = os.statvfs

    def tiny(path: str) -> object:
        st = real(path)
        return type("St", (), {"f_frsize": 4096, "f_bavail": 10, "f_files": st.f_files, "f_favail": st.f_favail})()

    monkeypatch.setattr(os, "statvfs", tiny)
    code = syncer.main([*common, "restore", "--snapshot", sid, "--dest", str(tmp_path / "d"), "--check-space"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["type"] == "NoSpace" and out["free_bytes"] == 40960
    assert out["needed_bytes"] == (1 << 20) + 4096
