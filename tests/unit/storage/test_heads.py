"""Head stores: compare-and-swap semantics, in memory and in SQLite across connections."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mags.errors import CommitConflict
from mags.storage.sync import HeadStore, MemoryHeadStore, SQLiteHeadStore, commit


@pytest.fixture(params=["memory", "sqlite"])
def heads(request: pytest.FixtureRequest, tmp_path: Path) -> HeadStore:
    return MemoryHeadStore() if request.param == "memory" else SQLiteHeadStore(tmp_path / "heads.db")


def test_cas_moves_head_once(heads: HeadStore) -> None:
    assert isinstance(heads, HeadStore)
    assert heads.get_head("w") == (None, 0)
    assert heads.compare_and_swap("w", 0, "s1")
    assert not heads.compare_and_swap("w", 0, "s-other")
    assert heads.get_head("w") == ("s1", 1)
    assert commit(heads, "w", 1, "s2") == 2
    with pytest.raises(CommitConflict):
        commit(heads, "w", 1, "s3")
    assert heads.get_head("w") == ("s2", 2)
    assert heads.live_snapshot_ids() == {"s2"}  # type: ignore[attr-defined]
    heads.delete("w")  # type: ignore[attr-defined]
    assert heads.get_head("w") == (None, 0)


def test_concurrent_writers_one_wins(heads: HeadStore) -> None:
    heads.compare_and_swap("w", 0, "base")
    wins = []

    def writer(i: int) -> None:
        wins.append(heads.compare_and_swap("w", 1, f"s{i}"))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    assert heads.get_head("w")[1] == 2


def test_sqlite_heads_shared_between_connections(tmp_path: Path) -> None:
    a, b = SQLiteHeadStore(tmp_path / "h.db"), SQLiteHeadStore(tmp_path / "h.db")
    assert a.compare_and_swap("w", 0, "s1")
    assert not b.compare_and_swap("w", 0, "s2")
    assert b.get_head("w") == ("s1", 1)
    a.close()
    b.close()
