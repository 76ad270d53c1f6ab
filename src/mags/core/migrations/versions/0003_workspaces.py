"""workspaces, files (issues 4 and 5).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_user_workspace", "jobs", ["user_id", "workspace_id"])
    op.create_table(
        "workspaces",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("disk_gb", sa.Integer(), nullable=False),
        sa.Column("base_id", sa.Integer()),
        sa.Column("layers", sa.JSON(), nullable=False),
        sa.Column("head_snapshot_id", sa.String(128)),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("last_used_at", sa.Double()),
        sa.Column("last_synced_at", sa.Double()),
        sa.Column("expires_at", sa.Double()),
        sa.Column("gc_due_at", sa.Double()),
        sa.Column("last_gc_at", sa.Double()),
        sa.Column("deleting_at", sa.Double()),
        sa.PrimaryKeyConstraint("id", name="pk_workspaces"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_workspaces_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["base_id"], ["workspaces.id"], name="fk_workspaces_base_id_workspaces"),
        sa.UniqueConstraint("key", name="uq_workspaces_key"),
        sa.UniqueConstraint("user_id", "name", name="uq_workspaces_user_id_name"),
    )
    op.create_index("ix_workspaces_base_id", "workspaces", ["base_id"])
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_files_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_files_user_id", "files", ["user_id"])
    op.create_index("ix_files_expires_at", "files", ["expires_at"])


def downgrade() -> None:
    op.drop_table("files")
    op.drop_table("workspaces")
    op.drop_index("ix_jobs_user_workspace", table_name="jobs")
