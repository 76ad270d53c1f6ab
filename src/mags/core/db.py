"""The database handle: an async engine plus the transaction discipline we rely on.

SQLite (aiosqlite) and PostgreSQL (asyncpg) only.  On SQLite:

* WAL, ``synchronous=NORMAL``, ``busy_timeout`` and foreign keys on every connection;
* sqlite3's own implicit BEGIN is disabled and we emit ours, so that write transactions are
  ``BEGIN IMMEDIATE``: a read-then-write transaction takes the write lock up front instead of
  failing with SQLITE_BUSY when it tries to upgrade;
* writers of *this* process queue on an asyncio lock rather than on SQLite's busy handler,
  which sleeps in steps of milliseconds; other processes still serialise through the file
  lock and ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mags.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 10_000


class Database:
    """An async engine with ``read()`` / ``write()`` transaction helpers."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction, committed on success, rolled back on error."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.connect() as conn:
            await conn.execution_options(mags_begin="BEGIN IMMEDIATE")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a consistent snapshot for multi-statement reads)."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_hooks(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # we emit BEGIN ourselves (see module docstring)
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("mags_begin", "BEGIN"))


def create_database(url: str, *, pool_size: int = 8) -> Database:
    """Build a :class:`Database` for a ``sqlite+aiosqlite`` or ``postgresql+asyncpg`` URL."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError as exc:
        raise ConfigError(f"bad database URL {url!r}: {exc}") from exc
    driver = parsed.drivername
    if driver == "sqlite+aiosqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=8)
        _sqlite_hooks(engine)
    elif driver == "postgresql+asyncpg":
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=8, pool_pre_ping=False)
    else:
        raise ConfigError(
            f"unsupported database URL {url!r}: use sqlite+aiosqlite:///PATH or postgresql+asyncpg://..."
        )
    return Database(engine)
