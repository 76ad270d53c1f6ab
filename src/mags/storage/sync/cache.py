"""The host-local sync cache: dedup index, decoded manifests, per-upper stat state, packs.

Everything here is disposable — it only saves work, and a fresh host starts with none of it:

* ``chunks``: blob hash -> where it is stored (pack, offset, lengths) and when that pack was
  written, so unchanged data is never uploaded again (see ``hashing`` for when an entry may be
  trusted);
* ``trees`` / ``roots``: manifests and snapshot roots already fetched (immutable, so they never
  go stale);
* ``states``: for an upper dir, the ``(inode, ctime, size, mtime)`` of every path as of a
  snapshot, which lets the next sync trust unchanged files without reading them (git's index
  trick); the states of the newest snapshot and of its parent are kept, so a commit that lost
  its compare-and-swap costs no rehash;
* ``packs/``: whole packs downloaded from (or uploaded to) a remote store, for restores on the
  same host, bounded by a byte budget.

One SQLite file in WAL mode, shared by concurrent syncer processes; a SIGKILL mid-write rolls
back the open transaction.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import zstandard

from mags.errors import StorageError
from mags.storage.sync import format as fmt

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (hash TEXT PRIMARY KEY, pack TEXT NOT NULL, off INTEGER NOT NULL,
    clen INTEGER NOT NULL, ulen INTEGER NOT NULL, ptime REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trees (hash TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roots (id TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS states (upper TEXT NOT NULL, snap TEXT NOT NULL, saved REAL NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (upper, snap)) WITHOUT ROWID;
"""
DEFAULT_PACK_CACHE_BYTES = 2 << 30


_SHARED_MAX = 4
_shared: OrderedDict[str, LocalCache] = OrderedDict()
_shared_lock = threading.Lock()


