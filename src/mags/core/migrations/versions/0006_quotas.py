"""per-user quota overrides (security: disk, workspaces, sandboxes).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ("quota_disk_gb", "quota_workspaces", "quota_sandboxes")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("users", sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:  # SQLite drops columns by copying the table
        for name in reversed(COLUMNS):
            batch.drop_column(name)
