"""DiskBudget: sparse images reserve their full size; free space is the host's minus what they may still write."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from mags.runtime.disk import Disk
from mags.errors import NotEnoughDiskSpace
from mags.runtime.diskspace import GB, DiskBudget, host_budget

MB = 1024**2


class FakeFs:
    """A host filesystem with ``free`` bytes (statvfs only; image files are real, sparse)."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, path: Path) -> SimpleNamespace:
        return SimpleNamespace(f_bavail=self.free // 4096, f_frsize=4096)


def sparse(path: Path, size: int, written: int = 0) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        if written:
            f.write(os.urandom(written))
            f.flush()
            os.fsync(f.fileno())
    return path


def test_new_images_reserve_their_full_size(tmp_path: Path) -> None:
    fs = FakeFs(30 * GB)
    budget = DiskBudget(tmp_path, margin_bytes=5 * GB, statvfs=fs)
    assert budget.available_bytes() == 25 * GB
    budget.reserve(tmp_path / "a.img", 20 * GB)  # not created yet: counts whole
    assert budget.available_bytes() == 5 * GB
    with pytest.raises(NotEnoughDiskSpace) as info:
        budget.reserve(tmp_path / "b.img", 6 * GB, "the workspace disk")
    assert str(info.value) == (
        "not enough disk space on this host: 5 GB free, 6 GB asked for the workspace disk"
    )
    assert info.value.status_code == 507
    budget.reserve(tmp_path / "b.img", 5 * GB)
    assert budget.available_bytes() == 0
    budget.forget(tmp_path / "a.img")
    assert budget.available_bytes() == 20 * GB


def test_what_an_image_wrote_is_already_out_of_free_space(tmp_path: Path) -> None:
    fs = FakeFs(10 * GB)
    budget = DiskBudget(tmp_path, margin_bytes=0, statvfs=fs)
    img = sparse(tmp_path / "a.img", 4 * GB)
    budget.reserve(img, 4 * GB)
    assert budget.available_bytes() == 6 * GB
    with open(img, "r+b") as f:  # the image writes 8 MiB: the host's free space drops by as much
        f.write(os.urandom(8 * MB))
        f.flush()
        os.fsync(f.fileno())
    fs.free -= os.stat(img).st_blocks * 512
    assert budget.available_bytes() == 6 * GB  # not counted twice


def test_resize_counts_the_difference_and_a_shrink_always_fits(tmp_path: Path) -> None:
    fs = FakeFs(10 * GB)
    budget = DiskBudget(tmp_path, margin_bytes=1 * GB, statvfs=fs)
    img = tmp_path / "ws.img"
    budget.reserve(img, 5 * GB)
    with pytest.raises(NotEnoughDiskSpace) as info:
        budget.reserve(img, 10 * GB, "the workspace disk")
    assert "4 GB free, 5 GB asked more (to grow it to 10 GB) for the workspace disk" in str(info.value)
    assert budget.images() == {img: 5 * GB}  # unchanged by the refusal
    budget.reserve(img, 9 * GB)
    assert budget.available_bytes() == 0
    fs.free = 0  # the host filled up meanwhile: shrinking still works
    budget.reserve(img, 2 * GB)
    assert budget.images() == {img: 2 * GB}


def test_track_counts_existing_images_unchecked(tmp_path: Path) -> None:
    budget = DiskBudget(tmp_path, margin_bytes=0, statvfs=FakeFs(1 * GB))
    img = sparse(tmp_path / "old.img", 3 * GB)
    budget.track(img)  # bigger than the budget: found at start, counted, never refused
    budget.track(tmp_path / "missing.img")
    assert budget.images() == {img: 3 * GB}
    assert budget.available_bytes() < 0
    with pytest.raises(NotEnoughDiskSpace, match="0 GB free, 1 GB asked"):
        budget.reserve(tmp_path / "new.img", 1 * GB)


def test_host_budget_is_shared_per_data_dir(tmp_path: Path) -> None:
    a = host_budget(tmp_path / "data", 5)
    assert host_budget(tmp_path / "data", 5) is a
    assert host_budget(tmp_path / "data" / ".." / "data", 7) is a and a.margin_bytes == 7 * GB
    assert host_budget(tmp_path / "other", 5) is not a


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mkfs.ext4") is None, reason="needs root and mkfs.ext4")
def test_disks_reserve_on_create_and_resize_and_give_back_on_destroy(tmp_path: Path) -> None:
    fs = FakeFs(4 * GB)
    budget = DiskBudget(tmp_path, margin_bytes=1 * GB, statvfs=fs)
    disk = Disk(tmp_path / "ws", budget, "the workspace disk")
    with pytest.raises(NotEnoughDiskSpace, match="3 GB free, 4 GB asked for the workspace disk"):
        disk.create(4)
    assert not disk.exists() and budget.images() == {}
    disk.create(2)
    assert budget.images() == {disk.image: 2 * GB}
    assert oct(os.stat(disk.image).st_mode & 0o777) == "0o600"
    with pytest.raises(NotEnoughDiskSpace):
        disk.resize(4)  # 2 GB more asked, 1 GB (minus what mkfs wrote) left
    assert disk.size_bytes == 2 * GB and budget.images() == {disk.image: 2 * GB}
    disk.resize(1)
    assert disk.size_bytes == 1 * GB and budget.images() == {disk.image: 1 * GB}
    disk.mount()
    try:
        opts = next(line.split()[3] for line in Path("/proc/self/mounts").read_text().splitlines()
                    if line.split()[1] == str(disk.mnt))  # fmt: skip
        assert {"nosuid", "nodev"} <= set(opts.split(","))
    finally:
        disk.destroy()
    assert budget.images() == {} and not disk.dir.exists()
    losetup = subprocess.run(["losetup", "-j", str(disk.image)], capture_output=True, text=True, check=False)
    assert losetup.stdout == ""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mkfs.ext4") is None, reason="needs root and mkfs.ext4")
def test_scratch_disks_are_sparse_clones_of_a_template(tmp_path: Path) -> None:
    budget = DiskBudget(tmp_path, margin_bytes=0, statvfs=FakeFs(100 * GB))
    disks = [Disk(tmp_path / f"s{i}", budget, "the sandbox's scratch disk") for i in range(2)]
    for disk in disks:
        disk.create(2, journal=False, template_dir=tmp_path / "templates")
    templates = list((tmp_path / "templates").iterdir())
    assert [t.name for t in templates] == ["ext4-2g-nojournal.img"]  # made once, by mkfs
    try:
        for i, disk in enumerate(disks):
            assert disk.size_bytes == 2 * GB and os.stat(disk.image).st_blocks * 512 < 16 * MB  # holes kept
            disk.mount()
            (disk.upper / "f").write_text(f"disk {i}")
        assert [(d.upper / "f").read_text() for d in disks] == ["disk 0", "disk 1"]  # independent
        st = os.statvfs(disks[0].mnt)
        assert 1.8 * GB < st.f_blocks * st.f_frsize <= 2 * GB
    finally:
        for disk in disks:
            disk.destroy()
    assert budget.images() == {}
    assert os.stat(templates[0]).st_blocks * 512 < 16 * MB


def test_what_fits_now_and_what_fits_once_others_end(tmp_path: Path) -> None:
    free = 10 * GB

    def statvfs(_: Path) -> os.statvfs_result:
        return os.statvfs_result((4096, 4096, free // 4096, free // 4096, free // 4096, 0, 0, 0, 0, 255))

    budget = DiskBudget(tmp_path, 1 * GB, statvfs=statvfs)
    budget.reserve(tmp_path / "a.img", 6 * GB)  # sparse: nothing written yet
    assert not budget.fits_now(4 * GB)  # 10 free - 6 promised - 1 margin = 3
    assert budget.could_fit_later(4 * GB)  # once a.img is gone
    assert not budget.could_fit_later(10 * GB)  # never: past free space minus the margin
    budget.forget(tmp_path / "a.img")
    assert budget.fits_now(4 * GB)
