"""Workspace heads: which snapshot is current, moved only by compare-and-swap.

A sync never overwrites anything: it writes new immutable objects and returns a snapshot id;
the head moves with one CAS on the workspace's generation, the database equivalent of::

    UPDATE workspaces SET head = :new, generation = generation + 1
     WHERE id = :id AND generation = :old

so a crash at any point leaves the old head (and everything it references) whole, and two
writers cannot both win.  :class:`MemoryHeadStore` and :class:`SQLiteHeadStore` implement the
protocol for tests, the syncer's ``--head-db`` and the embedded default; the control plane's
database table implements the same two calls.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from mags.errors import CommitConflict, StorageError


@runtime_checkable
class HeadStore(Protocol):
    """Where workspace heads live."""

    def get_head(self, workspace: str) -> tuple[str | None, int]:
        """``(snapshot_id, generation)``; ``(None, 0)`` for a workspace never committed."""

    def compare_and_swap(self, workspace: str, expected_generation: int, new_snapshot_id: str) -> bool:
        """Set the head if the generation is still ``expected_generation``; True if it did."""


def commit(heads: HeadStore, workspace: str, expected_generation: int, snapshot_id: str) -> int:
    """CAS the head to ``snapshot_id``; return the new generation or raise CommitConflict."""
    if not heads.compare_and_swap(workspace, expected_generation, snapshot_id):
        current = heads.get_head(workspace)
        raise CommitConflict(
            f"workspace {workspace} moved to generation {current[1]} (expected {expected_generation})"
        )
    return expected_generation + 1


class MemoryHeadStore:
    """Heads in a dict (tests, single process)."""

    def __init__(self) -> None:
        self._heads: dict[str, tuple[str | None, int]] = {}
        self._lock = threading.Lock()

    def get_head(self, workspace: str) -> tuple[str | None, int]:
        """Current ``(snapshot_id, generation)``."""
        with self._lock:
            return self._heads.get(workspace, (None, 0))

    def compare_and_swap(self, workspace: str, expected_generation: int, new_snapshot_id: str) -> bool:
        """Move the head if the generation matches."""
        with self._lock:
            if self._heads.get(workspace, (None, 0))[1] != expected_generation:
                return False
            self._heads[workspace] = (new_snapshot_id, expected_generation + 1)
            return True

    def live_snapshot_ids(self) -> set[str]:
        """Every head (the live set for ``gc``)."""
        with self._lock:
            return {h for h, _ in self._heads.values() if h is not None}

    def delete(self, workspace: str) -> None:
        """Forget a workspace; its data goes at the next ``gc``."""
        with self._lock:
            self._heads.pop(workspace, None)


class SQLiteHeadStore:
    """Heads in a SQLite table (safe across processes: each CAS is one UPDATE/INSERT)."""

    def __init__(self, path: str | Path) -> None:
        deadline = time.monotonic() + 30
        while True:  # a concurrent first open can fail "locked" without waiting: retry
            try:
                self._db = sqlite3.connect(
                    str(path), timeout=30, isolation_level=None, check_same_thread=False
                )
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS workspaces (id TEXT PRIMARY KEY, head TEXT, "
                    "generation INTEGER NOT NULL)"
                )
                break
            except sqlite3.OperationalError as exc:
                if getattr(self, "_db", None) is not None:
                    self._db.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StorageError(f"cannot open head store {path}: {exc}") from exc
                time.sleep(0.02)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open head store {path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def get_head(self, workspace: str) -> tuple[str | None, int]:
        """Current ``(snapshot_id, generation)``."""
        with self._lock:
            row = self._db.execute(
                "SELECT head, generation FROM workspaces WHERE id = ?", (workspace,)
            ).fetchone()
        return (row[0], int(row[1])) if row else (None, 0)

    def compare_and_swap(self, workspace: str, expected_generation: int, new_snapshot_id: str) -> bool:
        """Move the head if the generation matches (a missing row is generation 0)."""
        with self._lock:
            try:
                if expected_generation == 0:
                    cur = self._db.execute(
                        "INSERT INTO workspaces (id, head, generation) VALUES (?, ?, 1) ON CONFLICT(id) DO NOTHING",
                        (workspace, new_snapshot_id),
                    )
                else:
                    cur = self._db.execute(
                        "UPDATE workspaces SET head = ?, generation = generation + 1 WHERE id = ? AND generation = ?",
                        (new_snapshot_id, workspace, expected_generation),
                    )
            except sqlite3.Error as exc:
                raise StorageError(f"head store error: {exc}") from exc
            return cur.rowcount == 1

    def live_snapshot_ids(self) -> set[str]:
        """Every head (the live set for ``gc``)."""
        with self._lock:
            rows = self._db.execute("SELECT head FROM workspaces WHERE head IS NOT NULL").fetchall()
        return {r[0] for r in rows}

    def delete(self, workspace: str) -> None:
        """Forget a workspace; its data goes at the next ``gc``."""
        with self._lock:
            self._db.execute("DELETE FROM workspaces WHERE id = ?", (workspace,))
