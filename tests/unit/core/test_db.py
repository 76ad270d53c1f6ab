"""The Database handle: SQLite writes never block the event loop; errors roll back."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from mags.core.db import create_database
from mags.core.migrate import run_migrations
from mags.core.schema import users
from mags.errors import ConfigError


async def test_write_waits_for_another_process_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    db = create_database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        await run_migrations(db)
        other = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        other.execute("INSERT INTO users (name, admin, created_at) VALUES ('other', 0, 0)")

        def add(conn: Any) -> None:
            conn.execute(insert(users).values(name="mine", admin=False, created_at=1.0))

        write = asyncio.create_task(db.write(add))
        ticks = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.3:
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks > 5  # the loop kept running while the writer thread waited
        assert not write.done()
        # readers are not blocked by the writer (WAL), and do not see uncommitted rows
        names = await db.read(lambda c: [r[0] for r in c.execute(select(users.c.name))])
        assert names == []
        other.execute("COMMIT")
        await asyncio.wait_for(write, 5)
        names = await db.read(lambda c: sorted(r[0] for r in c.execute(select(users.c.name))))
        assert names == ["mine", "other"]
        other.close()
    finally:
        await db.close()


async def test_failed_write_rolls_back(tmp_path: Path) -> None:
    db = create_database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        await run_migrations(db)

        def add_then_fail(conn: Any) -> None:
            conn.execute(insert(users).values(name="ghost", admin=False, created_at=1.0))
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await db.write(add_then_fail)
        assert await db.read(lambda c: c.execute(select(users.c.name)).all()) == []
        assert await db.read_heavy(lambda c: c.execute(select(users.c.name)).all()) == []
    finally:
        await db.close()
    with pytest.raises(RuntimeError):
        await db.read(lambda c: None)


@pytest.mark.parametrize(
    "url", ["mysql://x/y", "sqlite+aiosqlite:///:memory:", "sqlite://", "not a url at all://"]
)
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        create_database(url)
