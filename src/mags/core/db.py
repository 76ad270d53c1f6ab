"""The database handle: run query functions as reads or write transactions.

Every query is a plain function ``fn(conn, *args)`` over a SQLAlchemy Core ``Connection``;
:meth:`Database.read` and :meth:`Database.write` decide where and how it runs:

* **PostgreSQL** (``postgresql+asyncpg://``): the async engine on asyncpg, ``fn`` through
  ``AsyncConnection.run_sync`` (SQLAlchemy's greenlet bridge, no threads).
* **SQLite** (``sqlite+aiosqlite://`` or ``sqlite://``): SQLAlchemy on the stdlib ``sqlite3``
  driver.  Reads run *inline* on the event loop: in WAL mode a reader never waits for a
  writer, and an indexed lookup takes ~20 µs -- whereas aiosqlite hops to its thread for
  every cursor call and costs ~330 µs of CPU per read (measured; see docs/API-NOTES.md).
  A write transaction runs *whole* in one writer thread (one hop per transaction, not per
  statement), as ``BEGIN IMMEDIATE``: a read-then-write transaction takes the write lock up
  front instead of failing with SQLITE_BUSY when it upgrades, and another process holding the
  lock makes the writer thread wait (``busy_timeout``), never the event loop.  Heavy reads
  (``offload=True``) go to a small reader pool instead of blocking the loop.

Every SQLite connection gets WAL, ``synchronous=NORMAL``, ``busy_timeout`` and foreign keys.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mags.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 10_000

P = ParamSpec("P")
T = TypeVar("T")
QueryFn = Callable[Concatenate[Connection, P], T]


class Database:
    """Where query functions run; see the module docstring."""

    dialect: str

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def read(self, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` for reading (no transaction guarantees across statements)."""
        raise NotImplementedError

    async def read_heavy(self, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Like :meth:`read`, for reads that may take milliseconds (never on the event loop)."""
        return await self.read(fn, *args, **kwargs)

    async def write(self, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in one transaction, committed on return, rolled back on error."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class PostgresDatabase(Database):
    """asyncpg through SQLAlchemy's async engine."""

    dialect = "postgresql"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def read(self, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def write(self, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def close(self) -> None:
        await self.engine.dispose()


class SqliteDatabase(Database):
    """The stdlib sqlite3 driver: inline reads, one writer thread, a small heavy-read pool."""

    dialect = "sqlite"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._loop_conn: Connection | None = None
        self._local = threading.local()
        self._conns: list[Connection] = []
        self._conns_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="mags-db-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="mags-db-reader")
        self._closed = False

    def _thread_conn(self, begin: str | None) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect()
            if begin:
                conn = conn.execution_options(mags_begin=begin)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _run_read(self, conn: Connection, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(conn, *args, **kwargs)
        finally:
            conn.rollback()  # ends SQLAlchemy's autobegun (BEGIN-less) transaction; no I/O

    def _run_write(self, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        conn = self._thread_conn("BEGIN IMMEDIATE")
        with conn.begin():
            return fn(conn, *args, **kwargs)

    async def read(self, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError("database is closed")
        if self._loop_conn is None:
            self._loop_conn = self.engine.connect()
            with self._conns_lock:
                self._conns.append(self._loop_conn)
        return self._run_read(self._loop_conn, fn, *args, **kwargs)

    async def read_heavy(self, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._readers, lambda: self._run_read(self._thread_conn(None), fn, *args, **kwargs)
        )

    async def write(self, fn: QueryFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError("database is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: self._run_write(fn, *args, **kwargs))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self.engine.dispose()


def _sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # no implicit BEGIN from sqlite3: reads autocommit, writes send BEGIN IMMEDIATE
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        begin = conn.get_execution_options().get("mags_begin")
        if begin:
            conn.exec_driver_sql(begin)


def create_database(url: str, *, pool_size: int = 8) -> Database:
    """A :class:`Database` for ``sqlite+aiosqlite://`` / ``sqlite://`` or ``postgresql+asyncpg://``."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError as exc:
        raise ConfigError(f"bad database URL {url!r}: {exc}") from exc
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"):
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
            raise ConfigError("the SQLite database must be a file path (sqlite+aiosqlite:///PATH)")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed.set(drivername="sqlite+pysqlite"),
            connect_args={"check_same_thread": False},  # closed from another thread at shutdown
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _sqlite_hooks(engine)
        return SqliteDatabase(engine)
    if driver == "postgresql+asyncpg":
        return PostgresDatabase(create_async_engine(url, pool_size=pool_size, max_overflow=pool_size))
    raise ConfigError(
        f"unsupported database URL {url!r}: use sqlite+aiosqlite:///PATH or postgresql+asyncpg://..."
    )
