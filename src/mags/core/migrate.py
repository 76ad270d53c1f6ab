"""Run the Alembic migrations programmatically (``upgrade head``) on a :class:`Database`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mags.core.db import Database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    """An Alembic config pointing at our packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def run_migrations(db: Database, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` inside one write transaction."""
    cfg = alembic_config()

    def _upgrade(sync_conn: Any) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    await db.write(_upgrade)


async def current_revision(db: Database) -> str | None:
    """The revision the database is at (None when never migrated)."""

    def _current(sync_conn: Any) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    return await db.read(_current)
