"""Alembic environment and revisions of the mags schema (run by ``mags.core.migrate``)."""
