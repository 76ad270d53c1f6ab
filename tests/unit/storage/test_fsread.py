"""Chunking: windowed reads cut exactly where one pass over the whole file would; holes skipped."""

from __future__ import annotations

import os
from pathlib import Path

from fastcdc.fastcdc_cy import fastcdc_cy

from mags.storage.sync import fsread

from .helpers import random_bytes


def chunks_of(path: Path) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(off, len(data)) for off, data in fsread.iter_chunks(fd, os.fstat(fd))]
    finally:
        os.close(fd)


def test_windows_do_not_move_cut_points(tmp_path: Path) -> None:
    data = random_bytes(2 * fsread.WINDOW + 12345, 11)
    (tmp_path / "f").write_bytes(data)
    one_pass = [
        (c.offset, c.length) for c in fastcdc_cy(data, fsread.CDC_MIN, fsread.CDC_AVG, fsread.CDC_MAX)
    ]
    assert chunks_of(tmp_path / "f") == one_pass
    assert sum(length for _, length in one_pass) == len(data)


def test_small_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "s").write_bytes(b"abc")
    assert chunks_of(tmp_path / "e") == []
    assert chunks_of(tmp_path / "s") == [(0, 3)]


def test_huge_sparse_file_reads_only_its_data(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.seek(5 << 30)  # 5 GiB apparent
        f.write(b"tail")
        f.seek(1 << 30)
        f.write(random_bytes(100_000, 12))
    cuts = chunks_of(path)
    assert sum(length for _, length in cuts) < 1 << 20
    assert cuts[0][0] >= (1 << 30) - (1 << 20)  # starts near the data, not at 0


def test_kinds(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    os.symlink("x", tmp_path / "l")
    assert fsread.kind_of(os.lstat(tmp_path / "p")) == fsread.FIFO
    assert fsread.kind_of(os.lstat(tmp_path / "l")) == fsread.SYMLINK
    assert fsread.kind_of(os.lstat(tmp_path)) == fsread.DIR