class LocalCache:
    """The sync cache under one directory (created if missing); thread-safe.

    ``with LocalCache.shared(dir) as cache:`` reuses one open database per directory within a
    process (opening and checkpointing SQLite costs a few ms per sync otherwise).
    """

    def __init__(self, cache_dir: str | Path, *, pack_cache_bytes: int = DEFAULT_PACK_CACHE_BYTES) -> None:
        self.dir = Path(cache_dir)
        self._users = 0
        self._evicted = False
        self._pooled = False
        self.pack_dir = self.dir / "packs"
        self.pack_cache_bytes = pack_cache_bytes
        self._lock = threading.Lock()
        self._zc = zstandard.ZstdCompressor(level=1)
        self._zd = zstandard.ZstdDecompressor()
        try:
            self.pack_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.dir / "index.sqlite", timeout=30, check_same_thread=False, isolation_level=None
            )
            st = os.stat(self.dir / "index.sqlite")
            self._file_id = (st.st_dev, st.st_ino)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._init_schema()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open sync cache {self.dir}: {exc}") from exc

    def _init_schema(self) -> None:
        """Create the tables once per file; concurrent first opens retry (the WAL switch and
        schema changes can fail with "locked" without waiting on the busy timeout)."""
        deadline = time.monotonic() + 30
        while self._db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")  # persistent: set once per file
                self._db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @classmethod
    def shared(cls, cache_dir: str | Path) -> LocalCache:
        """The process-wide instance for ``cache_dir`` (use it as a context manager)."""
        key = os.path.abspath(cache_dir)
        with _shared_lock:
            inst = _shared.get(key)
            if inst is not None and inst._same_file():
                _shared.move_to_end(key)
            else:
                if inst is not None:
                    inst._retire()
                inst = _shared[key] = cls(cache_dir)
                while len(_shared) > _SHARED_MAX:
                    _shared.popitem(last=False)[1]._retire()
            inst._users += 1
            inst._pooled = True
            return inst

    def _same_file(self) -> bool:
        try:
            st = os.stat(self.dir / "index.sqlite")
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._file_id

    def _retire(self) -> None:
        self._evicted = True
        if self._users == 0:
            self.close()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._pooled:
            self.close()
            return
        with _shared_lock:
            self._users -= 1
            if self._evicted and self._users == 0:
                self.close()

    def _run(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"sync cache error: {exc}") from exc

    def _run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(f"sync cache error: {exc}") from exc

    # ------------------------------------------------------------------ chunk index
    def lookup_chunk(self, digest: str) -> tuple[str, int, int, int, float] | None:
        """Where a blob is stored, as ``(pack, offset, clen, ulen, pack_time)``, or None."""
        rows = self._run("SELECT pack, off, clen, ulen, ptime FROM chunks WHERE hash = ?", (digest,))
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def add_chunks(self, rows: list[tuple[str, str, int, int, int, float]]) -> None:
        """Record ``(hash, pack, offset, clen, ulen, pack_time)`` rows (newest location wins)."""
        self._run_many("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?)", rows)

    def forget_packs(self, pack_ids: Iterable[str]) -> None:
        """Drop index rows and cached copies of packs that no longer exist."""
        ids = [(p,) for p in pack_ids]
        self._run_many("DELETE FROM chunks WHERE pack = ?", ids)
        for (pack_id,) in ids:
            (self.pack_dir / pack_id).unlink(missing_ok=True)

    def prune_chunks(self, older_than: float) -> None:
        """Drop index rows for packs written before ``older_than`` (they may be collected)."""
        self._run("DELETE FROM chunks WHERE ptime < ?", (older_than,))

    # ------------------------------------------------------------------ manifests
    def get_tree(self, digest: str) -> bytes | None:
        """A cached tree manifest's JSON bytes (verified), or None."""
        rows = self._run("SELECT data FROM trees WHERE hash = ?", (digest,))
        if not rows:
            return None
        data = self._zd.decompress(rows[0][0])
        if fmt.hash_hex(data) != digest:
            self._run("DELETE FROM trees WHERE hash = ?", (digest,))
            return None
        return data

    def put_trees(self, items: list[tuple[str, bytes]]) -> None:
        """Cache tree manifests given as ``(hash, JSON bytes)``."""
        self._run_many(
            "INSERT OR IGNORE INTO trees VALUES (?, ?)", [(h, self._zc.compress(d)) for h, d in items]
        )

    def get_root(self, snapshot_id: str) -> bytes | None:
        """A cached snapshot root's bytes, or None."""
        rows = self._run("SELECT data FROM roots WHERE id = ?", (snapshot_id,))
        return bytes(rows[0][0]) if rows else None

    def put_root(self, snapshot_id: str, data: bytes) -> None:
        """Cache a snapshot root."""
        self._run_many("INSERT OR IGNORE INTO roots VALUES (?, ?)", [(snapshot_id, data)])

    # ------------------------------------------------------------------ per-upper state
    def load_state(self, upper: str, snapshot_id: str) -> dict[str, list[Any]] | None:
        """The stat state recorded for ``upper`` as of ``snapshot_id``, or None."""
        rows = self._run("SELECT data FROM states WHERE upper = ? AND snap = ?", (upper, snapshot_id))
        if not rows:
            return None
        try:
            state = marshal.loads(rows[0][0])
        except (ValueError, EOFError, TypeError):
            return None
        return state if isinstance(state, dict) else None

    def save_state(
        self, upper: str, snapshot_id: str, state: dict[str, list[Any]], keep: str | None = None
    ) -> None:
        """Record a state; drop the older ones of ``upper`` except ``keep`` (the parent's)."""
        data = marshal.dumps(state)  # 5x faster than JSON both ways; our own data only
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT OR REPLACE INTO states VALUES (?, ?, ?, ?)",
                    (upper, snapshot_id, time.time(), data),
                )
                self._db.execute(
                    "DELETE FROM states WHERE upper = ? AND snap NOT IN (?, ?)",
                    (upper, snapshot_id, keep or ""),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(f"sync cache error: {exc}") from exc

    def drop_states(self, upper: str) -> None:
        """Forget every state of ``upper`` (its directory was removed or replaced)."""
        self._run("DELETE FROM states WHERE upper = ?", (upper,))

    # ------------------------------------------------------------------ pack cache
    def cached_pack(self, pack_id: str) -> bytes | None:
        """A pack's bytes from the local pack cache, or None."""
        path = self.pack_dir / pack_id
        try:
            with open(path, "rb") as f:
                data = f.read()
            os.utime(path)  # recently used: evicted last
            return data
        except FileNotFoundError:
            return None
        except OSError:
            return None

    def store_pack(self, pack_id: str, data: bytes) -> None:
        """Keep a copy of a pack (no fsync: losing it only costs a download)."""
        if self.pack_cache_bytes <= 0:
            return
        tmp = self.pack_dir / f".{pack_id}.{os.urandom(4).hex()}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.pack_dir / pack_id)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk must not fail a sync

    def evict_packs(self) -> None:
        """Delete the least recently used cached packs until under the byte budget."""
        try:
            entries = []
            with os.scandir(self.pack_dir) as it:
                for e in it:
                    st = e.stat()
                    entries.append((st.st_mtime, st.st_size, e.path))
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.pack_cache_bytes:
                break
            try:
                os.unlink(path)
            except OSError:
                continue
            total -= size
