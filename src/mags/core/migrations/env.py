"""Alembic environment: runs on the connection handed over by ``mags.core.migrate``."""

from __future__ import annotations

from alembic import context

from mags.core.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable from the alembic CLI without our wrapper
    raise RuntimeError("run migrations through mags.core.migrate.run_migrations()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode recreates tables when needed
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
